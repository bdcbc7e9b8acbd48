// Package layer builds reproducible gzip image layers, from a list of
// entries or from a root-filesystem tarball, into files, and serves them as
// go-containerregistry layers. Every layer is compressed once: its digest,
// diff ID and both sizes are recorded while it is written.
package layer

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
)

// Entry is one file system object of a layer.
type Entry struct {
	Path     string      // absolute path in the image
	Mode     fs.FileMode // permission bits, plus fs.ModeDir for a directory
	UID, GID int
	Source   string    // regular file: copy this file from disk...
	Data     []byte    // ...or write these bytes
	ModTime  time.Time // default: the Writer's Epoch
}

// Dir is a directory entry.
func Dir(p string, perm fs.FileMode, uid, gid int) Entry {
	return Entry{Path: p, Mode: fs.ModeDir | perm, UID: uid, GID: gid}
}

// File is a regular file copied from src, owned by root.
func File(p, src string, perm fs.FileMode) Entry { return Entry{Path: p, Mode: perm, Source: src} }

// Bytes is a regular file with the given content, owned by root.
func Bytes(p string, data []byte, perm fs.FileMode) Entry {
	return Entry{Path: p, Mode: perm, Data: data}
}

// Layer is a gzip layer stored in a file. It implements v1.Layer.
type Layer struct {
	file         string
	digest       v1.Hash
	diffID       v1.Hash
	size         int64
	uncompressed int64
}

var _ v1.Layer = (*Layer)(nil)

func (l *Layer) Digest() (v1.Hash, error)             { return l.digest, nil }
func (l *Layer) DiffID() (v1.Hash, error)             { return l.diffID, nil }
func (l *Layer) Size() (int64, error)                 { return l.size, nil }
func (l *Layer) MediaType() (types.MediaType, error)  { return types.OCILayer, nil }
func (l *Layer) Compressed() (io.ReadCloser, error)   { return os.Open(l.file) }
func (l *Layer) Uncompressed() (io.ReadCloser, error) { return gunzip(l.file) }

// Sizes are the layer's compressed (gzip) and uncompressed (tar) sizes.
func (l *Layer) Sizes() (compressed, uncompressed int64) { return l.size, l.uncompressed }

// Writer writes layers into a directory with fixed timestamps.
type Writer struct {
	Dir   string
	Epoch time.Time // modification time of every entry written from a list
}

// FromEntries writes a layer holding entries and the parent directories
// they need (root, 0755), in path order.
func (w *Writer) FromEntries(name string, entries []Entry) (*Layer, error) {
	all, err := withParents(entries)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", name, err)
	}
	return w.write(name, func(tw *tar.Writer) error {
		for _, e := range all {
			if err := w.writeEntry(tw, e); err != nil {
				return err
			}
		}
		return nil
	})
}

// FromTarball re-packs a root-filesystem tarball (as `tar -C root -c .`
// writes it) as a layer: names lose their "./" prefix and the root entry is
// dropped; contents, owners, modes and times are kept.
func (w *Writer) FromTarball(name, tarball string) (*Layer, error) {
	f, err := os.Open(tarball)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", name, err)
	}
	defer f.Close()
	return w.write(name, func(tw *tar.Writer) error {
		tr := tar.NewReader(f)
		for {
			hdr, err := tr.Next()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("reading %s: %w", tarball, err)
			}
			hdr.Name = relName(hdr.Name, hdr.Typeflag == tar.TypeDir)
			if hdr.Name == "" {
				continue
			}
			if hdr.Typeflag == tar.TypeLink {
				hdr.Linkname = relName(hdr.Linkname, false)
			}
			hdr.AccessTime, hdr.ChangeTime, hdr.Format = time.Time{}, time.Time{}, tar.FormatUnknown
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			if _, err := io.Copy(tw, tr); err != nil {
				return err
			}
		}
	})
}

// relName is a tar member name without "./" or "/" in front ("" for the root).
func relName(n string, dir bool) string {
	n = strings.TrimPrefix(path.Clean("/"+n), "/")
	if n != "" && dir {
		n += "/"
	}
	return n
}

func (w *Writer) writeEntry(tw *tar.Writer, e Entry) error {
	hdr := &tar.Header{
		Name: relName(e.Path, e.Mode.IsDir()), Mode: int64(e.Mode.Perm()), Uid: e.UID, Gid: e.GID,
		ModTime: w.Epoch, Format: tar.FormatPAX,
	}
	if !e.ModTime.IsZero() {
		hdr.ModTime = e.ModTime
	}
	if e.Mode&fs.ModeSticky != 0 {
		hdr.Mode |= 0o1000
	}
	if e.Mode.IsDir() {
		hdr.Typeflag = tar.TypeDir
		return tw.WriteHeader(hdr)
	}
	hdr.Typeflag = tar.TypeReg
	if e.Source == "" {
		hdr.Size = int64(len(e.Data))
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(e.Data)
		return err
	}
	f, err := os.Open(e.Source)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", e.Source)
	}
	hdr.Size = st.Size()
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	n, err := io.Copy(tw, f)
	if err == nil && n != hdr.Size {
		err = fmt.Errorf("%s changed size while being read", e.Source)
	}
	return err
}

// withParents sorts entries by path and adds the directories above them
// that are not listed (root-owned, 0755).
func withParents(entries []Entry) ([]Entry, error) {
	byPath := map[string]Entry{}
	for _, e := range entries {
		if !path.IsAbs(e.Path) {
			return nil, fmt.Errorf("entry path %q is not absolute", e.Path)
		}
		p := path.Clean(e.Path)
		if _, dup := byPath[p]; dup {
			return nil, fmt.Errorf("%s is listed twice", p)
		}
		e.Path = p
		byPath[p] = e
	}
	for p := range byPath {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := byPath[d]; !ok {
				byPath[d] = Dir(d, 0o755, 0, 0)
			}
		}
	}
	all := make([]Entry, 0, len(byPath))
	for _, e := range byPath {
		all = append(all, e)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Path < all[j].Path })
	return all, nil
}

// write runs fill against a tar stream that is counted and hashed
// uncompressed, then gzip'd into DIR/NAME.tar.gz and hashed again.
func (w *Writer) write(name string, fill func(*tar.Writer) error) (l *Layer, err error) {
	if err := os.MkdirAll(w.Dir, 0o755); err != nil {
		return nil, err
	}
	file := filepath.Join(w.Dir, name+".tar.gz")
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			_ = os.Remove(file)
			err = fmt.Errorf("layer %s: %w", name, err)
		}
	}()
	zsum, zcount := sha256.New(), &counter{}
	gz, err := gzip.NewWriterLevel(io.MultiWriter(f, zsum, zcount), gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	sum, count := sha256.New(), &counter{}
	tw := tar.NewWriter(io.MultiWriter(gz, sum, count))
	if err := fill(tw); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return &Layer{file: file, digest: hashOf(zsum), diffID: hashOf(sum), size: zcount.n, uncompressed: count.n}, nil
}

func hashOf(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
}

type counter struct{ n int64 }

func (c *counter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

type gzipFile struct {
	*gzip.Reader
	f *os.File
}

func (g gzipFile) Close() error { g.Reader.Close(); return g.f.Close() }

func gunzip(file string) (io.ReadCloser, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return gzipFile{zr, f}, nil
}
