package integration

import (
	"context"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/kubesplit/kubesplit/e2e/hostcluster"
	"github.com/kubesplit/kubesplit/pkg/localcluster"
)

// TestSnapshotRoundTrip saves a snapshot, writes more, restores, and finds
// exactly the state of the snapshot.
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
			if _, err := cli.Put(ctx, "/registry/test/after", "2"); err != nil {
				t.Fatal(err)
			}
			// restore refuses while the datastore runs
			if out, err := exec.Command(ds, "snapshot", "restore", "--data-dir", dd, "--backend", backend, file).CombinedOutput(); err == nil {
				t.Fatalf("restore succeeded under a running datastore: %s", out)
			}
			if err := c.Proc(localcluster.Datastore).Stop(10 * time.Second); err != nil {
				t.Fatal(err)
			}
			run(t, ds, "snapshot", "restore", "--data-dir", dd, "--backend", backend,
				"--etcd-advertise-peer-url", "https://127.0.0.1:"+strconv.Itoa(c.Spec.Ports.DatastorePeer), file)
			c.Restart(localcluster.Datastore)

			cli2, err := c.DatastoreClient(c.AdminDatastoreTLS())
			if err != nil {
				t.Fatal(err)
			}
			defer cli2.Close()
			before, err := cli2.Get(ctx, "/registry/test/before")
			if err != nil || len(before.Kvs) != 1 || string(before.Kvs[0].Value) != "1" {
				t.Fatalf("key written before the snapshot: %v %v", before, err)
			}
			after, err := cli2.Get(ctx, "/registry/test/after")
			if err != nil || len(after.Kvs) != 0 {
				t.Fatalf("key written after the snapshot is present after restore: %v %v", after, err)
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
