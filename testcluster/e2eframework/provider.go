// Package e2eframework makes kubesplit a cluster provider of
// sigs.k8s.io/e2e-framework, next to its kind, k3d and kwok providers: a
// suite written for one of them switches to a kubesplit cluster in Docker by
// changing the provider it passes to envfuncs.CreateCluster.
//
//	// was: envfuncs.CreateCluster(kind.NewProvider(), name)
//	testenv.Setup(envfuncs.CreateCluster(e2eframework.NewProvider(), name))
//	testenv.Finish(envfuncs.DestroyCluster(name))
//
// The cluster is the one github.com/kubesplit/kubesplit/testcluster starts
// (testcluster.Run): no binary is run and nothing is pulled, but the
// kubesplit images must be in the local Docker engine (`make images` in the
// kubesplit repository, or `docker load -i` of its image archive). Set
// TESTCONTAINERS_RYUK_DISABLED=true on hosts that cannot pull testcontainers'
// reaper image; testcluster removes what it starts itself.
//
// How the provider interface maps onto kubesplit:
//   - WithName names the kubeconfig file and the ClusterNameContextKey; the
//     Docker objects are named by testcluster (kubesplit-<random id>-...).
//   - WithVersion sets the tag of every kubesplit image (say "v0.1.0" or
//     "v0.1.0-k8s1.36.3"); the Kubernetes version is the one those images
//     were built with. "" keeps the default ($KUBESPLIT_TAG, else
//     testcluster.DefaultTag).
//   - WithPath is ignored: there is no CLI binary to find or install.
//   - WithOpts takes this package's ClusterOpts: WithOptions
//     (testcluster.Option values) and WithArgs (Create flags).
//   - Create's arguments are flags (see CreateFlags); CreateWithConfig reads a
//     small YAML or JSON file (see Config).
//   - Create on a provider whose cluster runs returns its kubeconfig again,
//     as kind and k3d do for a cluster that exists. A cluster lives as long
//     as the test process: there is no cluster to find by name in a later
//     run.
//   - ExportLogs writes every role's and node's container log to
//     DEST/NAME.log.
//   - LoadImage copies images from the local Docker engine onto every node
//     (and nodes added later); LoadImageArchive first `docker load`s the
//     archive into the local engine, then does the same.
//   - The lifecycle operations act on testcluster's nodes and roles: AddNode
//     cannot choose the node's name (nodes are node-1, node-2, ...): the name
//     chosen is written back into the *Node and the requested one keeps
//     working as an alias for this provider's operations. Stop/StartNode also
//     take a control-plane role's name ("apiserver", ...); ListNode lists the
//     roles (Role "control-plane") and the nodes (Role "worker").
//   - AddNode's args are flags of the new node's agent. The args of
//     LoadImage, GenerateKubeconfig and the other node operations are the
//     kind/k3d CLIs' flags there; they mean nothing here and are ignored
//     with a warning.
package e2eframework

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kubesplit/kubesplit/testcluster"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	log "k8s.io/klog/v2"
	"sigs.k8s.io/e2e-framework/klient"
	"sigs.k8s.io/e2e-framework/support"
)

// Cluster is a kubesplit cluster as an e2e-framework cluster provider. The
// zero value is not usable: make one with NewProvider,
// NewProviderWithOptions or NewCluster.
type Cluster struct {
	name    string
	version string
	path    string               // WithPath: recorded, unused
	opts    []testcluster.Option // WithOptions and NewProviderWithOptions
	args    []string             // WithArgs: Create flags

	mu          sync.Mutex
	cluster     *testcluster.Cluster
	kubecfgFile string
	kubecfgs    []string          // every file written, removed by Destroy
	aliases     map[string]string // AddNode's requested name -> node name
	// run starts the cluster; tests replace it
	run func(ctx context.Context, opts ...testcluster.Option) (*testcluster.Cluster, error)
}

var (
	_ support.E2EClusterProvider                = (*Cluster)(nil)
	_ support.E2EClusterProviderWithImageLoader = (*Cluster)(nil)
	_ support.E2EClusterProviderWithLifeCycle   = (*Cluster)(nil)
)

// NewProvider returns a kubesplit cluster provider with testcluster's
// defaults: one node, the SQLite datastore, the images of $KUBESPLIT_TAG
// (else testcluster.DefaultTag).
func NewProvider() support.E2EClusterProvider {
	return NewCluster("")
}

