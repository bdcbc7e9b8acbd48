// Package testcluster starts a real, multi-node kubesplit cluster in Docker
// from a Go test, with testcontainers-go, and hands back what a test needs:
// an admin kubeconfig, a rest.Config, and the means to load images, stop,
// restart, upgrade or cut off any part of the cluster.
//
//	c, err := testcluster.Run(ctx, testcluster.WithNodes(2))
//	if err != nil { t.Fatal(err) }
//	testcluster.Cleanup(t, c)
//	cs := kubernetes.NewForConfigOrDie(c.RESTConfig())
//
// The cluster is laid out as a NAT'd edge site: the five control-plane roles
// on a "control" network, the nodes on an internal "edge" network, and only
// the tunnel gateway on both; the apiserver is published on 127.0.0.1 only.
// Run never pulls: the kubesplit images must be in the local Docker engine.
//
// Without testcontainers' reaper (TESTCONTAINERS_RYUK_DISABLED=true, as on
// hosts with no registry) clean-up is this package's job: Terminate removes
// every container, network and volume; a SIGINT or SIGTERM terminates every
// cluster of the process; and each Run first removes what clusters of dead
// processes (a killed or timed-out `go test`) left behind.
package testcluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	tcexec "github.com/testcontainers/testcontainers-go/exec"
	"github.com/testcontainers/testcontainers-go/wait"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubesplit/kubesplit/roles"
)

// Paths and identities inside the images (the kubesplit layout).
const (
	dataDir       = roles.DataDir
	nodeImagesDir = roles.NodeImagesDir
	// the local-storage addon's volumes (its ConfigMap's config.json)
	nodeStorageDir = roles.NodeStorageDir
	nodeTokenPath  = "/etc/kubesplit/node-token"
	apiPort        = "6443/tcp"
)

// Cluster is a running kubesplit cluster. Its methods are safe for
// concurrent use.
type Cluster struct {
	// ID is the random name part of every container, network and volume.
	ID string

	opts       options
	docker     *testcontainers.DockerClient
	control    string // network names; "" until created
	edge       string
	edgeSubnet netip.Prefix
	gatewayIP  netip.Addr
	hostPort   int // the apiserver's port on 127.0.0.1
	volumes    []string
	token      []byte
	pgPassword string

	kubeconfig []byte
	config     *rest.Config
	client     kubernetes.Interface

	mu        sync.Mutex
	members   map[string]*member // role, node or postgres name -> container
	nodes     []string           // current node names, in order added
	nextNode  int
	cgroups   []string // cgroup roots of every node ever started
	partition map[string]bool
	done      bool
}

type member struct {
	spec spec
	ctr  *testcontainers.DockerContainer
}

// spec is everything needed to (re)create a member's container.
// role is the member's io.kubesplit.role label: its role, node, box, init or postgres.
func (s spec) role() string {
	switch {
	case s.name == Box:
		return roles.Box
	case s.node:
		return roles.Node
	}
	return s.name
}

type spec struct {
	name     string // member name: role, node or "postgres"
	image    string
	cmd      []string
	extra    []string // flags added by UpgradeRole or AddNode, after cmd
	user     string
	hostname string
	networks []string // the first one gets ip, if set
	ip       netip.Addr
	mounts   testcontainers.ContainerMounts
	files    []testcontainers.ContainerFile
	env      map[string]string
	publish  bool // the apiserver: 6443 on 127.0.0.1:hostPort
	node     bool
	foreign  bool // a node of another control plane (JoinNode): not in Nodes()
	cgroup   string
	waitFor  wait.Strategy
	// hosts are NAME:IP lines for the container's /etc/hosts (docker --add-host)
	hosts []string
	// cpuShares is the container's CPU weight (roles.Role.CPUShares; 0: Docker's default)
	cpuShares int
}

