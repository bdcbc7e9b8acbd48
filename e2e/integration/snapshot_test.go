package integration

import (
	"context"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubesplit/kubesplit/e2e/hostcluster"
	"github.com/kubesplit/kubesplit/pkg/localcluster"
)

// TestSnapshotRoundTrip saves a snapshot, writes more, restores, and finds
// exactly the state of the snapshot, at a revision past every one the
// clients saw before (a watch resumed from one of those reads as compacted,
// so the client lists again instead of waiting for revisions to catch up).
func TestSnapshotRoundTrip(t *testing.T) {
	needLong(t)
	for _, backend := range []string{"sqlite", "etcd"} {
		t.Run(backend, func(t *testing.T) {
			c := hostcluster.Start(t, hostcluster.Options{Backend: backend, Roles: []string{localcluster.Datastore}})
			cli, err := c.DatastoreClient(c.AdminDatastoreTLS())
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if _, err := cli.Put(ctx, "/registry/test/before", "1"); err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(t.TempDir(), "snap.db")
			ds := filepath.Join(c.Spec.BinDir, "datastore")
			dd := string(c.Spec.DataDir)
			endpoint := "https://127.0.0.1:" + strconv.Itoa(c.Spec.Ports.Datastore)
			run(t, ds, "snapshot", "save", "--data-dir", dd, "--backend", backend, "--endpoint", endpoint, file)
			put, err := cli.Put(ctx, "/registry/test/after", "2")
			if err != nil {
				t.Fatal(err)
			}
			seen := put.Header.Revision
			// restore refuses while the datastore runs
			if out, err := exec.Command(ds, "snapshot", "restore", "--data-dir", dd, "--backend", backend, file).CombinedOutput(); err == nil {
				t.Fatalf("restore succeeded under a running datastore: %s", out)
			}
			restore := func(seen int64) *clientv3.Client {
				t.Helper()
				if err := c.Proc(localcluster.Datastore).Stop(10 * time.Second); err != nil {
					t.Fatal(err)
				}
				run(t, ds, "snapshot", "restore", "--data-dir", dd, "--backend", backend,
					"--etcd-advertise-peer-url", "https://127.0.0.1:"+strconv.Itoa(c.Spec.Ports.DatastorePeer), file)
				c.Restart(localcluster.Datastore)
				cli, err := c.DatastoreClient(c.AdminDatastoreTLS())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { cli.Close() })
				before, err := cli.Get(ctx, "/registry/test/before")
				if err != nil || len(before.Kvs) != 1 || string(before.Kvs[0].Value) != "1" {
					t.Fatalf("key written before the snapshot: %v %v", before, err)
				}
				after, err := cli.Get(ctx, "/registry/test/after")
				if err != nil || len(after.Kvs) != 0 {
					t.Fatalf("key written after the snapshot is present after restore: %v %v", after, err)
				}
				if after.Header.Revision <= seen {
					t.Fatalf("revision after restore %d, want past %d (the last one a client saw)", after.Header.Revision, seen)
				}
				wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
				defer wcancel()
				resp, ok := <-cli.Watch(wctx, "/registry/test/", clientv3.WithPrefix(), clientv3.WithRev(seen))
				if !ok || resp.CompactRevision == 0 {
					t.Fatalf("a watch from revision %d after restore: compact revision %d, err %v; want compacted", seen, resp.CompactRevision, resp.Err())
				}
				return cli
			}
			cli2 := restore(seen)
			// the same snapshot again, after writes past the first restore's
			// revision: the revision still moves past everything seen
			put, err = cli2.Put(ctx, "/registry/test/after", "3")
			if err != nil {
				t.Fatal(err)
			}
			cli3 := restore(put.Header.Revision)

			// --once (a pod's init container): the snapshot this state came
			// from is not restored again, so what was written since stays
			if _, err := cli3.Put(ctx, "/registry/test/since", "4"); err != nil {
				t.Fatal(err)
			}
			if err := c.Proc(localcluster.Datastore).Stop(10 * time.Second); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(ds, "snapshot", "restore", "--once", "--data-dir", dd, "--backend", backend,
				"--etcd-advertise-peer-url", "https://127.0.0.1:"+strconv.Itoa(c.Spec.Ports.DatastorePeer), file).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "nothing to do") {
				t.Fatalf("restore --once of the snapshot already restored: %v\n%s", err, out)
			}
			c.Restart(localcluster.Datastore)
			cli4, err := c.DatastoreClient(c.AdminDatastoreTLS())
			if err != nil {
				t.Fatal(err)
			}
			defer cli4.Close()
			if since, err := cli4.Get(ctx, "/registry/test/since"); err != nil || len(since.Kvs) != 1 {
				t.Fatalf("a write after the restore is gone after restore --once of the same snapshot: %v %v", since, err)
			}

			// a bare name goes into the data directory's snapshots/, and list shows it
			run(t, ds, "snapshot", "save", "--data-dir", dd, "--backend", backend, "--endpoint", endpoint, "named.db")
			out, err = exec.Command(ds, "snapshot", "list", "--data-dir", dd).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "named.db") {
				t.Fatalf("snapshot list: %v\n%s", err, out)
			}
		})
	}
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", filepath.Base(name), args, err, out)
	}
	t.Logf("%s", out)
}