// NewProviderWithOptions returns a provider whose clusters are started with
// opts, e.g. NewProviderWithOptions(testcluster.WithNodes(2)).
func NewProviderWithOptions(opts ...testcluster.Option) support.E2EClusterProvider {
	c := NewCluster("")
	c.opts = append(c.opts, opts...)
	return c
}

// NewCluster returns a provider for a cluster named name, as kind.NewCluster does.
func NewCluster(name string) *Cluster {
	return &Cluster{name: name, aliases: map[string]string{}, run: testcluster.Run}
}

// WithOptions is a ClusterOpts (for WithOpts or
// envfuncs.CreateClusterWithOpts) adding testcluster options.
func WithOptions(opts ...testcluster.Option) support.ClusterOpts {
	return func(p support.E2EClusterProvider) {
		if c, ok := p.(*Cluster); ok {
			c.opts = append(c.opts, opts...)
		}
	}
}

// WithArgs is a ClusterOpts adding Create flags (see CreateFlags), as k3d's
// WithArgs adds `k3d cluster create` flags.
func WithArgs(args ...string) support.ClusterOpts {
	return func(p support.E2EClusterProvider) {
		if c, ok := p.(*Cluster); ok {
			c.args = append(c.args, args...)
		}
	}
}

// Testcluster is the running cluster, for everything testcluster offers
// beyond the provider interface (Partition, UpgradeRole, Exec, ...); nil
// before Create and after Destroy. Get it in a test with
// envfuncs.GetClusterFromContext(ctx, name) and a type assertion to *Cluster.
func (c *Cluster) Testcluster() *testcluster.Cluster {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cluster
}

// Name is the name given with WithName or NewCluster.
func (c *Cluster) Name() string { return c.name }

// WithName sets the cluster's name, which names its kubeconfig file.
func (c *Cluster) WithName(name string) support.E2EClusterProvider {
	c.name = name
	return c
}

// WithVersion sets the tag of the kubesplit images ("v0.1.0",
// "v0.1.0-k8s1.36.3"); "" keeps the default. Options, the config file and
// Create's --tag flag override it. An invalid tag fails Create.
func (c *Cluster) WithVersion(version string) support.E2EClusterProvider {
	c.version = version
	return c
}

// WithPath is accepted and ignored: kubesplit clusters are started through
// the Docker API, with no CLI binary.
func (c *Cluster) WithPath(path string) support.E2EClusterProvider {
	c.path = path
	return c
}

// WithOpts applies ClusterOpts (WithOptions, WithArgs).
func (c *Cluster) WithOpts(opts ...support.ClusterOpts) support.E2EClusterProvider {
	for _, o := range opts {
		o(c)
	}
	return c
}

// SetDefaults gives an unnamed provider the name "kubesplit".
func (c *Cluster) SetDefaults() support.E2EClusterProvider {
	if c.name == "" {
		c.name = "kubesplit"
	}
	if c.aliases == nil {
		c.aliases = map[string]string{}
	}
	if c.run == nil {
		c.run = testcluster.Run
	}
	return c
}

// options is what Create passes to testcluster.Run, lowest precedence
// first: WithVersion, the provider's options (NewProviderWithOptions,
// WithOptions), then args (WithArgs, then Create's own), where a --config
// file's settings come in at the --config flag's place.
func (c *Cluster) options(args []string) ([]testcluster.Option, error) {
	opts := []testcluster.Option{testcluster.WithLogf(func(format string, a ...any) {
		log.V(2).Infof(format, a...)
	})}
	if c.version != "" {
		opts = append(opts, testcluster.WithTag(c.version))
	}
	opts = append(opts, c.opts...)
	cfg, err := ParseCreateFlags(append(slices.Clone(c.args), args...))
	if err != nil {
		return nil, err
	}
	more, err := cfg.Options()
	if err != nil {
		return nil, err
	}
	return append(opts, more...), nil
}

// Create starts the cluster, writes its admin kubeconfig to a file under
// os.TempDir (kubesplit-cluster-NAME-kubecfg*) and returns the file's path.
// args are flags (see CreateFlags). Run waits for the API, every role, every
// node Ready and CoreDNS (unless --wait-dns=false) before it returns.
func (c *Cluster) Create(ctx context.Context, args ...string) (string, error) {
	c.SetDefaults()
	c.mu.Lock()
	running := c.cluster != nil
	c.mu.Unlock()
	if running {
		log.V(4).InfoS("kubesplit cluster already running", "name", c.name)
		return c.GetKubeconfig(), nil
	}
	opts, err := c.options(args)
	if err != nil {
		return "", fmt.Errorf("kubesplit: cluster %q: %w", c.name, err)
	}
	log.V(4).InfoS("Creating kubesplit cluster", "name", c.name, "args", args)
	tc, err := c.run(ctx, opts...)
	if err != nil {
		return "", fmt.Errorf("kubesplit: creating cluster %q: %w", c.name, err)
	}
	c.mu.Lock()
	c.cluster = tc
	c.mu.Unlock()
	path, err := c.writeKubeconfig()
	if err != nil {
		_ = tc.Terminate(context.WithoutCancel(ctx))
		c.mu.Lock()
		c.cluster = nil
		c.mu.Unlock()
		return "", err
	}
	return path, nil
}

