package ociarchive

import (
	"archive/tar"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

func platformImage(t *testing.T, arch string) v1.Image {
	t.Helper()
	img, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// extract unpacks the archive and returns its directory.
func extract(t *testing.T, archive string) string {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return dir
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, hdr.Name)
		if hdr.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, _ := io.ReadAll(tr)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// normalized is a reference as containerd names images: with the default
// registry and path spelled out.
func normalized(t *testing.T, ref string) string {
	t.Helper()
	n, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		t.Fatal(err)
	}
	if n.String() == ref {
		t.Fatalf("%s was not expanded", ref)
	}
	return n.String()
}

func TestArchiveIsAnOCILayoutAndADockerArchive(t *testing.T) {
	t.Parallel()
	amd, arm := platformImage(t, "amd64"), platformImage(t, "arm64")
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	single := platformImage(t, "amd64")

	file := filepath.Join(t.TempDir(), "images.tar")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	w := New(f)
	if err := w.AddIndex(idx, "kubesplit/app:v1", "kubesplit/app:v1-extra"); err != nil {
		t.Fatal(err)
	}
	if err := w.AddImage(single, "kubesplit/pause:v1"); err != nil {
		t.Fatal(err)
	}
	if err := w.AddDocker(amd, "kubesplit/app:v1"); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	dir := extract(t, file)

	// the OCI side: a valid layout whose index.json names every entry
	lp, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	top, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ name, tag string }{
		{normalized(t, "kubesplit/app:v1"), "v1"}, {normalized(t, "kubesplit/app:v1-extra"), "v1-extra"}, {normalized(t, "kubesplit/pause:v1"), "v1"}}
	if len(im.Manifests) != len(want) {
		t.Fatalf("index.json has %d entries, want %d", len(im.Manifests), len(want))
	}
	for i, w := range want {
		d := im.Manifests[i]
		if d.Annotations[AnnotationImageName] != w.name || d.Annotations["org.opencontainers.image.ref.name"] != w.tag {
			t.Errorf("entry %d annotations %v, want %s / %s", i, d.Annotations, w.name, w.tag)
		}
	}
	got, err := top.ImageIndex(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(got); err != nil {
		t.Errorf("multi-platform index: %v", err)
	}
	if im.Manifests[2].Platform == nil || im.Manifests[2].Platform.Architecture != "amd64" {
		t.Errorf("single image entry has platform %v", im.Manifests[2].Platform)
	}

	// the docker side: manifest.json points at files that exist
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m []dockerManifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 || len(m[0].RepoTags) != 1 || m[0].RepoTags[0] != "kubesplit/app:v1" || len(m[0].Layers) != 2 {
		t.Fatalf("manifest.json: %+v", m)
	}
	for _, p := range append([]string{m[0].Config}, m[0].Layers...) {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Errorf("manifest.json refers to %s: %v", p, err)
		}
	}
}

func TestArchiveRejectsUntaggedReferences(t *testing.T) {
	t.Parallel()
	w := New(io.Discard)
	if err := w.AddImage(platformImage(t, "amd64"), "kubesplit/app"); err == nil {
		t.Error("a reference without a tag was accepted")
	}
}