// Run starts a cluster and waits until it is ready for use: the API answers,
// every role is healthy, every node is Ready, the default ServiceAccount
// exists, the WithManifests files are applied and (unless WithoutDNSWait)
// CoreDNS is available. On error nothing is left running.
func Run(ctx context.Context, opts ...Option) (*Cluster, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	start := time.Now()

	docker, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return nil, fmt.Errorf("testcluster: connecting to Docker: %w", err)
	}
	if err := checkReaper(ctx, docker); err != nil {
		return nil, err
	}
	reapStale(ctx, docker, o.logf)
	if err := checkImages(ctx, docker, &o); err != nil {
		return nil, err
	}
	id := make([]byte, 4)
	_, _ = rand.Read(id)
	c := &Cluster{ID: hex.EncodeToString(id), opts: o, docker: docker,
		members: map[string]*member{}, partition: map[string]bool{}}
	if o.handleSignal {
		installSignalHandler()
	}
	register(c)
	if err := c.start(ctx); err != nil {
		err = fmt.Errorf("testcluster: %w%s", err, c.logTails(context.Background()))
		_ = c.Terminate(context.Background())
		return nil, err
	}
	o.logf("testcluster %s: ready in %.1fs (%d nodes, %s backend)", c.ID, time.Since(start).Seconds(), len(c.Nodes()), o.backend)
	return c, nil
}

func (c *Cluster) start(ctx context.Context) error {
	if err := c.createNetworks(ctx); err != nil {
		return err
	}
	// storage: every node's local-path volumes, which outlive a node's
	// container as in compose (each PVC's directory is unique to its PV)
	vols := []string{"data", "images", "storage"}
	if c.opts.backend == BackendPostgres {
		vols = append(vols, "postgres")
	}
	for _, v := range vols {
		name := c.name(v)
		if _, err := c.docker.VolumeCreate(ctx, client.VolumeCreateOptions{Name: name, Labels: c.labels()}); err != nil {
			return fmt.Errorf("creating volume %s: %w", name, err)
		}
		c.volumes = append(c.volumes, name)
	}
	port, err := freeLoopbackPort()
	if err != nil {
		return err
	}
	c.hostPort = port
	if c.opts.box {
		return c.startBox(ctx)
	}
	if err := c.init(ctx); err != nil {
		return err
	}

	// everything starts at once: the gateway's edge address is fixed (and
	// kept out of the nodes' address range), so the apiserver can advertise
	// it before the gateway runs, and every part retries its peers')
	var specs []spec
	if c.opts.backend == BackendPostgres {
		specs = append(specs, c.postgresSpec())
	}
	for _, r := range Roles() {
		specs = append(specs, c.roleSpec(r, c.opts.image(r)))
	}
	for i := 0; i < c.opts.nodes; i++ {
		specs = append(specs, c.nodeSpec(c.newNodeName()))
	}
	errs := make([]error, len(specs))
	var wg sync.WaitGroup
	for i, s := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.create(ctx, s)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return c.waitReady(ctx)
}

// name is the Docker name of a member, network or volume of this cluster.
func (c *Cluster) name(part string) string { return "kubesplit-" + c.ID + "-" + part }

func (c *Cluster) createNetworks(ctx context.Context) error {
	// control is not internal: Docker publishes ports only from such networks
	name := c.name("control")
	if _, err := c.docker.NetworkCreate(ctx, name, client.NetworkCreateOptions{Driver: "bridge", Labels: c.labels()}); err != nil {
		return fmt.Errorf("creating the control network: %w", err)
	}
	c.control = name
	// edge gets a subnet of ours so the gateway keeps its address when it is
	// restarted or upgraded: the apiserver advertises that address to pods.
	// The nodes' addresses come from the upper half only: a node started
	// before the gateway (they start together), or while it is stopped,
	// would otherwise take .2 and the gateway fail "Address already in use"
	name = c.name("edge")
	for attempt := 0; ; attempt++ {
		subnet := pickSubnet()
		upper := subnet.Addr().As4()
		upper[3] = 128
		dynamic := netip.PrefixFrom(netip.AddrFrom4(upper), 25)
		// the bridge (the host's own address) is pinned to .1: left to
		// Docker it takes the first address of the IPRange
		_, err := c.docker.NetworkCreate(ctx, name, client.NetworkCreateOptions{Driver: "bridge", Internal: true,
			Labels: c.labels(), IPAM: &network.IPAM{Config: []network.IPAMConfig{{Subnet: subnet, IPRange: dynamic, Gateway: subnet.Addr().Next()}}}})
		if err == nil {
			c.edge, c.edgeSubnet = name, subnet
			c.gatewayIP = subnet.Addr().Next().Next() // .1 is the bridge
			return nil
		}
		if attempt == 20 || !strings.Contains(err.Error(), "overlap") {
			return fmt.Errorf("creating the edge network: %w", err)
		}
	}
}