// CreateWithConfig is Create with a config file (see Config); "" is Create.
func (c *Cluster) CreateWithConfig(ctx context.Context, configFile string) (string, error) {
	if configFile == "" {
		return c.Create(ctx)
	}
	return c.Create(ctx, "--config", configFile)
}

func (c *Cluster) running() (*testcluster.Cluster, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cluster == nil {
		return nil, fmt.Errorf("kubesplit: cluster %q is not running (call Create first)", c.name)
	}
	return c.cluster, nil
}

// writeKubeconfig writes the admin kubeconfig to a new file and makes it
// the one GetKubeconfig returns.
func (c *Cluster) writeKubeconfig() (string, error) {
	tc, err := c.running()
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp("", "kubesplit-cluster-"+safeName(c.name)+"-kubecfg")
	if err != nil {
		return "", fmt.Errorf("kubesplit: kubeconfig file: %w", err)
	}
	_, err = f.Write(tc.Kubeconfig())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return "", fmt.Errorf("kubesplit: kubeconfig file: %w", err)
	}
	c.mu.Lock()
	c.kubecfgFile = f.Name()
	c.kubecfgs = append(c.kubecfgs, f.Name())
	c.mu.Unlock()
	return f.Name(), nil
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, s)
}

// GetKubeconfig is the path of the kubeconfig file Create wrote ("" before Create).
func (c *Cluster) GetKubeconfig() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.kubecfgFile
}

// GenerateKubeconfig writes the admin kubeconfig to a new file and returns
// its path (it also becomes GetKubeconfig's). args are ignored.
func (c *Cluster) GenerateKubeconfig(args ...string) (string, error) {
	ignoredArgs("GenerateKubeconfig", args)
	return c.writeKubeconfig()
}

// GetKubectlContext is the current context of the admin kubeconfig ("" before Create).
func (c *Cluster) GetKubectlContext() string {
	tc, err := c.running()
	if err != nil {
		return ""
	}
	kc, err := clientcmd.Load(tc.Kubeconfig())
	if err != nil {
		return ""
	}
	return kc.CurrentContext
}

// members are the names ExportLogs and ListNode cover: the roles, the
// PostgreSQL server if there is one, and the nodes.
func members(tc *testcluster.Cluster) []string {
	names := testcluster.Roles()
	if tc.Container(testcluster.Postgres) != nil {
		names = append(names, testcluster.Postgres)
	}
	return append(names, tc.Nodes()...)
}

