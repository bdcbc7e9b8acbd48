package snapshot

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubesplit/kubesplit/pkg/layout"
)

func TestMarkRestoredRecordsTheSnapshotsDigest(t *testing.T) {
	d := layout.Dir(t.TempDir())
	if err := os.MkdirAll(d.DatastoreData(), 0o700); err != nil {
		t.Fatal(err)
	}
	if got := RestoredFrom(d); got != "" {
		t.Fatalf("never restored: RestoredFrom = %q, want empty", got)
	}
	a, b := filepath.Join(t.TempDir(), "a.db"), filepath.Join(t.TempDir(), "b.db")
	os.WriteFile(a, []byte("one state"), 0o600)
	os.WriteFile(b, []byte("another state"), 0o600)
	da, err := Digest(a)
	if err != nil || !strings.HasPrefix(da, "sha256:") {
		t.Fatalf("Digest = %q, %v", da, err)
	}
	db, _ := Digest(b)
	if da == db {
		t.Fatal("two different snapshots have the same digest")
	}
	if err := MarkRestored(d, da); err != nil {
		t.Fatal(err)
	}
	if got := RestoredFrom(d); got != da {
		t.Fatalf("RestoredFrom = %q, want %q", got, da)
	}
	if err := MarkRestored(d, db); err != nil {
		t.Fatal(err)
	}
	if got := RestoredFrom(d); got != db {
		t.Fatalf("after a second restore RestoredFrom = %q, want %q", got, db)
	}
	if _, err := Digest(filepath.Join(t.TempDir(), "missing.db")); err == nil {
		t.Fatal("Digest of a missing file: no error")
	}
}
