package integration

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

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
	// kine starts compacting once a client watches, as the apiserver always does
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go func() {
		for range cli.Watch(wctx, "/registry/", clientv3.WithPrefix()) {
		}
	}()
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
	// 6 rounds: the file may grow while compaction catches up and SQLite's
	// free pages settle, then it must level off. Uncompacted, each round
	// adds ~6 MiB (3000 revisions of 2 KiB), so rounds 4 to 6 would add
	// ~18 MiB to round 3's size; compacted they add a fraction of one round
	// (seen: +1.8 MiB in total, so 30% of round 3's size is the bound; the
	// earlier 20% over rounds 4 and 5 failed once by 1% on a busy machine).
	var sizes []int64
	for range 6 {
		sizes = append(sizes, round())
	}
	t.Logf("db+wal size after each 3000 writes: %v bytes", sizes)
	first, third := sizes[2], sizes[5]
	if third > first*13/10 {
		t.Fatalf("SQLite file keeps growing: %v bytes", sizes)
	}
	if third > 12<<20 {
		t.Fatalf("SQLite file is %d bytes: old revisions are not compacted", third)
	}
}
