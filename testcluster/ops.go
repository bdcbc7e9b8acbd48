package testcluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func (c *Cluster) isRole(name string) bool { return slices.Contains(Roles(), name) }

func (c *Cluster) isNode(name string) bool { return slices.Contains(c.Nodes(), name) }

// Stop stops a role's or a node's container (SIGTERM, then SIGKILL after 10s).
// It stays stopped until Start.
func (c *Cluster) Stop(ctx context.Context, name string) error {
	m := c.member(name)
	if m == nil {
		return fmt.Errorf("testcluster: Stop(%q): no such role or node; roles are %s, nodes %s", name, strings.Join(Roles(), ", "), strings.Join(c.Nodes(), ", "))
	}
	c.opts.logf("testcluster %s: stopping %s", c.ID, name)
	timeout := 10 * time.Second
	if err := m.ctr.Stop(ctx, &timeout); err != nil {
		return fmt.Errorf("testcluster: stopping %s: %w", name, err)
	}
	return nil
}

// Start starts a stopped role or node and waits until it is back: a role
// healthy (the apiserver also answering through its published port), a node
// Ready with a heartbeat newer than the start.
func (c *Cluster) Start(ctx context.Context, name string) error {
	m := c.member(name)
	if m == nil {
		return fmt.Errorf("testcluster: Start(%q): no such role or node", name)
	}
	c.opts.logf("testcluster %s: starting %s", c.ID, name)
	since := time.Now()
	if err := m.ctr.Start(ctx); err != nil {
		return fmt.Errorf("testcluster: starting %s: %w", name, err)
	}
	return c.waitBack(ctx, name, since)
}

// Restart stops and starts a role or node, waiting as Start does.
func (c *Cluster) Restart(ctx context.Context, name string) error {
	if err := c.Stop(ctx, name); err != nil {
		return err
	}
	return c.Start(ctx, name)
}

func (c *Cluster) waitBack(ctx context.Context, name string, since time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.timeout)
	defer cancel()
	switch {
	case c.isRole(name):
		if err := c.waitHealthy(ctx, name); err != nil {
			return fmt.Errorf("testcluster: %w", err)
		}
		if name == APIServer {
			return c.waitAPI(ctx)
		}
		return nil
	case c.isNode(name):
		return c.waitHeartbeat(ctx, name, since)
	}
	return nil
}

// waitHeartbeat waits until a node reports Ready with a heartbeat after since.
func (c *Cluster) waitHeartbeat(ctx context.Context, name string, since time.Time) error {
	// heartbeats have second precision
	since = since.Truncate(time.Second)
	return poll(ctx, "node "+name+" Ready again", func(ctx context.Context) (bool, error) {
		n, err := c.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == "Ready" {
				return cond.Status == "True" && !cond.LastHeartbeatTime.Time.Before(since),
					fmt.Errorf("Ready=%s, last heartbeat %s", cond.Status, cond.LastHeartbeatTime.Format(time.RFC3339))
			}
		}
		return false, errors.New("no Ready condition")
	})
}

// UpgradeRole replaces a role's container with one from image (say,
// "kubesplit/scheduler:v0.2.0"), keeping its data volume, flags, network
// addresses and, for the apiserver, its port on 127.0.0.1; it returns once
// the new container is healthy, or with the end of its log if it exits.
// extraArgs, if any, are added to the role's flags (replacing those of an
// earlier UpgradeRole).
func (c *Cluster) UpgradeRole(ctx context.Context, role, image string, extraArgs ...string) error {
	if !c.isRole(role) {
		return fmt.Errorf("testcluster: UpgradeRole(%q): not a role; roles are %s", role, strings.Join(Roles(), ", "))
	}
	if err := checkImage(ctx, c.docker, image); err != nil {
		return err
	}
	m := c.member(role)
	if m == nil {
		return fmt.Errorf("testcluster: UpgradeRole(%q): the role has no container", role)
	}
	s := m.spec
	s.image, s.extra = image, extraArgs
	c.opts.logf("testcluster %s: upgrading %s from %s to %s", c.ID, role, m.spec.image, image)
	if err := c.remove(ctx, role); err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	since := time.Now()
	if err := c.create(ctx, s); err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	return c.waitBack(ctx, role, since)
}

