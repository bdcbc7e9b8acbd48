package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubesplit/kubesplit/e2e/hostcluster"
	"github.com/kubesplit/kubesplit/pkg/bootstrap"
	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/localcluster"
	"github.com/kubesplit/kubesplit/pkg/procs"
)

// TestEtcdThreeMembers grows an embedded-etcd datastore to three members with
// --etcd-join, checks replication, and keeps writing after losing one member.
func TestEtcdThreeMembers(t *testing.T) {
	needLong(t)
	bin, err := hostcluster.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	first := layout.Dir(t.TempDir())
	if _, err := bootstrap.Run(bootstrap.Options{DataDir: first}); err != nil {
		t.Fatal(err)
	}
	type member struct {
		dir   layout.Dir
		ports localcluster.Ports
		proc  *procs.Process
	}
	var members []*member
	for i := range 3 {
		dir := first
		if i > 0 {
			dir = layout.Dir(t.TempDir())
			copyDir(t, first.PKI(), dir.PKI()) // the members share one datastore CA
		}
		ports, err := localcluster.FreePorts()
		if err != nil {
			t.Fatal(err)
		}
		args := []string{"--data-dir", string(dir), "--backend", "etcd", "--etcd-name", "m" + strconv.Itoa(i),
			"--listen-address", "127.0.0.1:" + strconv.Itoa(ports.Datastore),
			"--etcd-peer-address", "127.0.0.1:" + strconv.Itoa(ports.DatastorePeer),
			"--health-address", "127.0.0.1:" + strconv.Itoa(ports.DatastoreHealth)}
		if i > 0 {
			args = append(args, "--etcd-join", clientURL(members[0].ports))
		}
		out := &hostcluster.SyncBuffer{}
		p := &procs.Process{Name: "m" + strconv.Itoa(i), Path: filepath.Join(bin, "datastore"), Args: args, Output: out,
			Ready: procs.HTTPProbe(fmt.Sprintf("http://127.0.0.1:%d/readyz", ports.DatastoreHealth), "")}
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = p.Stop(5 * time.Second)
			if t.Failed() {
				t.Logf("---- %s ----\n%s", p.Name, out.String())
			}
		})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err = p.WaitReady(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		members = append(members, &member{dir, ports, p})
	}
	client := func(m *member) *clientv3.Client {
		d := m.dir
		c, err := hostcluster.EtcdClient(clientURL(m.ports),
			transport.TLSInfo{CertFile: d.DatastoreClient().Cert, KeyFile: d.DatastoreClient().Key, TrustedCAFile: d.DatastoreCA().Cert})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c0, c1, c2 := client(members[0]), client(members[1]), client(members[2])
	list, err := c2.MemberList(ctx)
	if err != nil || len(list.Members) != 3 {
		t.Fatalf("member list: %v, %v", list, err)
	}
	if _, err := c0.Put(ctx, "/registry/test/k", "v1"); err != nil {
		t.Fatal(err)
	}
	if got, err := c2.Get(ctx, "/registry/test/k"); err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "v1" {
		t.Fatalf("write on m0 not read on m2: %v %v", got, err)
	}
	if err := members[0].proc.Kill(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "a write with one member down", func(ctx context.Context) (bool, error) {
		_, err := c1.Put(ctx, "/registry/test/k", "v2")
		return err == nil, nil
	})
	if got, err := c2.Get(ctx, "/registry/test/k"); err != nil || string(got.Kvs[0].Value) != "v2" {
		t.Fatalf("after losing m0: %v %v", got, err)
	}
}

func clientURL(p localcluster.Ports) string { return "https://127.0.0.1:" + strconv.Itoa(p.Datastore) }

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.CopyFS(to, os.DirFS(from)); err != nil {
		t.Fatal(err)
	}
}
