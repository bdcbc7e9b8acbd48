package snapshot

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/kubesplit/kubesplit/pkg/layout"
)

func TestPruneKeepsNewestDated(t *testing.T) {
	d := layout.Dir(t.TempDir())
	if err := os.MkdirAll(d.Snapshots(), 0o700); err != nil {
		t.Fatal(err)
	}
	base := time.Now().Add(-time.Hour)
	for i, n := range []string{"snapshot-1.db", "before-upgrade.db", "snapshot-2.db", "snapshot-3.db", "snapshot-4.db"} {
		p := filepath.Join(d.Snapshots(), n)
		if err := os.WriteFile(p, []byte(n), 0o600); err != nil {
			t.Fatal(err)
		}
		mt := base.Add(time.Duration(i) * time.Minute)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := Prune(d, 2)
	if err != nil || !slices.Equal(removed, []string{"snapshot-1.db", "snapshot-2.db"}) {
		t.Fatalf("removed %v (%v), want the two oldest dated snapshots", removed, err)
	}
	left, _ := List(d)
	var names []string
	for _, s := range left {
		names = append(names, s.Name)
	}
	if !slices.Equal(names, []string{"before-upgrade.db", "snapshot-3.db", "snapshot-4.db"}) {
		t.Fatalf("left %v", names)
	}
}