// pickSubnet picks a random /24 in 10.200.0.0-10.239.255.0: private, and
// unlikely to be in use (a clash is retried with another).
func pickSubnet() netip.Prefix {
	b := make([]byte, 2)
	_, _ = rand.Read(b)
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200 + b[0]%40, b[1], 0}), 24)
}

func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port on 127.0.0.1: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// init runs `kubesplit init` once in the data volume (PKI, kubeconfigs, a
// default join token; files handed to the roles' user) with the manifests
// in place, then reads the admin kubeconfig and the join token out of it.
func (c *Cluster) init(ctx context.Context) error {
	files := make([]testcontainers.ContainerFile, 0, len(c.opts.manifests))
	for _, m := range c.opts.manifests {
		files = append(files, testcontainers.ContainerFile{Reader: bytes.NewReader(m.data),
			ContainerFilePath: dataDir + "/manifests/" + m.name, FileMode: 0o644})
	}
	s := spec{name: "init", image: c.opts.image(CLI), user: "0:0", hostname: "kubesplit-init",
		cmd: []string{"init", "--data-dir", dataDir, "--owner", roles.User(), "--node-token",
			"--server", "https://127.0.0.1:6443", "--internal-server", "https://apiserver:6443"},
		mounts:  testcontainers.Mounts(testcontainers.VolumeMount(c.name("data"), dataDir)),
		files:   files,
		waitFor: wait.ForExit().WithExitTimeout(time.Minute),
	}
	if err := c.create(ctx, s); err != nil {
		return err
	}
	m := c.member("init")
	st, err := m.ctr.State(ctx)
	if err != nil {
		return err
	}
	if st.ExitCode != 0 {
		logs, _ := c.Logs(ctx, "init")
		return fmt.Errorf("kubesplit init exited with %d: %s", st.ExitCode, logs)
	}
	kubeconfig, err := c.readFile(ctx, m.ctr, dataDir+"/admin.kubeconfig")
	if err != nil {
		return err
	}
	if c.token, err = c.readFile(ctx, m.ctr, dataDir+"/config/node-token"); err != nil {
		return err
	}
	c.token = bytes.TrimSpace(c.token)
	if err := c.remove(ctx, "init"); err != nil {
		return err
	}
	return c.useKubeconfig(kubeconfig)
}

// useKubeconfig takes the admin kubeconfig init wrote, pointed at the
// apiserver's port on 127.0.0.1.
func (c *Cluster) useKubeconfig(raw []byte) error {
	kc, err := clientcmd.Load(raw)
	if err != nil {
		return fmt.Errorf("admin kubeconfig: %w", err)
	}
	for _, cl := range kc.Clusters {
		cl.Server = "https://127.0.0.1:" + strconv.Itoa(c.hostPort)
	}
	kc.CurrentContext = firstKey(kc.Contexts, kc.CurrentContext)
	if c.kubeconfig, err = clientcmd.Write(*kc); err != nil {
		return err
	}
	if c.config, err = clientcmd.RESTConfigFromKubeConfig(c.kubeconfig); err != nil {
		return err
	}
	c.client, err = kubernetes.NewForConfig(c.config)
	return err
}

