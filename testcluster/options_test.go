package testcluster

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func apply(t *testing.T, opts ...Option) (options, error) {
	t.Helper()
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return o, err
		}
	}
	return o, nil
}

func TestOptionDefaultsAndImages(t *testing.T) {
	t.Setenv("KUBESPLIT_TAG", "")
	o, err := apply(t)
	if err != nil {
		t.Fatal(err)
	}
	if o.nodes != 1 || o.backend != BackendSQLite || o.timeout != 3*time.Minute || !o.waitDNS {
		t.Fatalf("defaults: %+v", o)
	}
	if got := o.image(APIServer); got != "kubesplit/apiserver:"+DefaultTag {
		t.Fatalf("image = %s", got)
	}
	t.Setenv("KUBESPLIT_TAG", "v9.9.9")
	o, err = apply(t, WithImage(Scheduler, "example/sched:1"), WithNodes(3), WithBackend(BackendEtcd))
	if err != nil {
		t.Fatal(err)
	}
	if o.image(APIServer) != "kubesplit/apiserver:v9.9.9" || o.image(Scheduler) != "example/sched:1" || o.nodes != 3 || o.backend != BackendEtcd {
		t.Fatalf("got %+v", o)
	}
	o, _ = apply(t, WithTag("v1.2.3"))
	if o.image(Node) != "kubesplit/node:v1.2.3" {
		t.Fatalf("WithTag: %s", o.image(Node))
	}
}

func TestOptionErrorsNameTheFix(t *testing.T) {
	for _, tc := range []struct {
		opt  Option
		want string
	}{
		{WithNodes(-1), "want 0 to 50"},
		{WithBackend("mysql"), `use "sqlite", "etcd" or "postgres"`},
		{WithTag("a/b:c"), "want a bare tag"},
		{WithTag(""), "want a bare tag"},
		{WithImage("kubelet", "x:y"), "want one of datastore, apiserver"},
		{WithImage(APIServer, ""), "empty image reference"},
		{WithTimeout(0), "positive"},
		{WithRoleArgs("kubelet", "--v=2"), "unknown role"},
		{WithManifests("/does/not/exist.yaml"), "no such file"},
		{WithLogf(nil), "nil"},
	} {
		_, err := apply(t, tc.opt)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error containing %q, got %v", tc.want, err)
		}
	}
}

func TestWithManifests(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("app.yaml", "# comment\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n  namespace: a\n")
	write("notes.txt", "not a manifest")
	o, err := apply(t, WithManifests(dir))
	if err != nil {
		t.Fatal(err)
	}
	if len(o.manifests) != 1 || o.manifests[0].name != "app.yaml" {
		t.Fatalf("manifests from a directory: %+v", o.manifests)
	}
	if _, err := apply(t, WithManifests(good, good)); err == nil || !strings.Contains(err.Error(), "two files named app.yaml") {
		t.Fatalf("duplicate name: %v", err)
	}
	bad := write("bad.yaml", "apiVersion: v1\nkind: [\n")
	if _, err := apply(t, WithManifests(bad)); err == nil || !strings.Contains(err.Error(), "bad.yaml: document 1") {
		t.Fatalf("bad YAML: %v", err)
	}
	nokind := write("nokind.yaml", "apiVersion: v1\nmetadata: {name: x}\n")
	if _, err := apply(t, WithManifests(nokind)); err == nil || !strings.Contains(err.Error(), "apiVersion and kind are required") {
		t.Fatalf("no kind: %v", err)
	}
	empty := write("empty.yaml", "# nothing\n---\n")
	if _, err := apply(t, WithManifests(empty)); err == nil || !strings.Contains(err.Error(), "no object") {
		t.Fatalf("empty: %v", err)
	}
	emptyDir := t.TempDir()
	if _, err := apply(t, WithManifests(emptyDir)); err == nil || !strings.Contains(err.Error(), "no .yaml") {
		t.Fatalf("empty dir: %v", err)
	}
}

// addonName must name a file as the controllers' addon deployer does
// (services/controllers/internal/addons.AddonName), or Run waits for an
// inventory ConfigMap that never comes.
func TestAddonNameMatchesTheDeployer(t *testing.T) {
	for in, want := range map[string]string{
		"app.yaml":          "app",
		"My_App.v2.yaml":    "my-app-v2",
		"--x--.yml":         "x",
		"a  b.json":         "a-b",
		"coredns.yaml":      "coredns",
		"UPPER-case_1.yaml": "upper-case-1",
		"a--b.yaml":         "a--b",
	} {
		if got := addonName(in); got != want {
			t.Errorf("addonName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestOwnerLiveness(t *testing.T) {
	host, _ := os.Hostname()
	self := ownerOnce()
	if ownerGone(self) {
		t.Fatalf("this process (%s) counted as gone", self)
	}
	if !strings.HasPrefix(self, host+"/"+strconv.Itoa(os.Getpid())+"/") {
		t.Fatalf("owner label %q", self)
	}
	// same PID, another start time: a reused PID is not the owner
	if !ownerGone(host + "/" + strconv.Itoa(os.Getpid()) + "/1") {
		t.Fatal("a reused PID counted as the owner")
	}
	if !ownerGone(host + "/999999999/5") {
		t.Fatal("a missing process counted as alive")
	}
	// another host's clusters, or labels we do not understand, are never reaped
	for _, o := range []string{"other-host/1/1", "", "garbage", host + "/x/1"} {
		if ownerGone(o) {
			t.Errorf("ownerGone(%q) = true", o)
		}
	}
}

func TestPickSubnet(t *testing.T) {
	for range 200 {
		p := pickSubnet()
		a := p.Addr().As4()
		if p.Bits() != 24 || a[0] != 10 || a[1] < 200 || a[1] >= 240 || a[3] != 0 {
			t.Fatalf("pickSubnet() = %s", p)
		}
	}
}

func TestPartitionRulesAreSymmetric(t *testing.T) {
	c := &Cluster{}
	c.gatewayIP = pickSubnet().Addr().Next().Next()
	ins, del := c.partitionRules("-I"), c.partitionRules("-D")
	if len(ins) != 2 || len(del) != 2 {
		t.Fatal("want one rule each way")
	}
	for i := range ins {
		if strings.Join(ins[i][3:], " ") != strings.Join(del[i][3:], " ") {
			t.Errorf("Heal would not delete what Partition inserted: %v vs %v", ins[i], del[i])
		}
		if !strings.Contains(strings.Join(ins[i], " "), c.gatewayIP.String()) {
			t.Errorf("rule %v does not name the gateway", ins[i])
		}
	}
}
