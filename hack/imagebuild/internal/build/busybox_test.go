package build

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
)

// fakeBusyboxBase writes a stand-in busybox base (what hack/node-base.sh
// --flavour busybox makes: /bin/busybox and /bin/sh linking to it) for
// every platform of c and points c at it.
func fakeBusyboxBase(t *testing.T, c *Config) {
	t.Helper()
	dir := t.TempDir()
	c.BusyboxBase = filepath.Join(dir, "busybox-base-{arch}.tar")
	for _, p := range c.Platforms {
		var rootfs bytes.Buffer
		tw := tar.NewWriter(&rootfs)
		bin := []byte("busybox for " + p.Architecture)
		for _, h := range []*tar.Header{
			{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755},
			{Name: "./bin/", Typeflag: tar.TypeDir, Mode: 0o755},
			{Name: "./bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin))},
			{Name: "./bin/sh", Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777},
		} {
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
			if h.Typeflag == tar.TypeReg {
				tw.Write(bin)
			}
		}
		tw.Close()
		if err := os.WriteFile(filepath.Join(dir, "busybox-base-"+p.Architecture+".tar"), rootfs.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// The local-path helper image is its busybox base alone, for every
// platform: a shell at /bin/sh, run as root.
func TestBuildLocalPathHelperImage(t *testing.T) {
	t.Parallel()
	c := fakeBins(t, []string{"local-path-helper"}) // nothing from bin/
	fakeBusyboxBase(t, &c)
	if err := Run(context.Background(), c, io.Discard); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(c.Out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := members(t, f)
	var index, helper v1.IndexManifest
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(files["blobs/sha256/"+index.Manifests[0].Digest.Hex], &helper); err != nil {
		t.Fatal(err)
	}
	if len(helper.Manifests) != 2 {
		t.Fatalf("local-path-helper index: %+v", helper.Manifests)
	}
	for _, d := range helper.Manifests {
		var m v1.Manifest
		var cf v1.ConfigFile
		if err := json.Unmarshal(files["blobs/sha256/"+d.Digest.Hex], &m); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(files["blobs/sha256/"+m.Config.Digest.Hex], &cf); err != nil {
			t.Fatal(err)
		}
		if cf.Config.User != "" || strings.Join(cf.Config.Entrypoint, " ") != "/bin/sh" || len(m.Layers) != 1 {
			t.Errorf("%s: user %q, entrypoint %v, %d layers", d.Platform.Architecture, cf.Config.User, cf.Config.Entrypoint, len(m.Layers))
			continue
		}
		zr, err := gzip.NewReader(bytes.NewReader(files["blobs/sha256/"+m.Layers[0].Digest.Hex]))
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(zr)
		got := map[string]string{}
		for {
			hdr, err := tr.Next()
			if err != nil {
				break
			}
			b, _ := io.ReadAll(tr)
			got[hdr.Name] = string(b) + hdr.Linkname
		}
		if got["bin/busybox"] != "busybox for "+d.Platform.Architecture || got["bin/sh"] != "busybox" {
			t.Errorf("%s layer: %v", d.Platform.Architecture, got)
		}
	}
}

func TestBuildNamesAMissingBusyboxBase(t *testing.T) {
	t.Parallel()
	c := fakeBins(t, []string{"local-path-helper"})
	if err := Run(context.Background(), c, io.Discard); err == nil || !strings.Contains(err.Error(), "needs --busybox-base") {
		t.Errorf("error %v does not ask for --busybox-base", err)
	}
	c.BusyboxBase = filepath.Join(t.TempDir(), "busybox-base-{arch}.tar")
	want := "busybox base " + strings.ReplaceAll(c.BusyboxBase, "{arch}", "arm64") + " is missing: make it with hack/node-base.sh --flavour busybox --arch arm64"
	if err := Run(context.Background(), c, io.Discard); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v does not name the missing arm64 busybox base", err)
	}
}
