// Command nodebench measures the node side on a containerised cluster (two
// nodes behind the tunnel gateway, as the node tests run it): pod startup
// latency for a burst of pods with the image preloaded, the node agent's idle
// RSS, exec round trips through the apiserver and the tunnel against exec
// straight to the kubelet (the baseline, same run), and how long tunnels take
// to come back after the gateway restarts. It prints a table and writes JSON
// under results/.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/e2e/dockercluster"
	"github.com/kubesplit/kubesplit/e2e/gatewayview"
	"github.com/kubesplit/kubesplit/pkg/layout"
)

type result struct {
	Pods               int                `json:"pods"`
	PodStartupP50Ms    float64            `json:"pod_startup_p50_ms"`
	PodStartupP99Ms    float64            `json:"pod_startup_p99_ms"`
	PodStartupMaxMs    float64            `json:"pod_startup_max_ms"`
	PodStartupSeqP50Ms float64            `json:"pod_startup_one_at_a_time_p50_ms"`
	PodStartupSeqP99Ms float64            `json:"pod_startup_one_at_a_time_p99_ms"`
	AgentRSSMiB        map[string]float64 `json:"node_agent_idle_rss_mib"`
	AgentRSSTotalMiB   float64            `json:"node_agent_idle_rss_total_mib"`
	Execs              int                `json:"execs"`
	ExecTunnelP50Ms    float64            `json:"exec_via_apiserver_and_tunnel_p50_ms"`
	ExecTunnelP99Ms    float64            `json:"exec_via_apiserver_and_tunnel_p99_ms"`
	ExecNoTunnelP50Ms  float64            `json:"exec_via_apiserver_with_a_route_to_the_node_p50_ms"`
	ExecNoTunnelP99Ms  float64            `json:"exec_via_apiserver_with_a_route_to_the_node_p99_ms"`
	ExecDirectP50Ms    float64            `json:"exec_direct_to_kubelet_p50_ms"`
	ExecDirectP99Ms    float64            `json:"exec_direct_to_kubelet_p99_ms"`
	ReconnectS         []float64          `json:"tunnel_reconnect_after_gateway_restart_s"`
	ReconnectMedianS   float64            `json:"tunnel_reconnect_median_s"`
	ClusterStartS      float64            `json:"cluster_start_to_nodes_ready_s"`
	GatewayRestartRuns int                `json:"gateway_restarts"`
}

func main() {
	pods := flag.Int("pods", 20, "pods in the startup burst")
	execs := flag.Int("execs", 100, "exec round trips per path")
	restarts := flag.Int("gateway-restarts", 3, "gateway restarts timed")
	settle := flag.Duration("settle", 20*time.Second, "idle time before reading RSS")
	out := flag.String("out", "results", "folder for the JSON results")
	flag.Parse()

	tb := &benchTB{}
	defer tb.cleanup()
	r, err := run(tb, *pods, *execs, *restarts, *settle)
	if err != nil {
		tb.cleanup()
		fmt.Fprintln(os.Stderr, "nodebench:", err)
		os.Exit(1)
	}
	printTable(r)
	if err := os.MkdirAll(*out, 0o755); err == nil {
		name := filepath.Join(*out, "nodes-"+time.Now().UTC().Format("20060102T150405Z")+".json")
		b, _ := json.MarshalIndent(r, "", "  ")
		if err := os.WriteFile(name, b, 0o644); err == nil {
			fmt.Println("results:", name)
		}
	}
}

