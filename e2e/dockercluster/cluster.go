// Package dockercluster runs a kubesplit cluster as Docker containers, laid
// out as a NAT'd edge deployment: the five roles on a "control" network, the
// nodes on an "edge" network, and only the tunnel gateway on both. Both
// networks are internal (no default route), so the apiserver has no route to
// any node: everything it does with a kubelet crosses a node's tunnel.
//
// The images come from hack/images.sh (built from bin/, offline); the host
// runs `kubesplit init` and `kubesplit token create` like an operator would.
// The control-plane images run as a non-root user (NonRoot), so the
// data directory is handed to that user, as an operator would for a mount.
package dockercluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubesplit/kubesplit/e2e/hostcluster"
	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/version"
	"github.com/kubesplit/kubesplit/roles"
)

// Roles of the control plane, in start order.
var Roles = roles.Names()

// NonRoot is the uid and gid the control-plane images run as.
const NonRoot = 65532

// Options choose what a cluster runs.
type Options struct {
	Nodes   int    // default 2
	Tag     string // image tag (default: the project version)
	Backend string // datastore --backend (default sqlite)
	// Roles are the control-plane roles to start, in order (default: all of
	// Roles). Without the tunnel-gateway there is no edge network and no node.
	Roles []string
	// ReadyTimeout bounds the wait for the API (default 90s).
	ReadyTimeout time.Duration
	// NodeImages is a host directory of image tarballs every node imports at start.
	NodeImages string
	// NodeArgs are extra node agent flags.
	NodeArgs []string
}

// Cluster is a running containerised cluster.
type Cluster struct {
	ID            string
	DataDir       string
	Control, Edge string // network names
	Kubeconfig    string // admin kubeconfig on the host (server: the apiserver's container IP)
	Config        *rest.Config
	Client        kubernetes.Interface
	Token         string
	Bin           string
	// GatewayIP is the gateway's edge address: the kubernetes Service's
	// endpoint, relayed by the gateway to the apiserver (empty without nodes).
	GatewayIP string

	t     testing.TB
	opts  Options
	nodes []string
	added []string // every node ever started, for cgroup cleanup
}

// DefaultTag is the image tag hack/images.sh builds: $KUBESPLIT_TAG, or the
// project version from hack/versions.env.
func DefaultTag() string {
	if t := os.Getenv("KUBESPLIT_TAG"); t != "" {
		return t
	}
	root, err := hostcluster.RepoRoot()
	if err != nil {
		return version.Version
	}
	b, err := os.ReadFile(filepath.Join(root, "hack", "versions.env"))
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "KUBESPLIT_VERSION="); ok {
				return strings.Trim(v, `"'`)
			}
		}
	}
	return version.Version
}

// Docker runs the docker CLI and returns its trimmed combined output.
func Docker(ctx context.Context, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	s := strings.TrimSpace(out.String())
	if err != nil {
		return s, fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, s)
	}
	return s, nil
}

