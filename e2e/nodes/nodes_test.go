// Package nodes drives real node containers (kubelet, containerd, runc,
// kube-proxy, the VXLAN overlay) behind the tunnel gateway, with kubectl and
// client-go, as a user would.
package nodes

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/e2e/dockercluster"
	"github.com/kubesplit/kubesplit/e2e/gatewayview"
)

var testapp = "docker.io/kubesplit/testapp:" + dockercluster.DefaultTag()

// nodeImages is a directory holding the testapp image tarball, mounted into every node.
func nodeImages(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := dockercluster.Docker(ctx, "save", "-o", filepath.Join(dir, "testapp.tar"), "kubesplit/testapp:"+dockercluster.DefaultTag()); err != nil {
		t.Fatalf("%v (run `make images`)", err)
	}
	return dir
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	dockercluster.WaitFor(t, what, timeout, cond)
}

// waitNodeReady waits for the node's Ready condition. When it does not come,
// the failure says the condition's reason and what the node container logged
// last, so that a CI log's tail shows why.
func waitNodeReady(t *testing.T, c *dockercluster.Cluster, name string, ready bool, timeout time.Duration) {
	t.Helper()
	what := fmt.Sprintf("node %s ready=%v", name, ready)
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), 500*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			if ctx.Err() == nil { // (the poll that meets the deadline fails for that alone)
				last = err
			}
			return false, nil
		}
		isReady, state := dockercluster.NodeReady(n)
		last = errors.New(state)
		return isReady == ready, nil
	})
	if err != nil {
		t.Fatalf("%s: not within %s (last state: %v); %s", what, timeout, last, c.Diagnose(name, 12))
	}
}

func testappDeployment(name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To(int64(2)),
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
						MaxSkew: 1, TopologyKey: corev1.LabelHostname, WhenUnsatisfiable: corev1.DoNotSchedule,
						LabelSelector: &metav1.LabelSelector{MatchLabels: labels},
					}},
					Containers: []corev1.Container{{
						Name: "app", Image: testapp, ImagePullPolicy: corev1.PullNever,
						Args:           []string{"serve", "--port", "8080"},
						Ports:          []corev1.ContainerPort{{ContainerPort: 8080}},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1},
					}},
				},
			},
		},
	}
}

// runningPods returns the Running, ready pods of the app by node.
func runningPods(ctx context.Context, c *dockercluster.Cluster, app string) (map[string][]corev1.Pod, error) {
	pods, err := c.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		return nil, err
	}
	out := map[string][]corev1.Pod{}
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			continue
		}
		ready := false
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				ready = true
			}
		}
		if ready {
			out[p.Spec.NodeName] = append(out[p.Spec.NodeName], p)
		}
	}
	return out, nil
}

func TestNodesBehindTheGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a containerised cluster; skipped with -short")
	}
	c := dockercluster.Start(t, dockercluster.Options{Nodes: 2, NodeImages: nodeImages(t)})
	ctx := context.Background()

	// ---- join: both nodes Ready ----
	for _, n := range c.Nodes() {
		waitNodeReady(t, c, n, true, 3*time.Minute)
	}

	// ---- a Deployment of 4 spreads over both nodes ----
	if _, err := c.Client.AppsV1().Deployments("default").Create(ctx, testappDeployment("web", 4), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var byNode map[string][]corev1.Pod
	waitFor(t, "4 web pods Running and ready on both nodes", 3*time.Minute, func(ctx context.Context) (bool, error) {
		var err error
		byNode, err = runningPods(ctx, c, "web")
		return err == nil && len(byNode["node-1"]) == 2 && len(byNode["node-2"]) == 2, err
	})
	p1, p2 := byNode["node-1"][0], byNode["node-2"][0]
	t.Logf("pods: %s on node-1 (%s), %s on node-2 (%s)", p1.Name, p1.Status.PodIP, p2.Name, p2.Status.PodIP)

	kubectl := func(args ...string) (string, error) {
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		return c.Kubectl(cctx, args...)
	}

	t.Run("pod to pod across nodes over VXLAN", func(t *testing.T) {
		out, err := kubectl("exec", p1.Name, "--", "/testapp", "get", "http://"+p2.Status.PodIP+":8080/")
		if err != nil || out != p2.Name {
			t.Fatalf("pod %s on node-1 fetching pod %s on node-2 by IP: %q, %v", p1.Name, p2.Name, out, err)
		}
		out, err = kubectl("exec", p2.Name, "--", "/testapp", "get", "http://"+p1.Status.PodIP+":8080/")
		if err != nil || out != p1.Name {
			t.Fatalf("pod %s on node-2 fetching pod %s on node-1 by IP: %q, %v", p2.Name, p1.Name, out, err)
		}
	})

	t.Run("ClusterIP Service", func(t *testing.T) {
		svc, err := c.Client.CoreV1().Services("default").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "web"},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
				Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// from a pod on node-1, the Service must lead to pods on both nodes
		seen := map[string]bool{}
		node := map[string]string{}
		for n, ps := range byNode {
			for _, p := range ps {
				node[p.Name] = n
			}
		}
		waitFor(t, "Service reaching pods on both nodes", 90*time.Second, func(context.Context) (bool, error) {
			out, err := kubectl("exec", p1.Name, "--", "/testapp", "get", "http://"+svc.Spec.ClusterIP+"/")
			if err != nil {
				return false, fmt.Errorf("%v: %s", err, out)
			}
			seen[node[out]] = true
			return seen["node-1"] && seen["node-2"], nil
		})
	})

	t.Run("apiserver has no route to the nodes", func(t *testing.T) {
		for _, n := range c.Nodes() {
			ip := c.IP(n, c.Edge)
			out, err := c.InNetns(ctx, "apiserver", "ip", "route", "get", ip)
			if err == nil || !(strings.Contains(out, "No route to host") || strings.Contains(out, "unreachable")) {
				t.Fatalf("apiserver's network namespace has a route to %s (%s): %s", n, ip, out)
			}
			// and nothing answers there: a TCP connection to the node's kubelet port fails
			out, err = c.InNetns(ctx, "apiserver", "timeout", "5", "bash", "-c", "echo > /dev/tcp/"+ip+"/10250")
			if err == nil {
				t.Fatalf("the apiserver's network namespace connected to %s:10250", ip)
			}
		}
	})

	checkKubelet := func(t *testing.T) {
		t.Helper()
		out, err := kubectl("logs", p2.Name)
		if err != nil || !strings.Contains(out, "testapp serving on :8080") {
			t.Fatalf("kubectl logs %s: %v\n%s", p2.Name, err, out)
		}
		out, err = kubectl("exec", p2.Name, "--", "/testapp", "echo", "hello", "tunnel")
		if err != nil || !strings.Contains(out, "hello tunnel") || !strings.Contains(out, "to-stderr") {
			t.Fatalf("kubectl exec echo: %v\n%s", err, out)
		}
		_, err = kubectl("exec", p2.Name, "--", "/testapp", "exit", "3")
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Fatalf("kubectl exec exit 3: want exit code 3, got %v", err)
		}
	}

	t.Run("logs exec port-forward through the tunnel", func(t *testing.T) {
		checkKubelet(t)
		pfCtx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		cmd := exec.CommandContext(pfCtx, filepath.Join(c.Bin, "kubectl"), "--kubeconfig", c.Kubeconfig,
			"port-forward", "pod/"+p2.Name, ":8080")
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		re := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) -> 8080`)
		sc := bufio.NewScanner(stdout)
		port := ""
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				port = m[1]
				break
			}
		}
		if port == "" {
			t.Fatal("kubectl port-forward printed no local port")
		}
		go func() { _, _ = io.Copy(io.Discard, stdout) }()
		resp, err := http.Get("http://127.0.0.1:" + port + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.TrimSpace(string(body)) != p2.Name {
			t.Fatalf("port-forward answered %q, want %q", body, p2.Name)
		}
	})

	t.Run("gateway killed and restarted: tunnels come back by themselves", func(t *testing.T) {
		agentPIDs := map[string]string{}
		for _, n := range c.Nodes() {
			agentPIDs[n], _ = c.Exec(n, "pgrep", "-f", "kubesplit-node agent")
		}
		start := time.Now()
		for _, cmd := range []string{"kill", "start"} {
			if _, err := dockercluster.Docker(ctx, cmd, c.Name("tunnel-gateway")); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, "kubectl logs through the new gateway", 60*time.Second, func(context.Context) (bool, error) {
			out, err := kubectl("logs", "--tail", "1", p2.Name)
			if err != nil {
				return false, fmt.Errorf("%v: %s", err, out)
			}
			return true, nil
		})
		t.Logf("kubelet reachable again %.1fs after the gateway was killed", time.Since(start).Seconds())
		checkKubelet(t)
		// the gateway's Prometheus metrics show both tunnels, per node
		// (served to cluster admins only, on the egress port; the health port has none)
		gw, err := gatewayview.New(c.Kubeconfig, c.IP("tunnel-gateway", c.Control)+":8131")
		if err != nil {
			t.Fatal(err)
		}
		if resp, err := http.Get("http://" + c.IP("tunnel-gateway", c.Control) + ":8133/metrics"); err != nil || resp.StatusCode != http.StatusNotFound {
			t.Fatalf("the gateway's plain-HTTP health port serves /metrics: %v %v", resp, err)
		}
		waitFor(t, "gateway metrics with both tunnels", 30*time.Second, func(ctx context.Context) (bool, error) {
			body, err := gw.Get(ctx, "/metrics")
			if err != nil {
				return false, err
			}
			m := string(body)
			return strings.Contains(m, "kubesplit_gateway_sessions_open 2") &&
				strings.Contains(m, `kubesplit_gateway_tunnel_connected{node="node-1"} 1`) &&
				strings.Contains(m, `kubesplit_gateway_dials_total{node="node-2"}`), nil
		})
		for _, n := range c.Nodes() {
			if pid, _ := c.Exec(n, "pgrep", "-f", "kubesplit-node agent"); pid != agentPIDs[n] {
				t.Fatalf("the agent on %s was restarted (pid %s -> %s); the tunnel should have reconnected by itself", n, agentPIDs[n], pid)
			}
		}
	})

	t.Run("agent restart keeps pods running", func(t *testing.T) {
		before := map[string]string{}
		for _, p := range byNode["node-1"] {
			before[p.Name] = p.Status.ContainerStatuses[0].ContainerID
		}
		old, _ := c.Exec("node-1", "pgrep", "-f", "kubesplit-node agent")
		if _, err := c.Exec("node-1", "pkill", "-KILL", "-f", "kubesplit-node agent"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the supervisor restarting the agent", 30*time.Second, func(context.Context) (bool, error) {
			pid, _ := c.Exec("node-1", "pgrep", "-f", "kubesplit-node agent")
			return pid != "" && pid != old, nil
		})
		// the kubelet reports the pods again, same containers, no restarts
		waitFor(t, "pods on node-1 unchanged after the agent restart", 90*time.Second, func(ctx context.Context) (bool, error) {
			for name, id := range before {
				p, err := c.Client.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					return false, err
				}
				cs := p.Status.ContainerStatuses
				if p.Status.Phase != corev1.PodRunning || len(cs) == 0 || cs[0].ContainerID != id || cs[0].RestartCount != 0 {
					return false, fmt.Errorf("pod %s: phase %s, containers %+v", name, p.Status.Phase, cs)
				}
			}
			return true, nil
		})
		waitNodeReady(t, c, "node-1", true, 60*time.Second)
		// the restarted kubelet serves again (through the new tunnel) within seconds
		waitFor(t, "exec into a node-1 pod after the agent restart", 60*time.Second, func(context.Context) (bool, error) {
			out, err := kubectl("exec", byNode["node-1"][0].Name, "--", "/testapp", "echo", "after-restart")
			if err != nil || !strings.Contains(out, "after-restart") {
				return false, fmt.Errorf("%v: %s", err, out)
			}
			return true, nil
		})
	})

	t.Run("bad join tokens are refused", func(t *testing.T) {
		good := c.Token
		parts := strings.Split(good, ".")
		// a pin of another CA
		wrongPin := strings.Join([]string{parts[0], strings.Repeat("ab", 32), parts[2], parts[3]}, ".")
		expired := c.NewToken("1s")
		revoked := c.NewToken("1h")
		revokedID := strings.Split(revoked, ".")[2]
		if out, err := c.Kubesplit("token", "revoke", "--kubeconfig", c.Kubeconfig, revokedID); err != nil {
			t.Fatalf("revoke: %v %s", err, out)
		}
		time.Sleep(2 * time.Second) // let the 1s token expire
		cases := []struct{ node, token, want string }{
			{"bad-pin", wrongPin, "does not match the join token's pin"},
			{"expired", expired, "the apiserver refused join token " + strings.Split(expired, ".")[2] + ": it is expired, revoked or wrong"},
			{"revoked", revoked, "the apiserver refused join token " + revokedID + ": it is expired, revoked or wrong"},
		}
		for _, tc := range cases {
			c.AddNode(tc.node, tc.token)
		}
		for _, tc := range cases {
			secret := strings.Split(tc.token, ".")[3]
			waitFor(t, tc.node+" refused", 90*time.Second, func(context.Context) (bool, error) {
				return strings.Contains(c.Logs(tc.node), tc.want), nil
			})
			logs := c.Logs(tc.node)
			if strings.Contains(logs, secret) {
				t.Fatalf("%s: the agent's log holds the token secret", tc.node)
			}
			if _, err := c.Client.CoreV1().Nodes().Get(ctx, tc.node, metav1.GetOptions{}); err == nil {
				t.Fatalf("%s joined the cluster", tc.node)
			}
			c.RemoveNode(tc.node)
		}
		for _, r := range []string{"apiserver", "tunnel-gateway"} {
			for _, tc := range cases {
				if strings.Contains(c.Logs(r), strings.Split(tc.token, ".")[3]) {
					t.Fatalf("the %s log holds a token secret", r)
				}
			}
		}
	})

	t.Run("a node certificate reaches no other kubelet", func(t *testing.T) {
		// (a symlink the kubelet rotates: read it through the container)
		pem, err := c.Exec("node-1", "cat", "/var/lib/kubesplit-node/pki/kubelet/kubelet-client-current.pem")
		if err != nil {
			t.Fatal(err)
		}
		cert, err := tls.X509KeyPair([]byte(pem), []byte(pem))
		if err != nil {
			t.Fatal(err)
		}
		caPEM, err := os.ReadFile(filepath.Join(c.DataDir, "pki", "ca.crt"))
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caPEM)
		gw := c.IP("tunnel-gateway", c.Edge)
		node2 := c.IP("node-2", c.Edge)
		// through the gateway's egress (the apiserver's door): refused for a node certificate
		conn, err := tls.Dial("tcp", net.JoinHostPort(gw, "8131"), &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: "tunnel-gateway"})
		if err == nil {
			fmt.Fprintf(conn, "CONNECT %s:10250 HTTP/1.1\r\nHost: %s:10250\r\n\r\n", node2, node2)
			resp, rerr := http.ReadResponse(bufio.NewReader(conn), nil)
			conn.Close()
			if rerr == nil && resp.StatusCode == http.StatusOK {
				t.Fatal("node-1's certificate opened a CONNECT to node-2's kubelet through the gateway")
			}
		}
		// directly: node-2's kubelet listens on loopback only
		if d, err := net.DialTimeout("tcp", net.JoinHostPort(node2, "10250"), 3*time.Second); err == nil {
			d.Close()
			t.Fatal("node-2's kubelet port is reachable on its node IP")
		}
	})

	t.Run("half-open tunnel is detected and redialled", func(t *testing.T) {
		// Drop every packet between node-1 and the gateway, without a reset:
		// both ends hold a connection that looks open but is dead.
		gw := c.IP("tunnel-gateway", c.Edge)
		// (the gateway container was restarted above: read its address now)
		rules := [][]string{{"INPUT", "-s", gw, "-j", "DROP"}, {"OUTPUT", "-d", gw, "-j", "DROP"}}
		for _, r := range rules {
			if out, err := c.Exec("node-1", append([]string{"iptables", "-w", "-I"}, r...)...); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
		}
		downs := strings.Count(c.Logs("node-1"), "tunnel down; redialling")
		cut := time.Now()
		waitFor(t, "node-1's agent noticing the dead tunnel", 90*time.Second, func(context.Context) (bool, error) {
			return strings.Count(c.Logs("node-1"), "tunnel down; redialling") > downs, nil
		})
		t.Logf("dead tunnel noticed within %.0fs", time.Since(cut).Seconds())
		for _, r := range rules {
			if out, err := c.Exec("node-1", append([]string{"iptables", "-w", "-D"}, r...)...); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
		}
		healed := time.Now()
		waitFor(t, "exec on node-1 after the path heals", 60*time.Second, func(context.Context) (bool, error) {
			out, err := kubectl("exec", byNode["node-1"][0].Name, "--", "/testapp", "echo", "healed")
			if err != nil || !strings.Contains(out, "healed") {
				return false, fmt.Errorf("%v: %s", err, out)
			}
			return true, nil
		})
		t.Logf("kubelet reachable %.1fs after the path healed", time.Since(healed).Seconds())
	})

	t.Run("stopped node goes NotReady; deleted node leaves no overlay entries", func(t *testing.T) {
		gw2 := ""
		waitFor(t, "node-1 has overlay entries for node-2", 30*time.Second, func(ctx context.Context) (bool, error) {
			n2, err := c.Client.CoreV1().Nodes().Get(ctx, "node-2", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			_, cidr, err := net.ParseCIDR(n2.Spec.PodCIDR)
			if err != nil {
				return false, err
			}
			gw2 = cidr.IP.String()
			e, err := overlayEntries(c, "node-1")
			return err == nil && strings.Contains(e.routes, n2.Spec.PodCIDR) && strings.Contains(e.neigh, gw2) &&
				strings.Contains(e.fdb, c.IP("node-2", c.Edge)), err
		})
		ip2 := c.IP("node-2", c.Edge)
		if _, err := dockercluster.Docker(ctx, "stop", "-t", "5", c.Name("node-2")); err != nil {
			t.Fatal(err)
		}
		waitNodeReady(t, c, "node-2", false, 2*time.Minute)
		c.RemoveNode("node-2")
		if err := c.Client.CoreV1().Nodes().Delete(ctx, "node-2", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "node-1's overlay entries for node-2 removed", 60*time.Second, func(context.Context) (bool, error) {
			e, err := overlayEntries(c, "node-1")
			if err != nil {
				return false, err
			}
			if strings.Contains(e.neigh, gw2) || (ip2 != "" && strings.Contains(e.fdb, ip2)) || strings.Contains(e.routes, gw2) {
				return false, fmt.Errorf("still there:\n%s\n%s\n%s", e.routes, e.neigh, e.fdb)
			}
			return true, nil
		})
	})
}

type entries struct{ routes, neigh, fdb string }

func overlayEntries(c *dockercluster.Cluster, node string) (entries, error) {
	var e entries
	var err error
	if e.routes, err = c.Exec(node, "ip", "-4", "route", "show", "dev", "ks-vxlan"); err != nil {
		return e, err
	}
	if e.neigh, err = c.Exec(node, "ip", "-4", "neigh", "show", "dev", "ks-vxlan"); err != nil {
		return e, err
	}
	e.fdb, err = c.Exec(node, "bridge", "fdb", "show", "dev", "ks-vxlan")
	return e, err
}