func run(tb *benchTB, nPods, nExec, nRestarts int, settle time.Duration) (*result, error) {
	r := &result{Pods: nPods, Execs: nExec, GatewayRestartRuns: nRestarts, AgentRSSMiB: map[string]float64{}}
	images := tb.TempDir()
	ctx := context.Background()
	if _, err := dockercluster.Docker(ctx, "save", "-o", filepath.Join(images, "testapp.tar"), "kubesplit/testapp:"+dockercluster.DefaultTag()); err != nil {
		return nil, err
	}
	start := time.Now()
	// node-1's kubelet also listens on its node IP, only for the direct-exec baseline
	c := dockercluster.Start(tb, dockercluster.Options{Nodes: 2, NodeImages: images, NodeArgs: []string{"--kubelet-address", "0.0.0.0"}})
	for _, n := range c.Nodes() {
		if err := waitNode(ctx, c, n); err != nil {
			return nil, err
		}
	}
	r.ClusterStartS = time.Since(start).Seconds()
	image := "docker.io/kubesplit/testapp:" + dockercluster.DefaultTag()

	// ---- pod startup, create → Running seen by a watch: one at a time, then a burst ----
	seq, err := podStartup(ctx, c, image, "seq", nPods, false)
	if err != nil {
		return nil, err
	}
	r.PodStartupSeqP50Ms, r.PodStartupSeqP99Ms = pct(seq, 50), pct(seq, 99)
	_ = c.Client.CoreV1().Pods("default").DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "bench=seq"})
	lat, err := podStartup(ctx, c, image, "startup", nPods, true)
	if err != nil {
		return nil, err
	}
	r.PodStartupP50Ms, r.PodStartupP99Ms, r.PodStartupMaxMs = pct(lat, 50), pct(lat, 99), pct(lat, 100)

	// ---- exec round trips: via apiserver + gateway + tunnel, and straight to the kubelet ----
	pod, err := c.Client.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "exec-target"},
		Spec: corev1.PodSpec{NodeName: "node-1", TerminationGracePeriodSeconds: ptr.To(int64(1)), Containers: []corev1.Container{{
			Name: "app", Image: image, ImagePullPolicy: corev1.PullNever, Args: []string{"sleep"}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		if pod, err = c.Client.CoreV1().Pods("default").Get(ctx, pod.Name, metav1.GetOptions{}); err == nil && pod.Status.Phase == corev1.PodRunning {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("exec-target pod not Running")
		}
	}
	// execVia execs in the pod through the apiserver that cfg points at
	execVia := func(cfg *rest.Config) execFn {
		return func() (*remotecommand.StreamOptions, remotecommand.Executor, error) {
			req := c.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace("default").Name(pod.Name).SubResource("exec").
				VersionedParams(&corev1.PodExecOptions{Container: "app", Command: []string{"/testapp", "exit", "0"}, Stdout: true, Stderr: true}, scheme.ParameterCodec)
			u := *req.URL()
			u.Host = strings.TrimPrefix(cfg.Host, "https://")
			ex, err := remotecommand.NewSPDYExecutor(cfg, "POST", &u)
			return &remotecommand.StreamOptions{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}}, ex, err
		}
	}
	viaAPI := execVia(c.Config)
	d := layout.Dir(c.DataDir)
	kubeletCfg := &rest.Config{Host: "https://" + c.IP("node-1", c.Edge) + ":10250", TLSClientConfig: rest.TLSClientConfig{
		CAFile: d.ClusterCA().Cert, CertFile: d.APIServerKubeletClient().Cert, KeyFile: d.APIServerKubeletClient().Key}}
	direct := func() (*remotecommand.StreamOptions, remotecommand.Executor, error) { // no apiserver at all
		u, _ := url.Parse(kubeletCfg.Host + "/exec/default/" + pod.Name + "/app?command=/testapp&command=exit&command=0&output=1&error=1")
		ex, err := remotecommand.NewSPDYExecutor(kubeletCfg, "POST", u)
		return &remotecommand.StreamOptions{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}}, ex, err
	}
	// the same exec through a second apiserver that has a route to the nodes
	// and no egress selector: the difference to viaAPI is the tunnel's cost
	direct0, err := directAPIServer(c)
	if err != nil {
		return nil, err
	}
	viaDirectAPI := execVia(direct0)
	// interleaved, so that both paths see the same machine
	tun, noTun, err := timeExecsInterleaved(nExec, viaAPI, viaDirectAPI)
	if err != nil {
		return nil, fmt.Errorf("exec through the apiservers: %w", err)
	}
	r.ExecTunnelP50Ms, r.ExecTunnelP99Ms = pct(tun, 50), pct(tun, 99)
	r.ExecNoTunnelP50Ms, r.ExecNoTunnelP99Ms = pct(noTun, 50), pct(noTun, 99)
	if r.ExecDirectP50Ms, r.ExecDirectP99Ms, err = timeExecs(nExec, direct); err != nil {
		return nil, fmt.Errorf("exec straight to the kubelet: %w", err)
	}

	// ---- idle RSS of the node agent (kubelet, kube-proxy, overlay, tunnel) and containerd ----
	_ = c.Client.CoreV1().Pods("default").DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "bench=startup"})
	time.Sleep(settle)
	for name, pattern := range map[string]string{"agent (kubelet+kube-proxy+overlay+tunnel)": "[k]ubesplit-node agent", "containerd": "[b]in/containerd --config", "supervisor": "[b]in/kubesplit-node-supervisor"} {
		// ([k]… keeps pgrep from matching this shell's own command line)
		out, err := c.Exec("node-1", "sh", "-c", "for p in $(pgrep -f '"+pattern+"'); do grep VmRSS /proc/$p/status; done")
		if err != nil {
			return nil, err
		}
		kb := 0.0
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) >= 2 {
				v, _ := strconv.ParseFloat(f[1], 64)
				kb += v
			}
		}
		r.AgentRSSMiB[name] = kb / 1024
		r.AgentRSSTotalMiB += kb / 1024
	}

	// ---- tunnels back after a gateway restart ----
	for range nRestarts {
		issued := time.Now()
		if _, err := dockercluster.Docker(ctx, "restart", "-t", "0", c.Name("tunnel-gateway")); err != nil {
			return nil, err
		}
		gw, err := gatewayview.New(c.Kubeconfig, c.IP("tunnel-gateway", c.Control)+":8131")
		if err != nil {
			return nil, err
		}
		deadline := time.Now().Add(time.Minute)
		for {
			if n, _ := connectedSince(gw, issued); n == 2 {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("tunnels not back within a minute of the gateway restart")
			}
			time.Sleep(50 * time.Millisecond)
		}
		r.ReconnectS = append(r.ReconnectS, time.Since(issued).Seconds())
		time.Sleep(2 * time.Second)
	}
	r.ReconnectMedianS = pct(r.ReconnectS, 50)
	return r, nil
}