func (c *Cluster) docker(args ...string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := Docker(ctx, args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// Name is the container name of a role or node.
func (c *Cluster) Name(member string) string { return "ks-" + c.ID + "-" + member }

// Start brings a cluster up and registers its teardown with t.Cleanup.
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	if o.Nodes == 0 {
		o.Nodes = 2
	}
	if o.Tag == "" {
		o.Tag = DefaultTag()
	}
	if o.Backend == "" {
		o.Backend = "sqlite"
	}
	if o.Roles == nil {
		o.Roles = Roles
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 90 * time.Second
	}
	withNodes := slices.Contains(o.Roles, "tunnel-gateway")
	bin, err := hostcluster.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	images := append([]string{}, o.Roles...)
	if withNodes {
		images = append(images, "node")
	}
	for _, img := range images {
		if _, err := Docker(context.Background(), "image", "inspect", "kubesplit/"+img+":"+o.Tag); err != nil {
			t.Fatalf("image kubesplit/%s:%s is missing: run `make images` (hack/images.sh)", img, o.Tag)
		}
	}
	id := make([]byte, 3)
	_, _ = rand.Read(id)
	c := &Cluster{ID: hex.EncodeToString(id), DataDir: t.TempDir(), Bin: bin, t: t, opts: o}
	c.Control, c.Edge = "ks-"+c.ID+"-control", "ks-"+c.ID+"-edge"
	t.Cleanup(c.teardown)

	// internal networks: no default route, so control and edge cannot reach each other
	c.docker("network", "create", "--internal", "--label", "kubesplit.test="+c.ID, c.Control)
	if withNodes {
		c.docker("network", "create", "--internal", "--label", "kubesplit.test="+c.ID, c.Edge)
		// the gateway joins the new network first, so it gets its first free
		// address (checked below): the apiserver advertises it as the
		// kubernetes Service's endpoint, which the gateway relays to the
		// apiserver, so that pods (CoreDNS, metrics-server, ...) reach the API
		subnet, err := netip.ParsePrefix(c.docker("network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", c.Edge))
		if err != nil {
			t.Fatalf("the edge network's subnet: %v", err)
		}
		c.GatewayIP = subnet.Masked().Addr().Next().Next().String() // .1 is the bridge's
	}

	// --owner hands the files to the roles' user, as the compose init does (needs root)
	c.run(exec.Command(filepath.Join(bin, "kubesplit"), "init", "--data-dir", c.DataDir,
		"--server", "https://apiserver:6443", "--internal-server", "https://apiserver:6443",
		"--owner", fmt.Sprintf("%d:%d", NonRoot, NonRoot)))
	for _, r := range o.Roles {
		c.StartRole(r)
	}
	if withNodes {
		c.docker("network", "connect", "--alias", "tunnel-gateway", c.Edge, c.Name("tunnel-gateway"))
		if ip := c.IP("tunnel-gateway", c.Edge); ip != c.GatewayIP {
			t.Fatalf("the gateway got %s on the edge network, not %s, which the apiserver advertises", ip, c.GatewayIP)
		}
	}

	// the host reaches the apiserver at its container IP; the certificate names it "apiserver"
	ip := c.IP("apiserver", c.Control)
	kc, err := clientcmd.LoadFromFile(layout.Dir(c.DataDir).Kubeconfig(layout.Admin))
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range kc.Clusters {
		cl.Server, cl.TLSServerName = "https://"+ip+":6443", "apiserver"
	}
	c.Kubeconfig = filepath.Join(c.DataDir, "host-admin.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, c.Kubeconfig); err != nil {
		t.Fatal(err)
	}
	if c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig); err != nil {
		t.Fatal(err)
	}
	c.Client = kubernetes.NewForConfigOrDie(c.Config)
	c.waitAPI()
	if withNodes {
		c.Token = c.NewToken("1h")
		for i := 1; i <= o.Nodes; i++ {
			c.AddNode(fmt.Sprintf("node-%d", i), c.Token)
		}
	}
	return c
}

