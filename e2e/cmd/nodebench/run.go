package main

import (
	"context"
	"fmt"
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
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/e2e/dockercluster"
	"github.com/kubesplit/kubesplit/e2e/gatewayview"
)

// result is what a run measured; a phase not run leaves its fields out.
type result struct {
	Phases             []string           `json:"phases"`
	PerDial            bool               `json:"per_dial_egress_compared"`
	GatewayCPUShares   int                `json:"gateway_cpu_shares,omitempty"` // in effect: the role's own or -gateway-cpu-shares (0: Docker's default, 1024)
	Pods               int                `json:"pods,omitempty"`
	PodStartupP50Ms    float64            `json:"pod_startup_p50_ms,omitempty"`
	PodStartupP99Ms    float64            `json:"pod_startup_p99_ms,omitempty"`
	PodStartupMaxMs    float64            `json:"pod_startup_max_ms,omitempty"`
	PodStartupSeqP50Ms float64            `json:"pod_startup_one_at_a_time_p50_ms,omitempty"`
	PodStartupSeqP99Ms float64            `json:"pod_startup_one_at_a_time_p99_ms,omitempty"`
	AgentRSSMiB        map[string]float64 `json:"node_agent_idle_rss_mib,omitempty"`
	AgentRSSTotalMiB   float64            `json:"node_agent_idle_rss_total_mib,omitempty"`
	Execs              int                `json:"execs,omitempty"`
	ExecTunnelP50Ms    float64            `json:"exec_via_apiserver_and_tunnel_p50_ms,omitempty"`
	ExecTunnelP99Ms    float64            `json:"exec_via_apiserver_and_tunnel_p99_ms,omitempty"`
	ExecNoTunnelP50Ms  float64            `json:"exec_via_apiserver_with_a_route_to_the_node_p50_ms,omitempty"`
	ExecNoTunnelP99Ms  float64            `json:"exec_via_apiserver_with_a_route_to_the_node_p99_ms,omitempty"`
	ExecOverheadP50Ms  float64            `json:"exec_tunnel_overhead_p50_ms,omitempty"`
	// the median of the paired differences (each exec minus the baseline's next to it)
	ExecOverheadPairedMs float64 `json:"exec_tunnel_overhead_paired_median_ms,omitempty"`
	// -per-dial: two fresh tunneled apiservers, with the egress relay and with
	// a new mTLS connection to the gateway per dial; overheads against the
	// routed baseline and relay minus per-dial (below 0: the relay is
	// faster), each the median of paired differences
	ExecRelayP50Ms                float64 `json:"exec_via_fresh_apiserver_egress_relay_p50_ms,omitempty"`
	ExecRelayP99Ms                float64 `json:"exec_via_fresh_apiserver_egress_relay_p99_ms,omitempty"`
	ExecPerDialP50Ms              float64 `json:"exec_via_fresh_apiserver_per_dial_egress_p50_ms,omitempty"`
	ExecPerDialP99Ms              float64 `json:"exec_via_fresh_apiserver_per_dial_egress_p99_ms,omitempty"`
	ExecRelayOverheadPairedMs     float64 `json:"exec_egress_relay_overhead_paired_median_ms,omitempty"`
	ExecPerDialOverheadPairedMs   float64 `json:"exec_per_dial_egress_overhead_paired_median_ms,omitempty"`
	ExecRelayMinusPerDialPairedMs float64 `json:"exec_relay_minus_per_dial_paired_median_ms,omitempty"`
	// the egress dials (to the CONNECT's 200) of the execs, from each
	// tunneled apiserver's own metric: the cluster's, the relay's and the
	// per-dial one's (a mean is moved by a few slow dials: the share under
	// 5 ms says more)
	ExecDialTunnel     *dialResult    `json:"exec_egress_dials,omitempty"`
	ExecDialRelay      *dialResult    `json:"exec_egress_dials_relay,omitempty"`
	ExecDialPerDial    *dialResult    `json:"exec_egress_dials_per_dial,omitempty"`
	ExecDirectP50Ms    float64        `json:"exec_direct_to_kubelet_p50_ms,omitempty"`
	ExecDirectP99Ms    float64        `json:"exec_direct_to_kubelet_p99_ms,omitempty"`
	Webhook            *webhookResult `json:"webhook,omitempty"`
	AddonMemory        []podMemory    `json:"kube_system_pods_idle_memory,omitempty"`
	ReconnectS         []float64      `json:"tunnel_reconnect_after_gateway_restart_s,omitempty"`
	ReconnectMedianS   float64        `json:"tunnel_reconnect_median_s,omitempty"`
	ClusterStartS      float64        `json:"cluster_start_to_nodes_ready_s"`
	GatewayRestartRuns int            `json:"gateway_restarts,omitempty"`
}

// bench is one run's cluster and what its phases share.
type bench struct {
	c     *dockercluster.Cluster
	tb    *benchTB
	image string // testapp, as the nodes know it
	// apiservers added beside the cluster's (apiservers.go), by name, each
	// started by the first phase that needs it
	apis map[string]*rest.Config
}