// podStartup creates n pods and returns each one's create → Running time as
// seen by a watch. burst creates them all at once; otherwise one at a time,
// each after the previous one runs.
func podStartup(ctx context.Context, c *dockercluster.Cluster, image, label string, n int, burst bool) ([]float64, error) {
	w, err := c.Client.CoreV1().Pods("default").Watch(ctx, metav1.ListOptions{LabelSelector: "bench=" + label})
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	created := map[string]time.Time{}
	create := func(i int) error {
		name := fmt.Sprintf("%s-%02d", label, i)
		created[name] = time.Now()
		_, err := c.Client.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"bench": label}},
			Spec: corev1.PodSpec{TerminationGracePeriodSeconds: ptr.To(int64(1)), Containers: []corev1.Container{{
				Name: "app", Image: image, ImagePullPolicy: corev1.PullNever, Args: []string{"sleep"}}}},
		}, metav1.CreateOptions{})
		return err
	}
	var lat []float64
	running := map[string]bool{}
	wait := func(want int) error {
		timeout := time.After(3 * time.Minute)
		for len(running) < want {
			select {
			case ev := <-w.ResultChan():
				p, ok := ev.Object.(*corev1.Pod)
				if !ok || ev.Type == watch.Deleted || running[p.Name] || p.Status.Phase != corev1.PodRunning {
					continue
				}
				running[p.Name] = true
				lat = append(lat, float64(time.Since(created[p.Name]).Microseconds())/1000)
			case <-timeout:
				return fmt.Errorf("only %d of %d %s pods Running after 3 minutes", len(running), want, label)
			}
		}
		return nil
	}
	for i := range n {
		if err := create(i); err != nil {
			return nil, err
		}
		if !burst {
			if err := wait(i + 1); err != nil {
				return nil, err
			}
		}
	}
	return lat, wait(n)
}