func (c *Cluster) run(cmd *exec.Cmd) string {
	c.t.Helper()
	out, err := cmd.CombinedOutput()
	if err != nil {
		c.t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// Kubesplit runs the kubesplit CLI against this cluster's data directory.
func (c *Cluster) Kubesplit(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(c.Bin, "kubesplit"), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// NewToken creates a join token with the given TTL.
func (c *Cluster) NewToken(ttl string) string {
	c.t.Helper()
	out, err := c.Kubesplit("token", "create", "--kubeconfig", c.Kubeconfig, "--ttl", ttl)
	if err != nil {
		c.t.Fatalf("token create: %v\n%s", err, out)
	}
	lines := strings.Split(out, "\n")
	return lines[len(lines)-1]
}

// Kubectl runs the kubectl built with the project, as the admin.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.Bin, "kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}

// wiring: the roles find each other by name on the control network.
func (c *Cluster) wiring() roles.Wiring {
	w := roles.Wiring{DataDir: "/data", Host: roles.NamedHosts, Backend: c.opts.Backend}
	if slices.Contains(c.opts.Roles, roles.TunnelGateway) {
		// the relay listens on every address: the gateway joins the edge network after it starts
		w.Advertise, w.RelayAPIServer, w.RelayListen = c.GatewayIP, true, "0.0.0.0"
	}
	return w
}

// StartRole creates and starts one control-plane container.
func (c *Cluster) StartRole(role string) {
	c.t.Helper()
	if !roles.Valid(role) {
		c.t.Fatalf("unknown role %s", role)
	}
	r := c.wiring().Role(role)
	args := []string{"run", "-d", "--name", c.Name(role), "--hostname", role, "--label", "kubesplit.test=" + c.ID,
		"--network", c.Control, "--network-alias", role, "-v", c.DataDir + ":" + r.DataDir}
	if r.CPUShares > 0 {
		args = append(args, "--cpu-shares", strconv.Itoa(r.CPUShares))
	}
	args = append(args, r.Repository+":"+c.opts.Tag)
	c.docker(append(args, r.Args...)...)
	if role != "tunnel-gateway" && slices.Contains(c.opts.Roles, "tunnel-gateway") {
		c.isolate(role)
	}
}

// isolate makes the edge network unroutable from a control-plane member's
// network namespace, as a NAT'd site's private addresses are: Docker gives
// even internal networks a default route (via the host, whose filter drops
// the packets), so the edge subnet gets an explicit "unreachable" route.
func (c *Cluster) isolate(member string) {
	c.t.Helper()
	subnet := c.docker("network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", c.Edge)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := c.InNetns(ctx, member, "ip", "route", "add", "unreachable", subnet); err != nil {
		c.t.Fatalf("%v: %s", err, out)
	}
}

// InNetns runs a command of the node image (Debian tools: ip, bash, ...)
// in a throwaway container that shares a member's network namespace, with
// NET_ADMIN; the control-plane images hold nothing but their binary.
func (c *Cluster) InNetns(ctx context.Context, member string, cmd ...string) (string, error) {
	return Docker(ctx, append([]string{"run", "--rm", "--network", "container:" + c.Name(member), "--cap-add", "NET_ADMIN",
		"--entrypoint", cmd[0], "kubesplit/node:" + c.opts.Tag}, cmd[1:]...)...)
}

// IP is a container's address on a network.
func (c *Cluster) IP(member, network string) string {
	c.t.Helper()
	return c.docker("inspect", "-f", `{{(index .NetworkSettings.Networks "`+network+`").IPAddress}}`, c.Name(member))
}

// Nodes are the node names started so far.
func (c *Cluster) Nodes() []string { return append([]string(nil), c.nodes...) }

// AddNode starts a node container that joins with token.
func (c *Cluster) AddNode(name, token string) {
	c.t.Helper()
	args := []string{"run", "-d", "--name", c.Name(name), "--hostname", name, "--label", "kubesplit.test=" + c.ID,
		"--network", c.Edge, "--init",
		// what a node needs on a host where --privileged is refused (see ENVIRONMENT.md)
		"--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--security-opt", "seccomp=unconfined",
		"--security-opt", "apparmor=unconfined", "--security-opt", "systempaths=unconfined",
		"--device", "/dev/kmsg", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/tmp",
		"-e", "KUBESPLIT_TOKEN=" + token,
	}
	if c.opts.NodeImages != "" {
		args = append(args, "-v", c.opts.NodeImages+":"+roles.NodeImagesDir+":ro")
	}
	args = append(args, "kubesplit/node:"+c.opts.Tag)
	args = append(args, c.wiring().NodeArgs("")...)
	args = append(args, "--node-name", name, "--cgroup-root", c.CgroupRoot(name))
	c.docker(append(args, c.opts.NodeArgs...)...)
	c.nodes = append(c.nodes, name)
	c.added = append(c.added, name)
}

// CgroupRoot is a node's kubelet cgroupRoot: its pods sit below it in every
// cgroup hierarchy of the host (/sys/fs/cgroup/*/ROOT/kubepods/...).
func (c *Cluster) CgroupRoot(node string) string { return "/kubesplit-" + c.ID + "-" + node }

// RemoveNode deletes a node's container (and its volumes).
func (c *Cluster) RemoveNode(name string) {
	c.t.Helper()
	c.docker("rm", "-f", "-v", c.Name(name))
	for i, n := range c.nodes {
		if n == name {
			c.nodes = append(c.nodes[:i], c.nodes[i+1:]...)
			break
		}
	}
}

// Exec runs a command in a member's container.
func (c *Cluster) Exec(member string, cmd ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return Docker(ctx, append([]string{"exec", c.Name(member)}, cmd...)...)
}

// Logs returns a member's container logs.
func (c *Cluster) Logs(member string) string {
	out, _ := Docker(context.Background(), "logs", c.Name(member))
	return out
}

// LogTail is the last n lines of a member's container logs.
func (c *Cluster) LogTail(member string, n int) string {
	lines := strings.Split(strings.TrimSpace(c.Logs(member)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Diagnose is what a failure about a node should show: its container's
// state (a node agent that gave up has exited, with its code), the last n
// lines of its log, the gateway's last n lines (which say whether the
// node's tunnel, CA fetch or API calls came through), and the state of
// every role's container, with the last n lines of any that is not
// running (no node joins without the controllers' bootstrap RBAC).
func (c *Cluster) Diagnose(node string, n int) string {
	state := func(member string) string {
		s, err := Docker(context.Background(), "inspect", "-f", "{{.State.Status}} (exit code {{.State.ExitCode}}, started {{.State.StartedAt}}, finished {{.State.FinishedAt}})", c.Name(member))
		if err != nil {
			return err.Error()
		}
		return strings.TrimSpace(s)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "container %s: %s\n--- its last %d log lines:\n%s\n--- the gateway's last %d log lines:\n%s",
		c.Name(node), state(node), n, c.LogTail(node, n), n, c.LogTail("tunnel-gateway", n))
	for _, r := range c.opts.Roles {
		s := state(r)
		fmt.Fprintf(&b, "\n--- %s: %s", r, s)
		if !strings.HasPrefix(s, "running") {
			fmt.Fprintf(&b, "; its last %d log lines:\n%s", n, c.LogTail(r, n))
		}
	}
	return b.String()
}

// NodeReady says whether a node's Ready condition is true, and its state in
// words (status, since when, reason, message) for a failure to report.
func NodeReady(n *corev1.Node) (bool, string) {
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue, fmt.Sprintf("Ready=%s since %s: %s: %s",
				cond.Status, cond.LastTransitionTime.Format(time.TimeOnly), cond.Reason, cond.Message)
		}
	}
	return false, "no Ready condition yet"
}

func (c *Cluster) waitAPI() {
	c.t.Helper()
	deadline := time.Now().Add(c.opts.ReadyTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err := c.Client.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.dumpLogs()
			c.t.Fatalf("apiserver not ready: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (c *Cluster) dumpLogs() {
	for _, m := range append(append([]string{}, c.opts.Roles...), c.nodes...) {
		logs := c.Logs(m)
		if len(logs) > 6000 {
			logs = "…" + logs[len(logs)-6000:]
		}
		c.t.Logf("---- %s ----\n%s", m, logs)
	}
}

func (c *Cluster) teardown() {
	if c.t.Failed() {
		c.dumpLogs()
	}
	if os.Getenv("KUBESPLIT_KEEP") != "" {
		c.t.Logf("KUBESPLIT_KEEP set: leaving cluster %s up (kubeconfig %s)", c.ID, c.Kubeconfig)
		return
	}
	ctx := context.Background()
	ids, _ := Docker(ctx, "ps", "-aq", "--filter", "label=kubesplit.test="+c.ID)
	if ids != "" {
		_, _ = Docker(ctx, append([]string{"rm", "-f", "-v"}, strings.Fields(ids)...)...)
	}
	_, _ = Docker(ctx, "network", "rm", c.Control)
	if slices.Contains(c.opts.Roles, "tunnel-gateway") {
		_, _ = Docker(ctx, "network", "rm", c.Edge)
	}
	// the node containers' cgroups are left in the host hierarchy by the kubelet
	for _, n := range c.added {
		matches, _ := filepath.Glob("/sys/fs/cgroup/*" + c.CgroupRoot(n))
		for _, m := range matches {
			_ = removeCgroupTree(m)
		}
	}
	// files written by root inside containers are removed by TempDir's cleanup
}

// removeCgroupTree removes an (empty) cgroup and its children, deepest first.
func removeCgroupTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			_ = removeCgroupTree(filepath.Join(dir, e.Name()))
		}
	}
	return os.Remove(dir)
}

// WaitFor polls cond every half second until it is true or timeout passes,
// then fails t naming what was awaited and cond's last error.
func WaitFor(t testing.TB, what string, timeout time.Duration, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), 500*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		ok, err := cond(ctx)
		// the poll that runs into the deadline fails for that reason alone
		// (a client's rate limiter refuses to wait past it): keep the error
		// before it, which says why the condition did not hold
		if err != nil && ctx.Err() == nil {
			last = err
		}
		return err == nil && ok, nil
	})
	if err != nil {
		t.Fatalf("%s: not within %s (last error: %v)", what, timeout, last)
	}
}
