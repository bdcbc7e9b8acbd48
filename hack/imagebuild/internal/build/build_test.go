package build

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/klauspost/compress/gzip"

	"github.com/kubesplit/kubesplit/hack/imagebuild/internal/catalog"
)

var (
	amd64 = v1.Platform{OS: "linux", Architecture: "amd64"}
	arm64 = v1.Platform{OS: "linux", Architecture: "arm64"}
)

// fakeBins writes stand-in binaries for every platform and returns a config
// that builds from them.
func fakeBins(t *testing.T, images []string, bins ...string) Config {
	t.Helper()
	dir := t.TempDir()
	for _, p := range []v1.Platform{amd64, arm64} {
		for _, b := range bins {
			f := filepath.Join(dir, "bin", p.OS+"-"+p.Architecture, b)
			if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f, []byte(b+" for "+p.Architecture), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	ca := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	c.BinDir, c.CACerts, c.Out = filepath.Join(dir, "bin"), ca, filepath.Join(dir, "dist", "images.tar")
	c.Platforms, c.Images = []v1.Platform{amd64, arm64}, images
	c.Version, c.Kubernetes = "v0.1.0", "v1.36.3"
	return c
}

// members reads a tar stream into name → content.
func members(t *testing.T, r io.Reader) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return m
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		m[hdr.Name] = b
	}
}