func firstKey[V any](m map[string]V, current string) string {
	if _, ok := m[current]; ok || len(m) == 0 {
		return current
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys[0]
}

func (c *Cluster) readFile(ctx context.Context, ctr *testcontainers.DockerContainer, path string) ([]byte, error) {
	rc, err := ctr.CopyFileFromContainer(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("reading %s from the init container: %w", path, err)
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// wiring is how this cluster's roles find each other: by name on the
// control network, the gateway relaying the API to pods at its edge address.
func (c *Cluster) wiring() roles.Wiring {
	return roles.Wiring{
		Host:           roles.NamedHosts,
		Backend:        c.backendArg(),
		Advertise:      c.gatewayIP.String(),
		RelayAPIServer: true,
		AddonImageTag:  c.opts.tag,
		// WithImage of an addon's image (coredns, metrics-server, ...) reaches the addon deployer
		AddonImages: c.opts.images,
		Extra:       c.opts.roleArgs,
	}
}

func (c *Cluster) roleSpec(role, image string) spec {
	r := c.wiring().Role(role)
	s := spec{name: role, image: image, user: r.User, hostname: role, cpuShares: r.CPUShares,
		cmd:      r.Args,
		networks: []string{c.control},
		mounts:   testcontainers.Mounts(testcontainers.VolumeMount(c.name("data"), testcontainers.ContainerMountTarget(r.DataDir))),
		publish:  role == APIServer,
	}
	if role == TunnelGateway {
		s.networks = []string{c.edge, c.control}
		s.ip = c.gatewayIP
	}
	return s
}

func (c *Cluster) backendArg() string {
	if c.opts.backend == BackendPostgres {
		return "postgres://kubesplit:" + c.pgPassword + "@postgres:5432/kubesplit?sslmode=disable"
	}
	return string(c.opts.backend)
}

func (c *Cluster) postgresSpec() spec {
	pw := make([]byte, 16)
	_, _ = rand.Read(pw)
	c.pgPassword = hex.EncodeToString(pw)
	return spec{name: Postgres, image: c.opts.image(Postgres), hostname: Postgres,
		networks: []string{c.control},
		env:      map[string]string{"POSTGRES_USER": "kubesplit", "POSTGRES_PASSWORD": c.pgPassword},
		mounts:   testcontainers.Mounts(testcontainers.VolumeMount(c.name("postgres"), "/var/lib/postgresql/data")),
	}
}

func (c *Cluster) newNodeName() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nextNode++
	return "node-" + strconv.Itoa(c.nextNode)
}

func (c *Cluster) nodeSpec(name string) spec {
	cgroup := "/" + c.name(name)
	w := c.wiring()
	if c.opts.box {
		// the box's gateway, at the box's fixed edge address (in its certificate)
		w.Host = func(string) string { return c.gatewayIP.String() }
	}
	args := append(w.NodeArgs(nodeTokenPath), "--node-name", name, "--cgroup-root", cgroup)
	return spec{name: name, image: c.opts.image(Node), hostname: name, node: true, cgroup: cgroup,
		cmd:      append(args, c.opts.nodeArgs...),
		networks: []string{c.edge},
		mounts: testcontainers.Mounts(testcontainers.VolumeMount(c.name("images"), nodeImagesDir),
			testcontainers.VolumeMount(c.name("storage"), nodeStorageDir)),
		files: []testcontainers.ContainerFile{{Reader: bytes.NewReader(c.token),
			ContainerFilePath: nodeTokenPath, FileMode: 0o600}},
	}
}

// create creates and starts a member's container.
func (c *Cluster) create(ctx context.Context, s spec) error {
	// a tmpfs mount in spec.mounts would do for /run and /tmp, but the
	// HostConfig field is what `docker run --tmpfs` sets
	req := testcontainers.ContainerRequest{
		Name:     c.name(s.name),
		Image:    s.image,
		Cmd:      append(slices.Clone(s.cmd), s.extra...),
		User:     s.user,
		Hostname: s.hostname,
		Labels: mergeLabels(c.labels(), map[string]string{labelMember: s.name,
			roles.LabelCluster: c.ID, roles.LabelRole: s.role()}),
		Mounts:     s.mounts,
		Files:      s.files,
		Env:        s.env,
		WaitingFor: s.waitFor,
		// the images are local; never ask a registry
		AlwaysPullImage: false,
	}
	if len(s.networks) > 0 {
		req.Networks = s.networks
		req.NetworkAliases = map[string][]string{}
		for _, n := range s.networks {
			req.NetworkAliases[n] = []string{s.name}
		}
	}
	if s.ip.IsValid() {
		first := s.networks[0]
		req.EndpointSettingsModifier = func(es map[string]*network.EndpointSettings) {
			if es[first] == nil {
				es[first] = &network.EndpointSettings{}
			}
			es[first].IPAMConfig = &network.EndpointIPAMConfig{IPv4Address: s.ip}
			es[first].Aliases = []string{s.name}
		}
	}
	if s.publish {
		req.ExposedPorts = []string{apiPort}
	}
	port := strconv.Itoa(c.hostPort)
	// (a HostConfigModifier replaces testcontainers' default one, which sets
	// nothing this package uses)
	req.HostConfigModifier = func(hc *container.HostConfig) {
		hc.NetworkMode = "none"
		if len(s.networks) > 0 {
			hc.NetworkMode = container.NetworkMode(s.networks[0])
		}
		if s.publish {
			// a fixed host port: it must survive restarts and upgrades
			hc.PortBindings = network.PortMap{network.MustParsePort(apiPort): {{
				HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: port}}}
		}
		if s.node {
			nodeHostConfig(hc)
		}
		hc.ExtraHosts = s.hosts
		hc.CPUShares = int64(s.cpuShares)
		if s.name != "init" {
			// like the compose file: a role that exits (say, the datastore
			// before PostgreSQL answers) comes back; Stop is a manual stop and sticks
			hc.RestartPolicy = container.RestartPolicy{Name: container.RestartPolicyUnlessStopped}
		}
	}
	c.opts.logf("testcluster %s: starting %s (%s)", c.ID, s.name, s.image)
	ctr, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{
		ContainerRequest: req, Started: true, Logger: quietLogger{}})
	var dc *testcontainers.DockerContainer
	if ctr != nil {
		dc, _ = ctr.(*testcontainers.DockerContainer)
	}
	if dc != nil {
		c.mu.Lock()
		c.members[s.name] = &member{spec: s, ctr: dc}
		if s.node && !s.foreign && !slices.Contains(c.nodes, s.name) {
			c.nodes = append(c.nodes, s.name)
			c.cgroups = append(c.cgroups, s.cgroup)
		}
		if s.foreign {
			c.cgroups = append(c.cgroups, s.cgroup)
		}
		c.mu.Unlock()
	}
	if err != nil {
		return fmt.Errorf("starting %s: %w", s.name, err)
	}
	return nil
}

// nodeHostConfig grants a node container what a kubelet with containerd
// needs, without --privileged (which some Docker hosts refuse: "unable to
// apply caps"): every capability but CAP_SYS_RESOURCE, no seccomp or
// AppArmor profile, /dev/kmsg, and the host's cgroups writable. On hosts
// that allow privileged containers this works the same.
func nodeHostConfig(hc *container.HostConfig) {
	hc.CapAdd = []string{"ALL"}
	hc.CapDrop = []string{"SYS_RESOURCE"}
	hc.SecurityOpt = []string{"seccomp=unconfined", "apparmor=unconfined"}
	// `docker run --security-opt systempaths=unconfined` is a CLI option: the
	// Engine API refuses it in SecurityOpt ("invalid --security-opt"); the CLI
	// sends empty (not absent) masked and read-only path lists instead
	hc.MaskedPaths = []string{}
	hc.ReadonlyPaths = []string{}
	hc.Devices = []container.DeviceMapping{{PathOnHost: "/dev/kmsg", PathInContainer: "/dev/kmsg", CgroupPermissions: "rwm"}}
	hc.Mounts = append(hc.Mounts, mount.Mount{Type: mount.TypeBind, Source: "/sys/fs/cgroup", Target: "/sys/fs/cgroup"})
	hc.Tmpfs = map[string]string{"/run": "", "/tmp": ""}
	init := true
	hc.Init = &init
}

func (c *Cluster) member(name string) *member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[name]
}

