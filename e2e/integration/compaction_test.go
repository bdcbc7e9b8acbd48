package integration

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubesplit/kubesplit/e2e/hostcluster"
	"github.com/kubesplit/kubesplit/pkg/localcluster"
)

// TestSQLiteCompactionBoundsFile rewrites the same keys many times: with
// compaction the SQLite file stops growing once old revisions are dropped.
func TestSQLiteCompactionBoundsFile(t *testing.T) {
	needLong(t)
	c := hostcluster.Start(t, hostcluster.Options{Roles: []string{localcluster.Datastore},
		Extra: map[string][]string{localcluster.Datastore: {"--compact-interval", "1s"}}})
	cli, err := c.DatastoreClient(c.AdminDatastoreTLS())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	value := strings.Repeat("v", 2048)
	size := func() int64 {
		var total int64
		for _, suffix := range []string{"", "-wal"} {
			if st, err := os.Stat(c.Spec.DataDir.SQLiteFile() + suffix); err == nil {
				total += st.Size()
			}
		}
		return total
	}
	round := func() int64 {
		for i := range 3000 {
			if _, err := cli.Put(ctx, "/registry/test/k"+strconv.Itoa(i%10), value); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(4 * time.Second) // a few compaction intervals
		return size()
	}
	first := round()
	second := round()
	third := round()
	t.Logf("file size after 3000, 6000, 9000 writes: %d, %d, %d bytes", first, second, third)
	// 9000 revisions of 2 KiB would be ~18 MiB uncompacted.
	if third > first*3/2 {
		t.Fatalf("SQLite file keeps growing: %d -> %d -> %d bytes", first, second, third)
	}
	if third > 12<<20 {
		t.Fatalf("SQLite file is %d bytes: old revisions are not compacted", third)
	}
}