func run(tb *benchTB, o options) (*result, error) {
	r := &result{Phases: o.only, PerDial: o.perDial}
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
	if o.gatewayShares != 0 {
		if _, err := dockercluster.Docker(ctx, "update", "--cpu-shares", strconv.Itoa(o.gatewayShares), c.Name("tunnel-gateway")); err != nil {
			return nil, err
		}
	}
	// the weight in effect (the role's own, roles.Role.CPUShares, unless overridden)
	shares, err := dockercluster.Docker(ctx, "inspect", "-f", "{{.HostConfig.CpuShares}}", c.Name("tunnel-gateway"))
	if err != nil {
		return nil, err
	}
	if r.GatewayCPUShares, err = strconv.Atoi(strings.TrimSpace(shares)); err != nil {
		return nil, fmt.Errorf("the gateway's CPU shares %q: %w", shares, err)
	}
	b := &bench{c: c, tb: tb, apis: map[string]*rest.Config{}, image: "docker.io/kubesplit/testapp:" + dockercluster.DefaultTag()}

	if o.has("startup") {
		r.Pods = o.pods
		// create → Running seen by a watch: one at a time, then a burst
		seq, err := podStartup(ctx, c, b.image, "seq", o.pods, false)
		if err != nil {
			return nil, err
		}
		r.PodStartupSeqP50Ms, r.PodStartupSeqP99Ms = pct(seq, 50), pct(seq, 99)
		_ = c.Client.CoreV1().Pods("default").DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "bench=seq"})
		lat, err := podStartup(ctx, c, b.image, "startup", o.pods, true)
		if err != nil {
			return nil, err
		}
		r.PodStartupP50Ms, r.PodStartupP99Ms, r.PodStartupMaxMs = pct(lat, 50), pct(lat, 99), pct(lat, 100)
	}
	if o.has("exec") {
		if err := b.execPhase(ctx, r, o.execs, o.perDial); err != nil {
			return nil, err
		}
	}
	if o.has("webhook") {
		w, err := b.webhookPhase(ctx, o.webhooks, o.perDial)
		if err != nil {
			return nil, fmt.Errorf("webhook phase: %w", err)
		}
		r.Webhook = w
	}
	if o.has("memory") {
		_ = c.Client.CoreV1().Pods("default").DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "bench=startup"})
		lb, err := b.loadBalancer(ctx) // so that a ServiceLB forwarder runs
		if err != nil {
			return nil, err
		}
		time.Sleep(o.settle)
		if err := agentRSS(c, r); err != nil {
			return nil, err
		}
		if r.AddonMemory, err = b.kubeSystemMemory(ctx); err != nil {
			return nil, err
		}
		lb()
	}
	if o.has("restarts") {
		r.GatewayRestartRuns = o.restarts
		if err := gatewayRestarts(ctx, c, r, o.restarts); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// agentRSS reads the idle RSS of node-1's agent (kubelet, kube-proxy,
// overlay, tunnel), containerd and supervisor.
func agentRSS(c *dockercluster.Cluster, r *result) error {
	r.AgentRSSMiB = map[string]float64{}
	for name, pattern := range map[string]string{"agent (kubelet+kube-proxy+overlay+tunnel)": "[k]ubesplit-node agent", "containerd": "[b]in/containerd --config", "supervisor": "[b]in/kubesplit-node-supervisor"} {
		// ([k]… keeps pgrep from matching this shell's own command line)
		out, err := c.Exec("node-1", "sh", "-c", "for p in $(pgrep -f '"+pattern+"'); do grep VmRSS /proc/$p/status; done")
		if err != nil {
			return err
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
	return nil
}

// gatewayRestarts times the tunnels coming back after `docker restart` of the gateway.
func gatewayRestarts(ctx context.Context, c *dockercluster.Cluster, r *result, n int) error {
	for range n {
		issued := time.Now()
		if _, err := dockercluster.Docker(ctx, "restart", "-t", "0", c.Name("tunnel-gateway")); err != nil {
			return err
		}
		gw, err := gatewayview.New(c.Kubeconfig, c.IP("tunnel-gateway", c.Control)+":8131")
		if err != nil {
			return err
		}
		deadline := time.Now().Add(time.Minute)
		for {
			if n, _ := connectedSince(gw, issued); n == 2 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("tunnels not back within a minute of the gateway restart")
			}
			time.Sleep(50 * time.Millisecond)
		}
		r.ReconnectS = append(r.ReconnectS, time.Since(issued).Seconds())
		time.Sleep(2 * time.Second)
	}
	r.ReconnectMedianS = pct(r.ReconnectS, 50)
	return nil
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

func waitNode(ctx context.Context, c *dockercluster.Cluster, name string) error {
	deadline := time.Now().Add(3 * time.Minute)
	state := "not registered"
	for time.Now().Before(deadline) {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			state = err.Error()
		} else {
			var ready bool
			if ready, state = dockercluster.NodeReady(n); ready {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	// what the node logged last (the cluster is removed when nodebench ends)
	return fmt.Errorf("node %s not Ready within 3m (%s); %s", name, state, c.Diagnose(name, 12))
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

// interleave calls each of fns n times, round robin, so that every path sees
// the same machine; each fn returns its own round trip in milliseconds.
func interleave(n int, fns ...func() (float64, error)) ([][]float64, error) {
	out := make([][]float64, len(fns))
	for range n {
		for i, fn := range fns {
			ms, err := fn()
			if err != nil {
				return nil, err
			}
			out[i] = append(out[i], ms)
		}
	}
	return out, nil
}

// pairedMedian is the median of a[i]-b[i]: of samples taken next to each
// other (interleave), so that load that comes and goes during a run falls
// on both sides of each difference.
func pairedMedian(a, b []float64) float64 {
	d := make([]float64, min(len(a), len(b)))
	for i := range d {
		d[i] = a[i] - b[i]
	}
	return pct(d, 50)
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

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }

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