func TestBuildTwoPlatforms(t *testing.T) {
	t.Parallel()
	c := fakeBins(t, []string{"apiserver", "pause"}, "apiserver", "pause", "kubesplit-probe")
	var out bytes.Buffer
	if err := Run(context.Background(), c, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "kubesplit/apiserver") || !strings.Contains(out.String(), "linux/arm64") {
		t.Errorf("no size table in the output:\n%s", out.String())
	}
	f, err := os.Open(c.Out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := members(t, f)

	var index v1.IndexManifest
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != 4 { // two images, two tags each
		t.Fatalf("index.json has %d entries, want 4", len(index.Manifests))
	}
	if got := index.Manifests[1].Annotations["org.opencontainers.image.ref.name"]; got != "v0.1.0-k8s1.36.3" {
		t.Errorf("second tag is %q", got)
	}
	var apiserver v1.IndexManifest
	if err := json.Unmarshal(files["blobs/sha256/"+index.Manifests[0].Digest.Hex], &apiserver); err != nil {
		t.Fatal(err)
	}
	if len(apiserver.Manifests) != 2 || apiserver.Manifests[0].Platform.Architecture != "amd64" || apiserver.Manifests[1].Platform.Architecture != "arm64" {
		t.Fatalf("apiserver index: %+v", apiserver.Manifests)
	}

	// the arm64 image carries the arm64 binary, runs as nonroot, and
	// /var/lib/kubesplit belongs to nonroot
	var m v1.Manifest
	if err := json.Unmarshal(files["blobs/sha256/"+apiserver.Manifests[1].Digest.Hex], &m); err != nil {
		t.Fatal(err)
	}
	var cf v1.ConfigFile
	if err := json.Unmarshal(files["blobs/sha256/"+m.Config.Digest.Hex], &cf); err != nil {
		t.Fatal(err)
	}
	if cf.Architecture != "arm64" || cf.Config.User != "65532:65532" || cf.Config.Entrypoint[0] != "/usr/local/bin/apiserver" ||
		cf.Config.Labels["io.kubesplit.image"] != "apiserver" || len(cf.RootFS.DiffIDs) != 3 {
		t.Errorf("arm64 apiserver config: %+v", cf)
	}
	fs := map[string]*tar.Header{}
	var bin []byte
	for _, l := range m.Layers {
		zr, err := gzip.NewReader(bytes.NewReader(files["blobs/sha256/"+l.Digest.Hex]))
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(zr)
		for {
			hdr, err := tr.Next()
			if err != nil {
				break
			}
			fs[hdr.Name] = hdr
			if hdr.Name == "usr/local/bin/apiserver" {
				bin, _ = io.ReadAll(tr)
			}
		}
	}
	if string(bin) != "apiserver for arm64" {
		t.Errorf("arm64 image holds %q", bin)
	}
	if h := fs["var/lib/kubesplit/"]; h == nil || h.Uid != 65532 || h.Mode != 0o700 {
		t.Errorf("/var/lib/kubesplit: %+v", h)
	}
	if fs["etc/ssl/certs/ca-certificates.crt"] == nil || fs["etc/passwd"] == nil || fs["usr/local/bin/kubesplit-probe"] == nil {
		t.Error("CA certificates, /etc/passwd or kubesplit-probe missing")
	}

	// docker load reads manifest.json: the host platform only, plain tags
	var docker []struct{ RepoTags []string }
	if err := json.Unmarshal(files["manifest.json"], &docker); err != nil {
		t.Fatal(err)
	}
	if len(docker) != 2 || docker[0].RepoTags[0] != "kubesplit/apiserver:v0.1.0" {
		t.Errorf("manifest.json: %+v", docker)
	}
}

// TestBuildIsReproducible: images are built concurrently, and the same
// inputs still give the same archive, byte for byte.
func TestBuildIsReproducible(t *testing.T) {
	t.Parallel()
	c := fakeBins(t, []string{"apiserver", "scheduler", "controllers", "pause"}, "apiserver", "scheduler", "controllers", "pause", "kubesplit-probe")
	var archives [][]byte
	for i := range 2 {
		c.Out = filepath.Join(t.TempDir(), fmt.Sprintf("images-%d.tar", i))
		if err := Run(context.Background(), c, io.Discard); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(c.Out)
		if err != nil {
			t.Fatal(err)
		}
		archives = append(archives, b)
	}
	if !bytes.Equal(archives[0], archives[1]) {
		t.Fatal("two builds of the same inputs differ")
	}
}

func TestBuildNamesMissingBinaries(t *testing.T) {
	t.Parallel()
	c := fakeBins(t, []string{"apiserver", "coredns"}, "apiserver", "kubesplit-probe")
	err := Run(context.Background(), c, io.Discard)
	if err == nil {
		t.Fatal("built without the coredns binary")
	}
	for _, want := range []string{filepath.Join("linux-amd64", "coredns") + " (image coredns)", filepath.Join("linux-arm64", "coredns"), "hack/build.sh"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := os.Stat(c.Out); err == nil {
		t.Error("an archive was written")
	}
}

func TestBuildNamesAMissingNodeBase(t *testing.T) {
	t.Parallel()
	c := fakeBins(t, []string{"node"}, "pause", "coredns", "kubesplit-node", "kubesplit-node-supervisor",
		"containerd", "containerd-shim-runc-v2", "ctr", "kubesplit", "cni/bridge")
	c.NodeBase = filepath.Join(t.TempDir(), "node-base-{arch}.tar")
	err := Run(context.Background(), c, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "node-base-arm64.tar is missing: make it with hack/node-base.sh --arch arm64") {
		t.Errorf("error %v does not name the missing arm64 node base", err)
	}
}

func TestBuildNodeImage(t *testing.T) {
	t.Parallel()
	c := fakeBins(t, []string{"node"}, "pause", "coredns", "metrics-server", "local-path-provisioner", "servicelb", "traefik", "kubesplit-node", "kubesplit-node-supervisor",
		"containerd", "containerd-shim-runc-v2", "ctr", "kubesplit", "cni/bridge", "cni/host-local")
	c.Platforms = []v1.Platform{Host()}
	fakeBusyboxBase(t, &c)
	dir := t.TempDir()
	c.NodeBase = filepath.Join(dir, "base-{arch}.tar")
	var rootfs bytes.Buffer
	tw := tar.NewWriter(&rootfs)
	for _, h := range []*tar.Header{{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755}, {Name: "./bin/", Typeflag: tar.TypeDir, Mode: 0o755}} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	if err := os.WriteFile(filepath.Join(dir, "base-"+Host().Architecture+".tar"), rootfs.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Run(context.Background(), c, io.Discard); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(c.Out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := members(t, f)
	var docker []struct {
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &docker); err != nil {
		t.Fatal(err)
	}
	node := docker[len(docker)-1]
	if node.RepoTags[0] != "kubesplit/node:v0.1.0" || len(node.Layers) != 3 {
		t.Fatalf("node image: %+v", node)
	}
	// layers: the Debian base, the binaries, the preloaded images
	contents := make([]map[string][]byte, 3)
	for i, l := range node.Layers {
		zr, err := gzip.NewReader(bytes.NewReader(files[l]))
		if err != nil {
			t.Fatal(err)
		}
		contents[i] = members(t, zr)
	}
	if _, ok := contents[0]["bin/"]; !ok {
		t.Errorf("base layer: %v", contents[0])
	}
	if string(contents[1]["usr/local/bin/cni/host-local"]) != "cni/host-local for "+Host().Architecture {
		t.Errorf("CNI plugins missing from the binaries layer")
	}
	pause := contents[2]["usr/share/kubesplit/images/pause.tar"]
	for _, img := range []string{"coredns", "metrics-server", "local-path-provisioner", "local-path-helper", "servicelb", "traefik"} {
		if contents[2]["usr/share/kubesplit/images/"+img+".tar"] == nil {
			t.Errorf("preload layer lacks %s: %v", img, contents[2])
		}
	}
	if pause == nil {
		t.Fatalf("preload layer: %v", contents[2])
	}
	// what the node agent's `ctr images import` reads: the pause image by its full name
	var index v1.IndexManifest
	if err := json.Unmarshal(members(t, bytes.NewReader(pause))["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	name := index.Manifests[0].Annotations["io.containerd.image.name"]
	if len(index.Manifests) != 2 || !strings.HasSuffix(name, "/kubesplit/pause:v0.1.0") || name == "kubesplit/pause:v0.1.0" {
		t.Errorf("pause archive index: %+v", index.Manifests)
	}
}

func TestDockerTagsOfAForeignPlatform(t *testing.T) {
	t.Parallel()
	c := fakeBins(t, []string{"pause"}, "pause")
	foreign := arm64
	if Host().Architecture == "arm64" {
		foreign = amd64
	}
	c.Platforms = []v1.Platform{foreign}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	got := c.dockerTags("pause", c.Docker[0])
	want := "kubesplit/pause:v0.1.0-" + foreign.Architecture
	if len(got) != 2 || got[0] != want {
		t.Errorf("docker tags %v, want %s first", got, want)
	}
}

func TestPushAndPullBack(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	prefix := strings.TrimPrefix(srv.URL, "http://") + "/kubesplit"

	c := fakeBins(t, []string{"apiserver"}, "apiserver", "kubesplit-probe")
	c.Push = prefix
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := Run(context.Background(), c, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, tag := range c.Tags() {
		ref, err := name.NewTag(prefix + "/apiserver:" + tag)
		if err != nil {
			t.Fatal(err)
		}
		idx, err := remote.Index(ref)
		if err != nil {
			t.Fatalf("pulling %s: %v", ref, err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		var archs []string
		for _, d := range im.Manifests {
			archs = append(archs, d.Platform.Architecture)
			img, err := idx.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cf.Architecture != d.Platform.Architecture {
				t.Errorf("%s: index says %s, config says %s", ref, d.Platform.Architecture, cf.Architecture)
			}
		}
		if strings.Join(archs, ",") != "amd64,arm64" {
			t.Errorf("%s has platforms %v", ref, archs)
		}
	}
}

// fakePostgresBase writes a stand-in postgres base for the host's
// architecture and points c at it.
func fakePostgresBase(t *testing.T, c *Config) {
	t.Helper()
	dir := t.TempDir()
	c.PostgresBase = filepath.Join(dir, "postgres-base-{arch}.tar")
	var rootfs bytes.Buffer
	tw := tar.NewWriter(&rootfs)
	passwd := []byte("root:x:0:0:root:/root:/bin/bash\npostgres:x:999:999::/var/lib/postgresql:/bin/bash\n")
	for _, h := range []*tar.Header{
		{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./etc/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(passwd))},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write(passwd)
		}
	}
	tw.Close()
	if err := os.WriteFile(filepath.Join(dir, "postgres-base-"+Host().Architecture+".tar"), rootfs.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestBuildPostgresImage(t *testing.T) {
	t.Parallel()
	// no binaries at all: the postgres image needs nothing from bin/
	c := fakeBins(t, []string{"postgres"})
	c.BinDir = filepath.Join(t.TempDir(), "no-bin")
	c.CACerts = filepath.Join(t.TempDir(), "no-ca.crt")
	fakePostgresBase(t, &c)
	var out bytes.Buffer
	if err := Run(context.Background(), c, &out); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(c.Out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := members(t, f)

	// both platforms asked for; the image is built for the host's only
	var index v1.IndexManifest
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(files["blobs/sha256/"+index.Manifests[0].Digest.Hex], &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 1 || !idx.Manifests[0].Platform.Equals(Host()) {
		t.Fatalf("postgres index: %+v", idx.Manifests)
	}
	var m v1.Manifest
	if err := json.Unmarshal(files["blobs/sha256/"+idx.Manifests[0].Digest.Hex], &m); err != nil {
		t.Fatal(err)
	}
	var cf v1.ConfigFile
	if err := json.Unmarshal(files["blobs/sha256/"+m.Config.Digest.Hex], &cf); err != nil {
		t.Fatal(err)
	}
	cfg := cf.Config
	entry := "/usr/local/bin/kubesplit-postgres-entrypoint"
	if cfg.User != "999:999" || len(cfg.Entrypoint) != 1 || cfg.Entrypoint[0] != entry || len(cfg.Cmd) != 0 {
		t.Errorf("user %q, entrypoint %v, cmd %v", cfg.User, cfg.Entrypoint, cfg.Cmd)
	}
	if _, ok := cfg.ExposedPorts["5432/tcp"]; !ok || len(cfg.ExposedPorts) != 1 {
		t.Errorf("exposed ports %v", cfg.ExposedPorts)
	}
	if _, ok := cfg.Volumes["/var/lib/postgresql/data"]; !ok {
		t.Errorf("volumes %v", cfg.Volumes)
	}
	if cfg.StopSignal != "SIGINT" {
		t.Errorf("stop signal %q", cfg.StopSignal)
	}
	if cfg.Labels["io.kubesplit.image"] != "postgres" || cfg.Labels["org.opencontainers.image.title"] != "kubesplit/postgres" ||
		cfg.Labels["org.opencontainers.image.version"] != "v0.1.0" {
		t.Errorf("labels %v", cfg.Labels)
	}
	if len(cfg.Env) != 2 || cfg.Env[0] != "PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" ||
		cfg.Env[1] != "PGDATA=/var/lib/postgresql/data" {
		t.Errorf("env %v", cfg.Env)
	}
	// layers: the postgres base, the entrypoint
	if len(m.Layers) != 2 {
		t.Fatalf("%d layers, want 2", len(m.Layers))
	}
	var contents []map[string][]byte
	var script *tar.Header
	for _, l := range m.Layers {
		zr, err := gzip.NewReader(bytes.NewReader(files["blobs/sha256/"+l.Digest.Hex]))
		if err != nil {
			t.Fatal(err)
		}
		c := map[string][]byte{}
		tr := tar.NewReader(zr)
		for {
			hdr, err := tr.Next()
			if err != nil {
				break
			}
			if hdr.Name == strings.TrimPrefix(entry, "/") {
				script = hdr
			}
			c[hdr.Name], _ = io.ReadAll(tr)
		}
		contents = append(contents, c)
	}
	if !strings.Contains(string(contents[0]["etc/passwd"]), "postgres:x:999:999") {
		t.Errorf("base layer: %v", contents[0])
	}
	if script == nil || script.Mode&0o777 != 0o755 || script.Uid != 0 ||
		!strings.HasPrefix(string(contents[1][script.Name]), "#!/bin/sh\n") {
		t.Errorf("entrypoint in the image: %+v", script)
	}
	if !strings.Contains(out.String(), "kubesplit/postgres") {
		t.Errorf("no size for the postgres image:\n%s", out.String())
	}
}

func TestPostgresImageIsHostOnly(t *testing.T) {
	t.Parallel()
	foreign := arm64
	if Host().Architecture == "arm64" {
		foreign = amd64
	}
	// asked for by name on a foreign platform: an error that says why
	c := fakeBins(t, []string{"postgres"})
	c.Platforms = []v1.Platform{foreign}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "image postgres is built for the host's platform only") {
		t.Errorf("validate: %v", err)
	}
	// every image for a foreign platform (as `make images-all` minus the
	// host): postgres is left out, and its base is not needed
	c = fakeBins(t, nil, "pause")
	c.Platforms = []v1.Platform{foreign}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	pg, _ := catalog.Select([]string{"postgres"})
	if got := c.platformsOf(pg[0]); len(got) != 0 {
		t.Errorf("postgres would be built for %v", got)
	}
	c.Images = []string{"pause", "postgres"}
	c.Platforms = []v1.Platform{amd64, arm64}
	if got := c.platformsOf(pg[0]); len(got) != 1 || !got[0].Equals(Host()) {
		t.Errorf("postgres would be built for %v, want the host's platform", got)
	}
}

func TestBuildNamesAMissingPostgresBase(t *testing.T) {
	t.Parallel()
	c := fakeBins(t, []string{"postgres"})
	c.PostgresBase = filepath.Join(t.TempDir(), "postgres-base-{arch}.tar")
	err := Run(context.Background(), c, io.Discard)
	want := "postgres-base-" + Host().Architecture + ".tar is missing: make it with hack/node-base.sh --flavour postgres --arch " + Host().Architecture
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v does not name the missing postgres base", err)
	}
	c.PostgresBase = ""
	if err := Run(context.Background(), c, io.Discard); err == nil || !strings.Contains(err.Error(), "needs --postgres-base") {
		t.Errorf("error %v does not ask for --postgres-base", err)
	}
}
