package app

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// Two clusters as `docker inspect` shows them: a compose project (named by
// compose's label) and a testcluster (named by ours), plus a container
// without our labels that must be ignored.
const inspectFixture = `[
 {"Id": "c1", "Name": "/kubesplit-datastore-1",
  "Config": {"Image": "kubesplit/datastore:v0.1.0", "User": "65532:65532",
   "Cmd": ["--data-dir", "/var/lib/kubesplit", "--backend", "etcd", "--listen-address=0.0.0.0:2379"],
   "Labels": {"com.docker.compose.project": "kubesplit", "io.kubesplit.role": "datastore"}},
  "State": {"Running": true}},
 {"Id": "c2", "Name": "/kubesplit-apiserver-1",
  "Config": {"Image": "kubesplit/apiserver:v0.1.0", "Labels": {"com.docker.compose.project": "kubesplit", "io.kubesplit.role": "apiserver"}},
  "State": {"Running": true},
  "NetworkSettings": {"Ports": {"6443/tcp": [{"HostIp": "127.0.0.1", "HostPort": "16443"}], "6080/tcp": null}}},
 {"Id": "t1", "Name": "/kubesplit-abc-node-1",
  "Config": {"Image": "kubesplit/node:v0.1.0", "Labels": {"io.kubesplit.cluster": "abc", "io.kubesplit.role": "node", "com.docker.compose.project": "ignored"}},
  "State": {"Running": false},
  "NetworkSettings": {"Ports": {"6443/tcp": [{"HostIp": "0.0.0.0", "HostPort": "1234"}]}}},
 {"Id": "x", "Name": "/other", "Config": {"Labels": {"com.docker.compose.project": "kubesplit"}}, "State": {"Running": true}}
]`

func TestParseClusters(t *testing.T) {
	all, err := parseClusters([]byte(inspectFixture))
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all["kubesplit"] == nil || all["abc"] == nil {
		t.Fatalf("clusters %v, want kubesplit and abc", all)
	}
	ks := all["kubesplit"]
	if len(ks.Members) != 2 {
		t.Fatalf("kubesplit members %+v, want the datastore and apiserver (not the unlabelled container)", ks.Members)
	}
	ds, err := ks.one("datastore")
	if err != nil {
		t.Fatal(err)
	}
	if ds.flag("backend") != "etcd" || ds.flag("listen-address") != "0.0.0.0:2379" || ds.flag("missing") != "" {
		t.Errorf("flags of %v read wrong", ds.Cmd)
	}
	if p := ks.role("apiserver")[0].Ports["6443/tcp"]; p != "127.0.0.1:16443" {
		t.Errorf("published 6443 = %q", p)
	}
	node := all["abc"].Members[0]
	if node.Role != "node" || node.Running || node.Ports["6443/tcp"] != "127.0.0.1:1234" {
		t.Errorf("testcluster node read as %+v", node)
	}
	if _, err := all["abc"].one("datastore"); err == nil || !strings.Contains(err.Error(), "no datastore") {
		t.Errorf("one() of a missing role: %v", err)
	}
}

func TestPickCluster(t *testing.T) {
	all, _ := parseClusters([]byte(inspectFixture))
	if _, err := pickCluster(all, ""); err == nil || !strings.Contains(err.Error(), "abc, kubesplit") || !strings.Contains(err.Error(), "--cluster") {
		t.Errorf("two clusters and no name: %v, want both names and the flag", err)
	}
	if c, err := pickCluster(all, "abc"); err != nil || c.Name != "abc" {
		t.Errorf("named: %v %v", c, err)
	}
	if _, err := pickCluster(all, "nope"); err == nil || !strings.Contains(err.Error(), "abc, kubesplit") {
		t.Errorf("unknown name: %v", err)
	}
	delete(all, "abc")
	if c, err := pickCluster(all, ""); err != nil || c.Name != "kubesplit" {
		t.Errorf("the only cluster: %v %v", c, err)
	}
	if _, err := pickCluster(nil, ""); err == nil || !strings.Contains(err.Error(), "make up") {
		t.Errorf("no cluster: %v", err)
	}
}

func TestArchiveName(t *testing.T) {
	if got := archiveName("registry.local:5000/team/app:v1"); got != "registry.local_5000_team_app_v1.tar" {
		t.Errorf("archiveName = %s", got)
	}
	long := "example/" + strings.Repeat("a", 300) + ":v1"
	a, b := archiveName(long), archiveName(long+"x")
	if len(a) > 110 || a == b {
		t.Errorf("long names: %s and %s, want short and distinct", a, b)
	}
}

func TestSnapshotName(t *testing.T) {
	for _, ok := range []string{"before.db", "snapshot-20261203T120000Z.db"} {
		if err := snapshotName(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "../x", "a/b", ".hidden"} {
		if err := snapshotName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if got := loopback("0.0.0.0:12379", "2379"); got != "127.0.0.1:12379" {
		t.Errorf("loopback = %s", got)
	}
	if got := loopback("", "2379"); got != "127.0.0.1:2379" {
		t.Errorf("loopback of nothing = %s", got)
	}
	if !listed("NAME  SIZE  CREATED\nbefore.db  10  x\n", "before.db") || listed("NAME\nbefore.db.old 1 x\n", "before.db") {
		t.Error("listed() reads the list wrong")
	}
}

// TestEveryCommandHasExamples: --help of every command that does something
// shows how to call it.
func TestEveryCommandHasExamples(t *testing.T) {
	root := newRoot()
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Runnable() && c.Name() != "help" && c.Name() != "version" && c.Parent() != nil && c.Parent().Name() != "completion" &&
			c.Example == "" && c.Parent().Example == "" {
			t.Errorf("kubesplit %s has no examples in its --help", c.CommandPath())
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
}
