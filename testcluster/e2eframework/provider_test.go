package e2eframework

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kubesplit/kubesplit/testcluster"
	"sigs.k8s.io/e2e-framework/support"
)

// These tests need no Docker: they run with -short.

func ptr[T any](v T) *T { return &v }

func TestParseConfig(t *testing.T) {
	yamlCfg := `
apiVersion: testcluster.kubesplit.io/v1alpha1
kind: Cluster
nodes: 2
backend: etcd
tag: v0.2.0
images:
  scheduler: example/sched:dev
manifests: [a.yaml, /abs/dir]
timeout: 5m
waitDNS: false
nodeArgs: [--max-pods=50]
roleArgs:
  apiserver: [--v=2]
`
	got, err := ParseConfig([]byte(yamlCfg))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{APIVersion: ConfigAPIVersion, Kind: ConfigKind, Nodes: ptr(2), Backend: "etcd", Tag: "v0.2.0",
		Images: map[string]string{"scheduler": "example/sched:dev"}, Manifests: []string{"a.yaml", "/abs/dir"},
		Timeout: "5m", WaitDNS: ptr(false), NodeArgs: []string{"--max-pods=50"},
		RoleArgs: map[string][]string{"apiserver": {"--v=2"}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	// JSON, and nodes: 0 is kept (a control plane alone), not taken for "unset"
	got, err = ParseConfig([]byte(`{"nodes": 0, "backend": "postgres"}`))
	if err != nil || got.Nodes == nil || *got.Nodes != 0 || got.Backend != "postgres" {
		t.Fatalf("JSON: %+v, %v", got, err)
	}
	if got, err := ParseConfig(nil); err != nil || !reflect.DeepEqual(got, Config{}) {
		t.Fatalf("empty file: %+v, %v", got, err)
	}
	for _, tc := range []struct{ in, want string }{
		{"node: 2", `unknown field "node"`},
		{"apiVersion: kind.x-k8s.io/v1alpha4", "want testcluster.kubesplit.io/v1alpha1"},
		{"kind: Config", "want Cluster"},
		{"timeout: 5", "timeout"},
		{"nodes: two", "nodes"},
	} {
		if _, err := ParseConfig([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseConfig(%q) = %v, want an error with %q", tc.in, err, tc.want)
		}
	}
}

func TestLoadConfigResolvesManifestsNextToTheFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(path, []byte("manifests: [m.yaml, /abs/x.yaml]\nnodes: 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{filepath.Join(dir, "m.yaml"), "/abs/x.yaml"}; !reflect.DeepEqual(cfg.Manifests, want) {
		t.Fatalf("manifests %q, want %q", cfg.Manifests, want)
	}
	if _, err := LoadConfig(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Fatal("missing file: no error")
	}
}

func TestParseCreateFlags(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(file, []byte("nodes: 3\nbackend: etcd\nimages: {node: n:1, apiserver: a:1}\nroleArgs: {scheduler: [--v=1]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// flags apply in order: before --config the file wins, after it the flag
	got, err := ParseCreateFlags([]string{"--backend=sqlite", "--config", file, "--nodes", "2",
		"--image", "node=n:2", "--manifests", "x.yaml", "--manifests=y", "--timeout=90s", "--wait-dns=false",
		"--node-arg", "--v=3", "--role-arg", "scheduler=--v=4", "--tag", "v9"})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Nodes: ptr(2), Backend: "etcd", Tag: "v9",
		Images:    map[string]string{"node": "n:2", "apiserver": "a:1"},
		Manifests: []string{"x.yaml", "y"}, Timeout: "90s", WaitDNS: ptr(false), NodeArgs: []string{"--v=3"},
		RoleArgs: map[string][]string{"scheduler": {"--v=1", "--v=4"}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if got, err := ParseCreateFlags([]string{"--wait-dns"}); err != nil || got.WaitDNS == nil || !*got.WaitDNS {
		t.Fatalf("--wait-dns: %+v, %v", got, err)
	}
	if got, err := ParseCreateFlags(nil); err != nil || !reflect.DeepEqual(got, Config{}) {
		t.Fatalf("no args: %+v, %v", got, err)
	}
	for _, args := range [][]string{
		{"--name", "x"},              // a kind flag
		{"extra"},                    // positional
		{"--nodes", "many"},          // not a number
		{"--image", "node"},          // no ref
		{"--role-arg", "--v=2"},      // no role
		{"--timeout", "5"},           // no unit
		{"--config", "/nonexistent"}, // no file
	} {
		_, err := ParseCreateFlags(args)
		if err == nil || !strings.Contains(err.Error(), "kubesplit takes --config") {
			t.Errorf("ParseCreateFlags(%q) = %v, want an error listing the flags", args, err)
		}
	}
}

// runErr applies opts as testcluster.Run does and returns the error of the
// first option that refuses its value: a final invalid option makes sure
// Run stops before it reaches Docker.
func runErr(t *testing.T, opts []testcluster.Option) error {
	t.Helper()
	_, err := testcluster.Run(context.Background(), append(opts, testcluster.WithNodes(-1))...)
	if err == nil {
		t.Fatal("Run with WithNodes(-1) succeeded")
	}
	return err
}

func TestConfigOptionsAreValidTestclusterOptions(t *testing.T) {
	manifest := filepath.Join(t.TempDir(), "cm.yaml")
	if err := os.WriteFile(manifest, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	full := Config{Nodes: ptr(2), Backend: "postgres", Tag: "v0.2.0", Images: map[string]string{"scheduler": "s:1", "node": "n:1"},
		Manifests: []string{manifest}, Timeout: "4m", WaitDNS: ptr(false), NodeArgs: []string{"--v=2"},
		RoleArgs: map[string][]string{"apiserver": {"--v=2"}, "scheduler": {"--v=3"}}}
	opts, err := full.Options()
	if err != nil {
		t.Fatal(err)
	}
	// nodes, backend, tag, 2 images, manifests, timeout, DNS, node args, 2 role args
	if len(opts) != 11 {
		t.Fatalf("%d options, want 11", len(opts))
	}
	if err := runErr(t, opts); !strings.Contains(err.Error(), "WithNodes(-1)") {
		t.Fatalf("a valid config's options were refused: %v", err)
	}
	if opts, _ := (Config{WaitDNS: ptr(true)}).Options(); len(opts) != 0 {
		t.Fatalf("waitDNS: true gave %d options", len(opts))
	}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Backend: "mysql"}, `WithBackend("mysql")`},
		{Config{Tag: "a:b"}, "WithTag"},
		{Config{Nodes: ptr(-2)}, "WithNodes(-2)"},
		{Config{Images: map[string]string{"kubelet": "k:1"}}, `WithImage("kubelet")`},
		{Config{RoleArgs: map[string][]string{"etcd": {"--x"}}}, `WithRoleArgs("etcd")`},
		{Config{Manifests: []string{"/nonexistent.yaml"}}, "WithManifests"},
	} {
		opts, err := tc.cfg.Options()
		if err != nil {
			t.Fatal(err)
		}
		if err := runErr(t, opts); !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: Run error %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestProviderMapping(t *testing.T) {
	var p support.E2EClusterProvider = NewProviderWithOptions(testcluster.WithNodes(1))
	p = p.SetDefaults()
	c := p.(*Cluster)
	if c.Name() != "kubesplit" {
		t.Fatalf("default name %q", c.Name())
	}
	p = p.WithName("e2e").WithVersion("v0.2.0").WithPath("/usr/bin/kind").
		WithOpts(WithArgs("--nodes=3"), WithOptions(testcluster.WithoutDNSWait()))
	if p != support.E2EClusterProvider(c) || c.name != "e2e" || c.version != "v0.2.0" || c.path != "/usr/bin/kind" {
		t.Fatalf("provider %+v", c)
	}
	if !reflect.DeepEqual(c.args, []string{"--nodes=3"}) || len(c.opts) != 2 {
		t.Fatalf("args %q, %d options", c.args, len(c.opts))
	}
	// logf, WithVersion's tag, 2 provider options, --nodes, then Create's --backend
	opts, err := c.options([]string{"--backend", "etcd"})
	if err != nil || len(opts) != 6 {
		t.Fatalf("options: %d, %v", len(opts), err)
	}
	if err := runErr(t, opts); !strings.Contains(err.Error(), "WithNodes(-1)") {
		t.Fatalf("options refused: %v", err)
	}
	// WithVersion becomes the image tag: an invalid one fails Create
	c.WithVersion("not/a:tag")
	opts, _ = c.options(nil)
	if err := runErr(t, opts); !strings.Contains(err.Error(), `WithTag("not/a:tag")`) {
		t.Fatalf("WithVersion: %v", err)
	}
	c.WithVersion("")

	// Create hands the options to Run and wraps its error; the config file
	// comes in as --config
	var gotOpts int
	c.run = func(ctx context.Context, opts ...testcluster.Option) (*testcluster.Cluster, error) {
		gotOpts = len(opts)
		return nil, errors.New("no docker here")
	}
	cfg := filepath.Join(t.TempDir(), "cfg.yaml")
	if err := os.WriteFile(cfg, []byte("nodes: 2\nbackend: etcd\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateWithConfig(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), `creating cluster "e2e": no docker here`) {
		t.Fatalf("Create: %v", err)
	}
	// logf, 2 provider options, --nodes=3 (WithArgs), then the file's nodes and backend
	if gotOpts != 5 {
		t.Fatalf("Run got %d options, want 5", gotOpts)
	}
	if _, err := c.Create(context.Background(), "--name", "x"); err == nil || !strings.Contains(err.Error(), "kubesplit takes") {
		t.Fatalf("Create with a kind flag: %v", err)
	}
	if c.GetKubeconfig() != "" || c.Testcluster() != nil {
		t.Fatal("a failed Create left state behind")
	}
}

func TestWithoutAClusterEveryCallSaysSo(t *testing.T) {
	c := NewCluster("idle")
	ctx := context.Background()
	node := &support.Node{Name: "node-1"}
	for name, err := range map[string]error{
		"ExportLogs":          c.ExportLogs(ctx, t.TempDir()),
		"LoadImage":           c.LoadImage(ctx, "x:1"),
		"LoadImageArchive":    c.LoadImageArchive(ctx, "x.tar"),
		"AddNode":             c.AddNode(ctx, node),
		"RemoveNode":          c.RemoveNode(ctx, node),
		"StartNode":           c.StartNode(ctx, node),
		"StopNode":            c.StopNode(ctx, node),
		"WaitForControlPlane": c.WaitForControlPlane(ctx, nil),
	} {
		if err == nil || !strings.Contains(err.Error(), `cluster "idle" is not running`) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := c.ListNode(ctx); err == nil {
		t.Error("ListNode: no error")
	}
	if _, err := c.GenerateKubeconfig(); err == nil {
		t.Error("GenerateKubeconfig: no error")
	}
	if c.KubernetesRestConfig() != nil || c.GetKubeconfig() != "" || c.GetKubectlContext() != "" {
		t.Error("a cluster that does not run has a config")
	}
	if err := c.Destroy(ctx); err != nil {
		t.Errorf("Destroy of nothing: %v", err)
	}
}

func TestNodeAliases(t *testing.T) {
	c := NewCluster("x")
	c.aliases["worker-3"] = "node-3"
	for in, want := range map[string]string{"worker-3": "node-3", "node-1": "node-1", "apiserver": "apiserver"} {
		if got, err := c.resolve(&support.Node{Name: in}); err != nil || got != want {
			t.Errorf("resolve(%s) = %s, %v", in, got, err)
		}
	}
	if _, err := c.resolve(&support.Node{}); err == nil {
		t.Error("empty name resolved")
	}
	deleteAliasesOf(c.aliases, "node-3")
	if len(c.aliases) != 0 {
		t.Errorf("aliases left: %v", c.aliases)
	}
}

func TestLoadedImages(t *testing.T) {
	stream := `{"stream":"Loaded image: example/a:1\n"}
{"stream":"Loaded image: docker.io/example/b:2\n"}
`
	refs, err := loadedImages(strings.NewReader(stream))
	if err != nil || !reflect.DeepEqual(refs, []string{"example/a:1", "docker.io/example/b:2"}) {
		t.Fatalf("%q, %v", refs, err)
	}
	_, err = loadedImages(strings.NewReader(`{"stream":"Loaded image ID: sha256:abc\n"}`))
	if err == nil || !strings.Contains(err.Error(), "no name") {
		t.Fatalf("untagged: %v", err)
	}
	_, err = loadedImages(strings.NewReader(`{"errorDetail":{"message":"unexpected EOF"},"error":"unexpected EOF"}`))
	if err == nil || err.Error() != "unexpected EOF" {
		t.Fatalf("error message: %v", err)
	}
	if _, err := loadedImages(strings.NewReader("")); err == nil {
		t.Fatal("empty stream: no error")
	}
}
