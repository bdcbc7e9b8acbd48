package snapshot

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	clientsnapshot "go.etcd.io/etcd/client/v3/snapshot"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// testEtcd starts a one-member etcd on loopback (plain HTTP: what is under
// test is the key space, not TLS) and returns a client.
func testEtcd(t *testing.T) *clientv3.Client {
	t.Helper()
	free := func() url.URL {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return url.URL{Scheme: "http", Host: l.Addr().String()}
	}
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	cfg.Logger, cfg.LogOutputs = "zap", []string{"/dev/null"}
	client, peer := free(), free()
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	cfg.ListenMetricsUrls = nil
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("etcd did not start")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client.String()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func keys(t *testing.T, cli *clientv3.Client, prefix string) map[string]string {
	t.Helper()
	resp, err := cli.Get(context.Background(), prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = string(kv.Value)
	}
	return out
}

func TestRestoreEtcdOnline(t *testing.T) {
	ctx := context.Background()
	cli := testEtcd(t)
	put := func(k, v string, opts ...clientv3.OpOption) {
		t.Helper()
		if _, err := cli.Put(ctx, k, v, opts...); err != nil {
			t.Fatal(err)
		}
	}
	del := func(k string) {
		t.Helper()
		if _, err := cli.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	// history before the snapshot: an overwritten key, a deleted one
	put("/registry/configmaps/default/kept", "v0")
	put("/registry/configmaps/default/kept", "v1")
	put("/registry/configmaps/default/gone-before", "x")
	del("/registry/configmaps/default/gone-before")
	put("/registry/configmaps/default/changed-after", "snap")
	put("/registry/configmaps/default/deleted-after", "snap")
	// more than one transaction's worth, and one value near the size limit
	for i := range 250 {
		put(fmt.Sprintf("/registry/pods/default/p-%03d", i), fmt.Sprintf("pod %d", i))
	}
	big := string(make([]byte, 900<<10))
	put("/registry/secrets/default/big", big)
	lease, err := cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	put("/registry/events/default/e-snap", "event", clientv3.WithLease(lease.ID))
	put("/outside/prefix", "snap")

	file := filepath.Join(t.TempDir(), "snap.db")
	if _, err := clientsnapshot.SaveWithVersion(ctx, zap.NewNop(), clientv3.Config{Endpoints: cli.Endpoints(), Logger: zap.NewNop()}, file); err != nil {
		t.Fatal(err)
	}
	want := keys(t, cli, "/registry/")
	delete(want, "/registry/events/default/e-snap")

	// after the snapshot: changes, deletes, additions, a leased key, a key
	// outside the prefix
	put("/registry/configmaps/default/changed-after", "later")
	del("/registry/configmaps/default/deleted-after")
	put("/registry/configmaps/default/created-after", "later")
	for i := range 120 {
		del(fmt.Sprintf("/registry/pods/default/p-%03d", i))
	}
	for i := range 130 {
		put(fmt.Sprintf("/registry/pods/default/q-%03d", i), "later")
	}
	put("/registry/secrets/default/big", "small now")
	put("/registry/events/default/e-later", "event", clientv3.WithLease(lease.ID))
	del("/registry/events/default/e-snap")
	put("/outside/prefix", "later")

	snap, err := ReadEtcdSnapshot(file, DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := snap["/registry/configmaps/default/gone-before"]; ok {
		t.Error("a key deleted before the snapshot was read from it")
	}
	if string(snap["/registry/configmaps/default/kept"].Value) != "v1" {
		t.Errorf("kept: %q, want its last value", snap["/registry/configmaps/default/kept"].Value)
	}
	if _, ok := snap["/outside/prefix"]; ok {
		t.Error("a key outside the prefix was read")
	}

	// a watcher from before the restore sees it as ordinary events
	before, err := cli.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watch := cli.Watch(wctx, "/registry/configmaps/", clientv3.WithPrefix(), clientv3.WithRev(before.Header.Revision+1))

	res, err := RestoreEtcdOnline(ctx, cli, snap, DefaultPrefix, "sha256:test")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restore: %v", res)
	got := keys(t, cli, "/registry/")
	delete(got, "/registry/events/default/e-later")
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %.20q after the restore, want %.20q", k, got[k], v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: still there after the restore", k)
		}
	}
	if k := keys(t, cli, "/registry/events/"); len(k) != 1 || k["/registry/events/default/e-later"] == "" {
		t.Errorf("leased keys: %v, want the running cluster's left alone", k)
	}
	if v := keys(t, cli, "/outside/")["/outside/prefix"]; v != "later" {
		t.Errorf("a key outside the prefix was changed to %q", v)
	}
	// changed-after, big, the 120 pods written; deleted-after written back;
	// created-after and 130 pods deleted
	if res.Put != 1+1+1+120 || res.Deleted != 1+130 || res.Leased != 2 || res.Revision <= before.Header.Revision {
		t.Errorf("result %+v", res)
	}
	if d, err := EtcdRestoredFrom(ctx, cli); err != nil || d != "sha256:test" {
		t.Errorf("recorded %q (%v)", d, err)
	}

	events := map[string]mvccpb.Event_EventType{}
	timeout := time.After(10 * time.Second)
	for len(events) < 3 {
		select {
		case w := <-watch:
			for _, ev := range w.Events {
				events[string(ev.Kv.Key)] = ev.Type
			}
		case <-timeout:
			t.Fatalf("the watcher saw %v", events)
		}
	}
	for k, typ := range map[string]mvccpb.Event_EventType{
		"/registry/configmaps/default/changed-after": mvccpb.PUT,
		"/registry/configmaps/default/deleted-after": mvccpb.PUT,
		"/registry/configmaps/default/created-after": mvccpb.DELETE,
	} {
		if events[k] != typ {
			t.Errorf("watcher: %s %v, want %v", k, events[k], typ)
		}
	}

	// again: nothing left to do
	ops, again, err := PlanEtcdOnline(ctx, cli, snap, DefaultPrefix)
	if err != nil || len(ops) != 0 || again.Unchanged != len(want) {
		t.Errorf("a second plan: %d operations, %+v (%v)", len(ops), again, err)
	}
}

func TestReadEtcdSnapshotRefusesOtherFiles(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not.db")
	if err := copyFile("online.go", file); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadEtcdSnapshot(file, DefaultPrefix); err == nil {
		t.Error("a Go file read as an etcd snapshot")
	}
}
