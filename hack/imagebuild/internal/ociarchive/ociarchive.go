// Package ociarchive writes images into one tar that is at the same time an
// OCI image layout (oci-layout, index.json, blobs/sha256/...), which
// containerd imports (`ctr images import`, every platform with
// --all-platforms), and a docker-archive (manifest.json), which `docker load`
// reads on engines that do not understand OCI layouts (Docker 20.10).
// manifest.json points into blobs/, so no blob is stored twice.
package ociarchive

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// AnnotationImageName is where containerd keeps an image's full, normalised
// name when it exports or imports one; org.opencontainers.image.ref.name
// holds the tag.
const AnnotationImageName = "io.containerd.image.name"

// Writer writes the archive. Add images and indexes, then Close.
type Writer struct {
	tw     *tar.Writer
	blobs  map[v1.Hash]bool
	index  []v1.Descriptor
	docker []dockerManifest
}

// dockerManifest is one entry of a docker-archive's manifest.json.
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

var epoch = time.Unix(0, 0)

// New starts an archive on w.
func New(w io.Writer) *Writer {
	return &Writer{tw: tar.NewWriter(w), blobs: map[v1.Hash]bool{}}
}

// AddIndex stores a (multi-platform) index and everything it refers to,
// and lists it in index.json once per reference (such as
// kubesplit/apiserver:v0.1.0).
func (w *Writer) AddIndex(idx v1.ImageIndex, refs ...string) error {
	if err := w.writeIndex(idx); err != nil {
		return err
	}
	desc, err := describe(idx)
	if err != nil {
		return err
	}
	return w.list(desc, refs)
}

// AddImage stores a single-platform image and lists it in index.json once
// per reference.
func (w *Writer) AddImage(img v1.Image, refs ...string) error {
	if err := w.writeImage(img); err != nil {
		return err
	}
	desc, err := describe(img)
	if err != nil {
		return err
	}
	if desc.Platform, err = platformOf(img); err != nil {
		return err
	}
	return w.list(desc, refs)
}

// AddDocker lists img in manifest.json with the given repository tags, so
// that `docker load` loads it; its blobs are stored if they are not yet.
func (w *Writer) AddDocker(img v1.Image, repoTags ...string) error {
	if err := w.writeImage(img); err != nil {
		return err
	}
	cfg, err := img.ConfigName()
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	m := dockerManifest{Config: blobPath(cfg), RepoTags: repoTags}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		m.Layers = append(m.Layers, blobPath(d))
	}
	w.docker = append(w.docker, m)
	return nil
}

// Close writes oci-layout, index.json and (if any image was added with
// AddDocker) manifest.json, and ends the tar stream.
func (w *Writer) Close() error {
	layout, _ := json.Marshal(map[string]string{"imageLayoutVersion": "1.0.0"})
	if err := w.file("oci-layout", layout); err != nil {
		return err
	}
	idx, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: w.index})
	if err != nil {
		return err
	}
	if err := w.file("index.json", idx); err != nil {
		return err
	}
	if len(w.docker) > 0 {
		m, err := json.Marshal(w.docker)
		if err != nil {
			return err
		}
		if err := w.file("manifest.json", m); err != nil {
			return err
		}
	}
	return w.tw.Close()
}

func (w *Writer) list(desc v1.Descriptor, refs []string) error {
	for _, ref := range refs {
		named, err := reference.ParseNormalizedNamed(ref)
		if err != nil {
			return fmt.Errorf("image reference %q: %w", ref, err)
		}
		tagged, ok := named.(reference.Tagged)
		if !ok {
			return fmt.Errorf("image reference %q has no tag", ref)
		}
		d := desc
		d.Annotations = map[string]string{AnnotationImageName: named.String(), "org.opencontainers.image.ref.name": tagged.Tag()}
		w.index = append(w.index, d)
	}
	return nil
}

func (w *Writer) writeIndex(idx v1.ImageIndex) error {
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	for _, d := range im.Manifests {
		switch {
		case d.MediaType.IsIndex():
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return err
			}
			if err := w.writeIndex(child); err != nil {
				return err
			}
		case d.MediaType.IsImage():
			img, err := idx.Image(d.Digest)
			if err != nil {
				return err
			}
			if err := w.writeImage(img); err != nil {
				return err
			}
		default:
			return fmt.Errorf("index entry %s has media type %s, neither image nor index", d.Digest, d.MediaType)
		}
	}
	raw, err := idx.RawManifest()
	if err != nil {
		return err
	}
	return w.rawBlob(raw)
}

func (w *Writer) writeImage(img v1.Image) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		size, err := l.Size()
		if err != nil {
			return err
		}
		if err := w.blob(d, size, l.Compressed); err != nil {
			return err
		}
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	if err := w.rawBlob(cfg); err != nil {
		return err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return err
	}
	return w.rawBlob(raw)
}

func (w *Writer) rawBlob(b []byte) error {
	h, size, err := v1.SHA256(bytes.NewReader(b))
	if err != nil {
		return err
	}
	return w.blob(h, size, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
}

// blob writes blobs/sha256/HEX once, checking that the content has the
// digest and size it was announced with.
func (w *Writer) blob(h v1.Hash, size int64, open func() (io.ReadCloser, error)) error {
	if w.blobs[h] {
		return nil
	}
	if len(w.blobs) == 0 {
		for _, d := range []string{"blobs/", "blobs/sha256/"} {
			if err := w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: epoch}); err != nil {
				return err
			}
		}
	}
	r, err := open()
	if err != nil {
		return err
	}
	defer r.Close()
	if err := w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: blobPath(h), Mode: 0o644, Size: size, ModTime: epoch}); err != nil {
		return err
	}
	sum, n, err := v1.SHA256(io.TeeReader(r, w.tw))
	if err != nil {
		return fmt.Errorf("writing blob %s: %w", h, err)
	}
	if n != size || sum != h {
		return fmt.Errorf("blob %s: read %d bytes with digest %s, expected %d bytes", h, n, sum, size)
	}
	w.blobs[h] = true
	return nil
}

func (w *Writer) file(name string, b []byte) error {
	if err := w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: epoch}); err != nil {
		return err
	}
	_, err := w.tw.Write(b)
	return err
}

func blobPath(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

type describable interface {
	MediaType() (types.MediaType, error)
	Size() (int64, error)
	Digest() (v1.Hash, error)
}

func describe(d describable) (v1.Descriptor, error) {
	mt, err := d.MediaType()
	if err != nil {
		return v1.Descriptor{}, err
	}
	size, err := d.Size()
	if err != nil {
		return v1.Descriptor{}, err
	}
	h, err := d.Digest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	return v1.Descriptor{MediaType: mt, Size: size, Digest: h}, nil
}

func platformOf(img v1.Image) (*v1.Platform, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	return cf.Platform(), nil
}