// directAPIServer starts a second apiserver on both networks, without the
// egress selector (it dials kubelets directly), and returns a config for it.
func directAPIServer(c *dockercluster.Cluster) (*rest.Config, error) {
	ctx := context.Background()
	name := c.Name("apiserver-direct")
	if _, err := dockercluster.Docker(ctx, "run", "-d", "--name", name, "--label", "kubesplit.test="+c.ID,
		"--network", c.Control, "-v", c.DataDir+":/data", "kubesplit/apiserver:"+dockercluster.DefaultTag(),
		"--data-dir", "/data", "--datastore-endpoint", "https://datastore:2379", "--bind-address", "0.0.0.0", "--secure-port", "6443"); err != nil {
		return nil, err
	}
	if _, err := dockercluster.Docker(ctx, "network", "connect", c.Edge, name); err != nil {
		return nil, err
	}
	ip, err := dockercluster.Docker(ctx, "inspect", "-f", `{{(index .NetworkSettings.Networks "`+c.Control+`").IPAddress}}`, name)
	if err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(c.Config)
	cfg.Host = "https://" + ip + ":6443"
	deadline := time.Now().Add(90 * time.Second)
	for {
		cl := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: mustTLS(cfg)}}
		resp, err := cl.Get(cfg.Host + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return cfg, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("second apiserver not ready: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func mustTLS(cfg *rest.Config) *tls.Config {
	t, err := rest.TLSConfigFor(cfg)
	if err != nil {
		panic(err)
	}
	return t
}

func waitNode(ctx context.Context, c *dockercluster.Cluster, name string) error {
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					return nil
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("node %s not Ready", name)
}

// connectedSince counts nodes whose tunnel (re)connected after t, from the gateway's /debug/tunnels.
func connectedSince(gw *gatewayview.Client, t time.Time) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	stats, err := gw.Tunnels(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range stats {
		if s.Connected && s.Since.After(t) {
			n++
		}
	}
	return n, nil
}

type execFn func() (*remotecommand.StreamOptions, remotecommand.Executor, error)

// execOnce times one exec round trip in milliseconds.
func execOnce(mk execFn) (float64, error) {
	opts, ex, err := mk()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ex.StreamWithContext(ctx, *opts); err != nil {
		return 0, err
	}
	return float64(time.Since(start).Microseconds()) / 1000, nil
}

func timeExecs(n int, mk execFn) (p50, p99 float64, err error) {
	var lat []float64
	for range n {
		ms, err := execOnce(mk)
		if err != nil {
			return 0, 0, err
		}
		lat = append(lat, ms)
	}
	return pct(lat, 50), pct(lat, 99), nil
}

func timeExecsInterleaved(n int, a, b execFn) (la, lb []float64, err error) {
	for range n {
		for _, p := range []struct {
			mk  execFn
			out *[]float64
		}{{a, &la}, {b, &lb}} {
			ms, err := execOnce(p.mk)
			if err != nil {
				return nil, nil, err
			}
			*p.out = append(*p.out, ms)
		}
	}
	return la, lb, nil
}

func pct(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

func printTable(r *result) {
	fmt.Printf("\nkubesplit node benchmarks (2 node containers behind the tunnel gateway, this machine)\n\n")
	fmt.Printf("| %-58s | %-14s | %-10s |\n", "measure", "value", "target")
	fmt.Printf("|%s|%s|%s|\n", strings.Repeat("-", 60), strings.Repeat("-", 16), strings.Repeat("-", 12))
	row := func(m, v, t string) { fmt.Printf("| %-58s | %-14s | %-10s |\n", m, v, t) }
	row(fmt.Sprintf("pod startup, create → Running, %d pods one at a time, p50", r.Pods), fmt.Sprintf("%.0f ms", r.PodStartupSeqP50Ms), "< 1000 ms")
	row("  … p99", fmt.Sprintf("%.0f ms", r.PodStartupSeqP99Ms), "< 2000 ms")
	row(fmt.Sprintf("pod startup, %d pods created in a burst, p50", r.Pods), fmt.Sprintf("%.0f ms", r.PodStartupP50Ms), "")
	row("  … p99", fmt.Sprintf("%.0f ms", r.PodStartupP99Ms), "")
	for k, v := range r.AgentRSSMiB {
		row("node idle RSS: "+k, fmt.Sprintf("%.0f MiB", v), "")
	}
	row("node idle RSS total", fmt.Sprintf("%.0f MiB", r.AgentRSSTotalMiB), "< 200 MiB")
	row(fmt.Sprintf("exec round trip via apiserver+gateway+tunnel, p50 (%d)", r.Execs), fmt.Sprintf("%.1f ms", r.ExecTunnelP50Ms), "")
	row("  … p99", fmt.Sprintf("%.1f ms", r.ExecTunnelP99Ms), "")
	row("exec via an apiserver with a route to the node (baseline), p50", fmt.Sprintf("%.1f ms", r.ExecNoTunnelP50Ms), "")
	row("  … p99", fmt.Sprintf("%.1f ms", r.ExecNoTunnelP99Ms), "")
	row("tunnel overhead per exec (p50 difference to the baseline)", fmt.Sprintf("%.1f ms", r.ExecTunnelP50Ms-r.ExecNoTunnelP50Ms), "< 5 ms")
	row("exec straight to the kubelet, no apiserver, p50", fmt.Sprintf("%.1f ms", r.ExecDirectP50Ms), "")
	row("  … p99", fmt.Sprintf("%.1f ms", r.ExecDirectP99Ms), "")
	row(fmt.Sprintf("tunnels back after gateway restart, median of %d", r.GatewayRestartRuns), fmt.Sprintf("%.2f s", r.ReconnectMedianS), "< 5 s")
	row("cluster start (containers) → both nodes Ready", fmt.Sprintf("%.1f s", r.ClusterStartS), "")
	fmt.Println()
}

// benchTB lets the test harness run outside `go test`.
type benchTB struct {
	testing.TB
	cleanups []func()
	failed   bool
}

func (b *benchTB) Helper()                 {}
func (b *benchTB) Logf(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
func (b *benchTB) Fatalf(f string, a ...any) {
	b.failed = true
	b.Logf(f, a...)
	b.cleanup()
	os.Exit(1)
}
func (b *benchTB) Fatal(a ...any)   { b.Fatalf("%s", fmt.Sprint(a...)) }
func (b *benchTB) Failed() bool     { return b.failed }
func (b *benchTB) Cleanup(f func()) { b.cleanups = append(b.cleanups, f) }
func (b *benchTB) TempDir() string {
	d, err := os.MkdirTemp("", "kubesplit-nodebench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}
func (b *benchTB) cleanup() {
	for i := len(b.cleanups) - 1; i >= 0; i-- {
		b.cleanups[i]()
	}
	b.cleanups = nil
}