// remove deletes a member's container (and its anonymous volumes).
func (c *Cluster) remove(ctx context.Context, name string) error {
	m := c.member(name)
	if m == nil {
		return fmt.Errorf("no member %q in cluster %s", name, c.ID)
	}
	if err := m.ctr.Terminate(ctx, testcontainers.RemoveVolumes()); err != nil {
		return fmt.Errorf("removing %s: %w", name, err)
	}
	c.mu.Lock()
	delete(c.members, name)
	c.mu.Unlock()
	return nil
}

// exec runs a command in a member's container and returns its combined output.
func (c *Cluster) exec(ctx context.Context, name string, cmd ...string) (string, error) {
	m := c.member(name)
	if m == nil {
		return "", fmt.Errorf("no member %q in cluster %s", name, c.ID)
	}
	code, r, err := m.ctr.Exec(ctx, cmd, tcexec.Multiplexed())
	if err != nil {
		return "", fmt.Errorf("exec in %s: %w", name, err)
	}
	out, _ := io.ReadAll(r)
	s := strings.TrimSpace(string(out))
	if code != 0 {
		return s, fmt.Errorf("%s in %s exited with %d: %s", strings.Join(cmd, " "), name, code, s)
	}
	return s, nil
}

// waitReady waits for what Run promises.
func (c *Cluster) waitReady(ctx context.Context) error {
	t0 := time.Now()
	step := func(what string) {
		c.opts.logf("testcluster %s: %s after %.1fs", c.ID, what, time.Since(t0).Seconds())
	}
	if err := c.waitAPI(ctx); err != nil {
		return err
	}
	step("API ready")
	if c.opts.box {
		if err := c.waitMirrorPods(ctx); err != nil {
			return err
		}
	} else {
		for _, r := range Roles() {
			if err := c.waitHealthy(ctx, r); err != nil {
				return err
			}
		}
	}
	step("roles healthy")
	if err := c.waitNodes(ctx, c.Nodes()); err != nil {
		return err
	}
	step("nodes Ready")
	if err := poll(ctx, "the default ServiceAccount", func(ctx context.Context) (bool, error) {
		_, err := c.client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil, err
	}); err != nil {
		return err
	}
	for _, m := range c.opts.manifests {
		cm := "kubesplit-addon-" + addonName(m.name)
		if err := poll(ctx, "manifest "+m.name+" applied (ConfigMap kube-system/"+cm+")", func(ctx context.Context) (bool, error) {
			_, err := c.client.CoreV1().ConfigMaps(metav1.NamespaceSystem).Get(ctx, cm, metav1.GetOptions{})
			return err == nil, err
		}); err != nil {
			return err
		}
	}
	if c.opts.waitDNS && len(c.Nodes()) > 0 {
		if err := poll(ctx, "CoreDNS available", func(ctx context.Context) (bool, error) {
			d, err := c.client.AppsV1().Deployments(metav1.NamespaceSystem).Get(ctx, "coredns", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			return d.Status.AvailableReplicas > 0, fmt.Errorf("%d of %d replicas available", d.Status.AvailableReplicas, d.Status.Replicas)
		}); err != nil {
			return err
		}
		step("CoreDNS available")
	}
	return nil
}

// addonName is the addon deployer's name for a manifest file (kept equal to
// services/controllers' AddonName): base name without extension, lower-cased,
// runs of anything but [a-z0-9-] turned into "-", trimmed of "-".
func addonName(file string) string {
	base := strings.TrimSuffix(file, filepath.Ext(file))
	return strings.Trim(notAddonChars.ReplaceAllString(strings.ToLower(base), "-"), "-")
}

var notAddonChars = regexp.MustCompile(`[^a-z0-9-]+`)

func (c *Cluster) waitAPI(ctx context.Context) error {
	return poll(ctx, "the apiserver's /readyz", func(ctx context.Context) (bool, error) {
		body, err := c.client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(body) == "ok", err
	})
}

func (c *Cluster) waitHealthy(ctx context.Context, role string) error {
	watch := c.watchCrash(ctx, role)
	return poll(ctx, role+" healthy", func(ctx context.Context) (bool, error) {
		if err := watch(ctx); err != nil {
			return false, err
		}
		_, err := c.exec(ctx, role, roles.Probe, c.wiring().Role(role).Ready.ProbeArg())
		return err == nil, err
	})
}

// stopPolling ends a poll at once.
type stopPolling struct{ error }

// watchCrash returns a check that fails once a member's container has
// exited or restarted since watchCrash was called: a role or node that
// refuses to start (a bad flag, a version-skew refusal) then fails the wait
// at once, with the end of its log, instead of at the timeout.
func (c *Cluster) watchCrash(ctx context.Context, name string) func(context.Context) error {
	restarts := -1
	if m := c.member(name); m != nil {
		if in, err := m.ctr.Inspect(ctx); err == nil {
			restarts = in.RestartCount
		}
	}
	return func(ctx context.Context) error {
		m := c.member(name)
		if m == nil || restarts < 0 {
			return nil
		}
		in, err := m.ctr.Inspect(ctx)
		if err != nil || in.State == nil {
			return nil
		}
		if in.RestartCount == restarts && in.State.Running && !in.State.Restarting {
			return nil
		}
		logs, _ := c.Logs(ctx, name)
		return stopPolling{fmt.Errorf("%s exited (code %d, %d restarts); its log ends:\n%s",
			name, in.State.ExitCode, in.RestartCount-restarts, tail(logs, 15))}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (c *Cluster) waitNodes(ctx context.Context, names []string) error {
	for _, n := range names {
		watch := c.watchCrash(ctx, n)
		if err := poll(ctx, "node "+n+" Ready", func(ctx context.Context) (bool, error) {
			if err := watch(ctx); err != nil {
				return false, err
			}
			node, err := c.client.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			return nodeReady(node), errors.New("not Ready")
		}); err != nil {
			return err
		}
	}
	return nil
}

func nodeReady(n *corev1.Node) bool {
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// poll calls cond every 250ms until it returns true or ctx ends; the error
// then names what was awaited and cond's last error.
func poll(ctx context.Context, what string, cond func(ctx context.Context) (bool, error)) error {
	var last error
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ok, err := cond(cctx)
		cancel()
		if ok {
			return nil
		}
		var stop stopPolling
		if errors.As(err, &stop) {
			return stop.error
		}
		if err != nil && !apierrors.IsNotFound(err) || last == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last: %v)", what, ctx.Err(), last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Kubeconfig is the admin kubeconfig; its server is https://127.0.0.1:PORT.
func (c *Cluster) Kubeconfig() []byte { return bytes.Clone(c.kubeconfig) }

// WriteKubeconfig writes the admin kubeconfig to path (mode 0600), for kubectl.
func (c *Cluster) WriteKubeconfig(path string) error {
	return os.WriteFile(path, c.kubeconfig, 0o600)
}

// RESTConfig is a client configuration for the admin; each call returns a copy.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.config) }

// Client is a clientset for the admin.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// Nodes are the names of the cluster's nodes (Node objects and members).
func (c *Cluster) Nodes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.nodes)
}

// APIServerPort is the apiserver's port on 127.0.0.1; it stays the same
// across restarts and upgrades of the apiserver.
func (c *Cluster) APIServerPort() int { return c.hostPort }

// GatewayIP is the tunnel gateway's address on the edge network, which the
// apiserver advertises as the `kubernetes` Service's endpoint.
func (c *Cluster) GatewayIP() string { return c.gatewayIP.String() }

// HostAddress is this host's own address on the edge network (Docker gives
// the network's bridge its first address): the source a node sees for the
// test process's connections, e.g. to a LoadBalancer Service's node
// addresses, and so what loadBalancerSourceRanges must allow for them.
func (c *Cluster) HostAddress() string { return c.edgeSubnet.Addr().Next().String() }

// Container is the testcontainers handle of a member, for anything this
// package does not wrap; nil if there is no such member.
func (c *Cluster) Container(name string) testcontainers.Container {
	if m := c.member(name); m != nil {
		return m.ctr
	}
	return nil
}

// Exec runs a command in a member's container (a node's: the node image has
// Debian's tools; the role images hold only their binary and kubesplit-probe).
func (c *Cluster) Exec(ctx context.Context, name string, cmd ...string) (string, error) {
	return c.exec(ctx, name, cmd...)
}

type quietLogger struct{}

func (quietLogger) Printf(string, ...any) {}
