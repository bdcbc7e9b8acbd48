package layer

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

type member struct {
	mode     int64
	uid, gid int
	body     string
	link     string
}

func readLayer(t *testing.T, l *Layer) (names []string, m map[string]member) {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	m = map[string]member{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return names, m
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		names = append(names, hdr.Name)
		m[hdr.Name] = member{hdr.Mode, hdr.Uid, hdr.Gid, string(b), hdr.Linkname}
	}
}

func TestFromEntries(t *testing.T) {
	t.Parallel()
	src := filepath.Join(t.TempDir(), "bin")
	if err := os.WriteFile(src, []byte("binary"), 0o600); err != nil {
		t.Fatal(err)
	}
	entries := []Entry{
		File("/usr/local/bin/app", src, 0o755),
		Bytes("/etc/passwd", []byte("root:x:0:0::/:/sbin/nologin\n"), 0o644),
		Dir("/var/lib/app", 0o700, 65532, 65532),
	}
	w := &Writer{Dir: t.TempDir(), Epoch: time.Unix(0, 0)}
	l, err := w.FromEntries("a", entries)
	if err != nil {
		t.Fatal(err)
	}
	names, m := readLayer(t, l)
	want := []string{"etc/", "etc/passwd", "usr/", "usr/local/", "usr/local/bin/", "usr/local/bin/app", "var/", "var/lib/", "var/lib/app/"}
	if len(names) != len(want) {
		t.Fatalf("members %v, want %v", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("members %v, want %v", names, want)
		}
	}
	if got := m["usr/local/bin/app"]; got.mode != 0o755 || got.body != "binary" || got.uid != 0 {
		t.Errorf("app: %+v", got)
	}
	if got := m["var/lib/app/"]; got.mode != 0o700 || got.uid != 65532 || got.gid != 65532 {
		t.Errorf("var/lib/app: %+v", got)
	}
	if got := m["usr/"]; got.mode != 0o755 || got.uid != 0 {
		t.Errorf("implicit parent usr/: %+v", got)
	}

	// the same entries give the same bytes: digests are reproducible
	again, err := w.FromEntries("b", entries)
	if err != nil {
		t.Fatal(err)
	}
	if l.digest != again.digest || l.diffID != again.diffID {
		t.Errorf("two builds differ: %s/%s and %s/%s", l.digest, l.diffID, again.digest, again.diffID)
	}
	checkHashes(t, l)
}

// checkHashes recomputes what write recorded.
func checkHashes(t *testing.T, l *Layer) {
	t.Helper()
	for _, c := range []struct {
		open func() (io.ReadCloser, error)
		hash v1.Hash
		size int64
	}{{l.Compressed, l.digest, l.size}, {l.Uncompressed, l.diffID, l.uncompressed}} {
		rc, err := c.open()
		if err != nil {
			t.Fatal(err)
		}
		h, n, err := v1.SHA256(rc)
		rc.Close()
		if err != nil || h != c.hash || n != c.size {
			t.Errorf("stream has %s (%d bytes), recorded %s (%d bytes), err %v", h, n, c.hash, c.size, err)
		}
	}
}

func TestFromEntriesRejectsDuplicatesAndRelativePaths(t *testing.T) {
	t.Parallel()
	w := &Writer{Dir: t.TempDir()}
	if _, err := w.FromEntries("dup", []Entry{Bytes("/a", nil, 0o644), Bytes("/a/", nil, 0o644)}); err == nil {
		t.Error("a path listed twice was accepted")
	}
	if _, err := w.FromEntries("rel", []Entry{Bytes("a", nil, 0o644)}); err == nil {
		t.Error("a relative path was accepted")
	}
}

func TestFromTarballStripsDotSlash(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs.tar")
	f, err := os.Create(rootfs)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	for _, h := range []*tar.Header{
		{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./bin/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./bin/sh", Typeflag: tar.TypeReg, Mode: 0o755, Size: 2},
		{Name: "./bin/bash", Typeflag: tar.TypeLink, Linkname: "./bin/sh"},
		{Name: "./bin/rbash", Typeflag: tar.TypeSymlink, Linkname: "bash"},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			_, _ = tw.Write([]byte("sh"))
		}
	}
	tw.Close()
	f.Close()

	l, err := (&Writer{Dir: dir}).FromTarball("base", rootfs)
	if err != nil {
		t.Fatal(err)
	}
	names, m := readLayer(t, l)
	if len(names) != 4 || names[0] != "bin/" || names[1] != "bin/sh" {
		t.Fatalf("members %v", names)
	}
	if m["bin/bash"].link != "bin/sh" || m["bin/rbash"].link != "bash" || m["bin/sh"].body != "sh" {
		t.Errorf("links or content changed: %+v", m)
	}
	checkHashes(t, l)
}