// AddNode starts one more node, waits until it is Ready and returns its
// name. extraArgs are added to its agent's flags.
func (c *Cluster) AddNode(ctx context.Context, extraArgs ...string) (string, error) {
	name := c.newNodeName()
	s := c.nodeSpec(name)
	s.extra = extraArgs
	if err := c.create(ctx, s); err != nil {
		// the name still matters if a container was made: RemoveNode(name)
		return name, fmt.Errorf("testcluster: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.timeout)
	defer cancel()
	if err := c.waitNodes(ctx, []string{name}); err != nil {
		return name, fmt.Errorf("testcluster: %w", err)
	}
	return name, nil
}

// JoinNode starts a node container on this cluster's node network that
// joins another control plane, one hosted on this cluster (deploy/helm),
// through its gateway at gatewayURL with a join token, the way a node
// outside the host cluster would. The node gets the images LoadImages
// loaded. It is not one of Nodes(); Exec, Logs and Container reach it by
// the name returned, and Terminate removes it. The caller waits for it to
// be Ready in the other cluster.
func (c *Cluster) JoinNode(ctx context.Context, gatewayURL, token string, extraArgs ...string) (string, error) {
	return c.JoinNodeResolving(ctx, gatewayURL, token, nil, extraArgs...)
}

// JoinNodeResolving is JoinNode for a gateway whose URL names a host that
// no DNS here resolves: hosts maps such names to IPs in the node
// container's /etc/hosts (what a machine's resolver would answer), e.g. a
// release's name behind a shared SNI router.
func (c *Cluster) JoinNodeResolving(ctx context.Context, gatewayURL, token string, hosts map[string]string, extraArgs ...string) (string, error) {
	name := c.newNodeName()
	s := c.nodeSpec(name)
	s.foreign = true
	args := []string{"--gateway", gatewayURL, "--token-file", nodeTokenPath, "--node-name", name, "--cgroup-root", s.cgroup}
	s.cmd = append(args, c.opts.nodeArgs...)
	s.extra = extraArgs
	for _, h := range slices.Sorted(maps.Keys(hosts)) {
		s.hosts = append(s.hosts, h+":"+hosts[h])
	}
	s.files = []testcontainers.ContainerFile{{Reader: strings.NewReader(token), ContainerFilePath: nodeTokenPath, FileMode: 0o600}}
	if err := c.create(ctx, s); err != nil {
		return name, fmt.Errorf("testcluster: %w", err)
	}
	return name, nil
}

// RemoveNode deletes a node's container and its Node object (as
// `kubectl delete node` does after a machine is gone), so its pods are
// replaced elsewhere at once.
func (c *Cluster) RemoveNode(ctx context.Context, name string) error {
	if m := c.member(name); m != nil && m.spec.foreign {
		// a JoinNode node: its Node object is the other cluster's to delete
		c.opts.logf("testcluster %s: removing node %s (of another control plane)", c.ID, name)
		if err := c.remove(ctx, name); err != nil {
			return fmt.Errorf("testcluster: %w", err)
		}
		removeCgroups(c.name(name))
		return nil
	}
	if !c.isNode(name) {
		return fmt.Errorf("testcluster: RemoveNode(%q): no such node; nodes are %s", name, strings.Join(c.Nodes(), ", "))
	}
	c.opts.logf("testcluster %s: removing node %s", c.ID, name)
	if err := c.remove(ctx, name); err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	c.mu.Lock()
	c.nodes = slices.DeleteFunc(c.nodes, func(n string) bool { return n == name })
	delete(c.partition, name)
	c.mu.Unlock()
	removeCgroups(c.name(name))
	err := c.client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("testcluster: deleting Node %s: %w", name, err)
	}
	return nil
}

// partitionRules drop everything between a node and the gateway, both ways,
// in the node's network namespace: the node keeps its address and its pods,
// but its tunnel, its kubelet's API traffic and its pods' way to the
// apiserver are cut, as when a site's uplink fails.
func (c *Cluster) partitionRules(op string) [][]string {
	gw := c.gatewayIP.String()
	return [][]string{
		{"iptables", "-w", op, "INPUT", "-s", gw, "-m", "comment", "--comment", "kubesplit-partition", "-j", "DROP"},
		{"iptables", "-w", op, "OUTPUT", "-d", gw, "-m", "comment", "--comment", "kubesplit-partition", "-j", "DROP"},
	}
}

// Partition cuts a node off the tunnel gateway (and so from the control
// plane) until Heal. The node and its containers keep running.
func (c *Cluster) Partition(ctx context.Context, node string) error {
	if !c.isNode(node) {
		return fmt.Errorf("testcluster: Partition(%q): no such node; nodes are %s", node, strings.Join(c.Nodes(), ", "))
	}
	c.mu.Lock()
	already := c.partition[node]
	c.partition[node] = true
	c.mu.Unlock()
	if already {
		return nil
	}
	c.opts.logf("testcluster %s: partitioning %s from the gateway", c.ID, node)
	for _, r := range c.partitionRules("-I") {
		if _, err := c.exec(ctx, node, r...); err != nil {
			return fmt.Errorf("testcluster: partitioning %s: %w", node, err)
		}
	}
	return nil
}

// Heal undoes Partition. It returns at once; the node reconnects by itself
// (wait for it with WaitNodeReady).
func (c *Cluster) Heal(ctx context.Context, node string) error {
	c.mu.Lock()
	was := c.partition[node]
	delete(c.partition, node)
	c.mu.Unlock()
	if !was {
		return fmt.Errorf("testcluster: Heal(%q): the node is not partitioned", node)
	}
	c.opts.logf("testcluster %s: healing %s", c.ID, node)
	for _, r := range c.partitionRules("-D") {
		if _, err := c.exec(ctx, node, r...); err != nil {
			return fmt.Errorf("testcluster: healing %s: %w", node, err)
		}
	}
	return nil
}

// WaitNodeReady waits until a node reports Ready with a heartbeat after since.
func (c *Cluster) WaitNodeReady(ctx context.Context, node string, since time.Time) error {
	if err := c.waitHeartbeat(ctx, node, since); err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	return nil
}

var unsafeFileChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// LoadImages copies images from the local Docker engine onto every node
// (containerd's k8s.io namespace), so pods can use them with
// imagePullPolicy IfNotPresent or Never; nodes added later get them too.
func (c *Cluster) LoadImages(ctx context.Context, images ...string) error {
	if len(images) == 0 {
		return errors.New("testcluster: LoadImages: no image named")
	}
	nodes := c.Nodes()
	if len(nodes) == 0 {
		return errors.New("testcluster: LoadImages: the cluster has no node")
	}
	for _, img := range images {
		if err := checkImage(ctx, c.docker, img); err != nil {
			return err
		}
	}
	archive, err := c.saveImages(ctx, images)
	if err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	defer os.Remove(archive)
	sorted := slices.Clone(images)
	slices.Sort(sorted)
	file := unsafeFileChars.ReplaceAllString(strings.Join(sorted, "_"), "_")
	if len(file) > 100 { // file names end at 255 bytes
		sum := sha256.Sum256([]byte(file))
		file = file[:80] + "-" + hex.EncodeToString(sum[:8])
	}
	file = nodeImagesDir + "/" + file + ".tar"
	// the images volume is shared by the nodes: one copy, then every node imports it
	m := c.member(nodes[0])
	if err := m.ctr.CopyFileToContainer(ctx, archive, file, 0o644); err != nil {
		return fmt.Errorf("testcluster: copying images to %s: %w", nodes[0], err)
	}
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.exec(ctx, n, "ctr", "-n", "k8s.io", "images", "import", file); err != nil {
				errs[i] = fmt.Errorf("testcluster: importing images on %s: %w", n, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Logs returns a role's or node's container output (for a node: the agent's
// and, through it, the kubelet's and containerd's).
func (c *Cluster) Logs(ctx context.Context, name string) (string, error) {
	m := c.member(name)
	if m == nil {
		return "", fmt.Errorf("testcluster: Logs(%q): no such role or node", name)
	}
	rc, err := m.ctr.Logs(ctx)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return string(b), err
}

// logTails is the end of every member's log, for error messages.
func (c *Cluster) logTails(ctx context.Context) string {
	c.mu.Lock()
	names := make([]string, 0, len(c.members))
	for n := range c.members {
		names = append(names, n)
	}
	c.mu.Unlock()
	slices.Sort(names)
	var b strings.Builder
	for _, n := range names {
		logs, err := c.Logs(ctx, n)
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "\n---- %s (log end) ----\n%s", n, tail(logs, 25))
	}
	return b.String()
}

// Terminate removes every container, network and volume of the cluster and
// the cgroups its nodes' kubelets left on the host. Safe to call twice.
func (c *Cluster) Terminate(ctx context.Context) error {
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		return nil
	}
	c.done = true
	members := make([]*member, 0, len(c.members))
	for _, m := range c.members {
		members = append(members, m)
	}
	c.members = map[string]*member{}
	cgroups := slices.Clone(c.cgroups)
	c.mu.Unlock()
	defer unregister(c)
	c.opts.logf("testcluster %s: terminating", c.ID)

	errs := make([]error, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// a node's processes may take their time over SIGTERM: no need here
			errs[i] = m.ctr.Terminate(ctx, testcontainers.StopTimeout(0))
		}()
	}
	wg.Wait()
	for _, n := range []string{c.edge, c.control} {
		if n == "" {
			continue
		}
		if _, err := c.docker.NetworkRemove(ctx, n, client.NetworkRemoveOptions{}); err != nil {
			errs = append(errs, fmt.Errorf("removing network %s: %w", n, err))
		}
	}
	for _, v := range c.volumes {
		if _, err := c.docker.VolumeRemove(ctx, v, client.VolumeRemoveOptions{Force: true}); err != nil {
			errs = append(errs, fmt.Errorf("removing volume %s: %w", v, err))
		}
	}
	for _, cg := range cgroups {
		removeCgroups(strings.TrimPrefix(cg, "/"))
	}
	return errors.Join(errs...)
}

// Cleanup terminates c when t ends; if t failed, it first logs the end of
// every role's and node's log. With KUBESPLIT_KEEP=1 in the environment the
// cluster is left running for a look (its admin kubeconfig is written next
// to the test's temp files and named in the log).
func Cleanup(t testing.TB, c *Cluster) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if t.Failed() {
			t.Logf("testcluster %s: logs%s", c.ID, c.logTails(ctx))
		}
		if os.Getenv("KUBESPLIT_KEEP") != "" {
			path := filepath.Join(os.TempDir(), "testcluster-"+c.ID+".kubeconfig")
			_ = c.WriteKubeconfig(path)
			t.Logf("KUBESPLIT_KEEP: cluster %s left running; KUBECONFIG=%s", c.ID, path)
			unregister(c)
			return
		}
		if err := c.Terminate(ctx); err != nil {
			t.Errorf("testcluster: terminating %s: %v", c.ID, err)
		}
	})
}