// ExportLogs writes each role's and node's container log to dest/NAME.log
// (apiserver.log, node-1.log, ...), creating dest if need be.
func (c *Cluster) ExportLogs(ctx context.Context, dest string) error {
	tc, err := c.running()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return fmt.Errorf("kubesplit: exporting logs: %w", err)
	}
	var errs []error
	for _, n := range members(tc) {
		logs, err := tc.Logs(ctx, n)
		if err != nil {
			errs = append(errs, fmt.Errorf("kubesplit: logs of %s: %w", n, err))
			continue
		}
		if err := os.WriteFile(filepath.Join(dest, n+".log"), []byte(logs), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("kubesplit: exporting logs: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Destroy removes every container, network and volume of the cluster and the
// kubeconfig files written for it. Destroying a provider with no running
// cluster does nothing.
func (c *Cluster) Destroy(ctx context.Context) error {
	c.mu.Lock()
	tc, files := c.cluster, c.kubecfgs
	c.cluster, c.kubecfgs, c.kubecfgFile = nil, nil, ""
	c.aliases = map[string]string{}
	c.mu.Unlock()
	var errs []error
	if tc != nil {
		log.V(4).InfoS("Destroying kubesplit cluster", "name", c.name, "id", tc.ID)
		if err := tc.Terminate(ctx); err != nil {
			errs = append(errs, fmt.Errorf("kubesplit: destroying cluster %q: %w", c.name, err))
		}
	}
	for _, f := range files {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// WaitForControlPlane checks that the apiserver answers /readyz. Create
// has already waited for the whole cluster (every role healthy, every node
// Ready, CoreDNS available), so it does not wait again.
func (c *Cluster) WaitForControlPlane(ctx context.Context, kc klient.Client) error {
	tc, err := c.running()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	body, err := tc.Client().Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("kubesplit: cluster %q: the apiserver's /readyz: %w", c.name, err)
	}
	if string(body) != "ok" {
		return fmt.Errorf("kubesplit: cluster %q: the apiserver's /readyz: %q", c.name, body)
	}
	return nil
}

// KubernetesRestConfig is an admin client configuration (nil before Create).
func (c *Cluster) KubernetesRestConfig() *rest.Config {
	tc, err := c.running()
	if err != nil {
		return nil
	}
	return tc.RESTConfig()
}

// LoadImage copies an image from the local Docker engine onto every node
// (containerd's k8s.io namespace); nodes added later get it too. Use it with
// imagePullPolicy IfNotPresent or Never. args are ignored.
func (c *Cluster) LoadImage(ctx context.Context, image string, args ...string) error {
	tc, err := c.running()
	if err != nil {
		return err
	}
	ignoredArgs("LoadImage", args)
	if err := tc.LoadImages(ctx, image); err != nil {
		return fmt.Errorf("kubesplit: loading %s: %w", image, err)
	}
	return nil
}

// LoadImageArchive loads a `docker save` archive (plain or gzip-compressed)
// into the local Docker engine, then onto every node as LoadImage does.
// The archive's images must be tagged. args are ignored.
func (c *Cluster) LoadImageArchive(ctx context.Context, archivePath string, args ...string) error {
	tc, err := c.running()
	if err != nil {
		return err
	}
	ignoredArgs("LoadImageArchive", args)
	refs, err := dockerLoad(ctx, archivePath)
	if err != nil {
		return err
	}
	if err := tc.LoadImages(ctx, refs...); err != nil {
		return fmt.Errorf("kubesplit: loading %s: %w", archivePath, err)
	}
	return nil
}

// dockerLoad loads an image archive into the local Docker engine and returns
// the references it loaded.
func dockerLoad(ctx context.Context, archivePath string) ([]string, error) {
	f, err := os.Open(archivePath)
	if err != nil {
		return nil, fmt.Errorf("kubesplit: image archive: %w", err)
	}
	defer f.Close()
	docker, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return nil, fmt.Errorf("kubesplit: connecting to Docker: %w", err)
	}
	defer docker.Close()
	res, err := docker.ImageLoad(ctx, f, client.ImageLoadWithQuiet(true))
	if err != nil {
		return nil, fmt.Errorf("kubesplit: docker load %s: %w", archivePath, err)
	}
	defer res.Close()
	refs, err := loadedImages(res)
	if err != nil {
		return nil, fmt.Errorf("kubesplit: docker load %s: %w", archivePath, err)
	}
	return refs, nil
}

// loadedImages reads the JSON message stream of Docker's /images/load.
func loadedImages(r io.Reader) ([]string, error) {
	var refs, ids []string
	dec := json.NewDecoder(r)
	for {
		var msg struct {
			Stream      string `json:"stream"`
			Error       string `json:"error"`
			ErrorDetail *struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&msg); err == io.EOF {
			break
		} else if err != nil {
			return nil, err
		}
		if msg.Error != "" {
			return nil, errors.New(msg.Error)
		}
		if msg.ErrorDetail != nil && msg.ErrorDetail.Message != "" {
			return nil, errors.New(msg.ErrorDetail.Message)
		}
		for _, line := range strings.Split(msg.Stream, "\n") {
			if ref, ok := strings.CutPrefix(strings.TrimSpace(line), "Loaded image: "); ok {
				refs = append(refs, ref)
			} else if id, ok := strings.CutPrefix(strings.TrimSpace(line), "Loaded image ID: "); ok {
				ids = append(ids, id)
			}
		}
	}
	if len(refs) == 0 {
		if len(ids) > 0 {
			return nil, fmt.Errorf("the archive's images have no name (%s): tag them before `docker save`, pods need a name to refer to", strings.Join(ids, ", "))
		}
		return nil, errors.New("no image loaded")
	}
	return refs, nil
}

// AddNode starts one more node and waits until it is Ready. Nodes are named
// by testcluster (node-N): the name is written to node.Name (and node.Role,
// node.Cluster filled in); a name asked for in node.Name stays usable as an
// alias in this provider's node operations. node.Role must be "", "worker"
// or "agent": the control plane is the five fixed roles. args are added to
// the new node's agent flags (as testcluster.WithNodeArgs does for all).
func (c *Cluster) AddNode(ctx context.Context, node *support.Node, args ...string) error {
	tc, err := c.running()
	if err != nil {
		return err
	}
	if node == nil {
		node = &support.Node{}
	}
	switch node.Role {
	case "", "worker", "agent":
	default:
		return fmt.Errorf("kubesplit: AddNode: role %q: only worker nodes can be added (the control plane is the roles %s)", node.Role, strings.Join(testcluster.Roles(), ", "))
	}
	name, err := tc.AddNode(ctx, args...)
	if name != "" {
		c.mu.Lock()
		if node.Name != "" && node.Name != name {
			c.aliases[node.Name] = name
			log.V(2).InfoS("kubesplit nodes are named by the cluster", "asked", node.Name, "name", name)
		}
		c.mu.Unlock()
		node.Name, node.Role, node.Cluster = name, "worker", c.name
	}
	if err != nil {
		return fmt.Errorf("kubesplit: adding a node: %w", err)
	}
	return nil
}

// resolve maps an AddNode alias to the node's name.
func (c *Cluster) resolve(node *support.Node) (string, error) {
	if node == nil || node.Name == "" {
		return "", errors.New("kubesplit: no node name given")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.aliases[node.Name]; ok {
		return n, nil
	}
	return node.Name, nil
}

// RemoveNode deletes a node's container and its Node object. args are ignored.
func (c *Cluster) RemoveNode(ctx context.Context, node *support.Node, args ...string) error {
	tc, err := c.running()
	if err != nil {
		return err
	}
	name, err := c.resolve(node)
	if err != nil {
		return err
	}
	ignoredArgs("RemoveNode", args)
	if err := tc.RemoveNode(ctx, name); err != nil {
		return err
	}
	c.mu.Lock()
	deleteAliasesOf(c.aliases, name)
	c.mu.Unlock()
	return nil
}

func deleteAliasesOf(m map[string]string, v string) {
	for k, x := range m {
		if x == v {
			delete(m, k)
		}
	}
}

// StartNode starts a stopped node (waiting until it is Ready again) or
// control-plane role (waiting until it is healthy). args are ignored.
func (c *Cluster) StartNode(ctx context.Context, node *support.Node, args ...string) error {
	tc, err := c.running()
	if err != nil {
		return err
	}
	name, err := c.resolve(node)
	if err != nil {
		return err
	}
	ignoredArgs("StartNode", args)
	return tc.Start(ctx, name)
}

// StopNode stops a node's or a control-plane role's container until
// StartNode. args are ignored.
func (c *Cluster) StopNode(ctx context.Context, node *support.Node, args ...string) error {
	tc, err := c.running()
	if err != nil {
		return err
	}
	name, err := c.resolve(node)
	if err != nil {
		return err
	}
	ignoredArgs("StopNode", args)
	return tc.Stop(ctx, name)
}

// ListNode lists the control-plane roles (Role "control-plane"), the
// PostgreSQL server of the postgres backend (Role "datastore-backend") and
// the nodes (Role "worker"), with their container's state ("running",
// "exited", ...) and IP address (the tunnel gateway's: its edge one). args
// are ignored.
func (c *Cluster) ListNode(ctx context.Context, args ...string) ([]support.Node, error) {
	tc, err := c.running()
	if err != nil {
		return nil, err
	}
	ignoredArgs("ListNode", args)
	names := members(tc)
	nodes := make([]support.Node, 0, len(names))
	for _, n := range names {
		role := "worker"
		switch {
		case slices.Contains(testcluster.Roles(), n):
			role = "control-plane"
		case n == testcluster.Postgres:
			role = "datastore-backend"
		}
		node := support.Node{Name: n, Role: role, Cluster: c.name}
		if ctr := tc.Container(n); ctr != nil {
			if st, err := ctr.State(ctx); err == nil && st != nil {
				node.State = string(st.Status)
			}
			if n == testcluster.TunnelGateway {
				// on two networks; its edge address is the one nodes and pods use
				node.IP = net.ParseIP(tc.GatewayIP())
			} else if ip, err := ctr.ContainerIP(ctx); err == nil {
				node.IP = net.ParseIP(ip)
			}
		}
		nodes = append(nodes, node)
	}
	return nodes, nil
}

func ignoredArgs(op string, args []string) {
	if len(args) > 0 {
		log.Warningf("kubesplit provider: %s: arguments %q have no meaning for kubesplit and are ignored", op, args)
	}
}
