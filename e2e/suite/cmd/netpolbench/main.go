// Command netpolbench measures NetworkPolicy enforcement on a one-node
// testcluster, at -sizes policies that all select one server pod (each
// allows every namespace on a port of its own, so every policy is a rule in
// the server's chain), beside the baseline of the same run: no policy.
//   - apply: a new policy created → the node's rules rewritten (the agent's
//     kubesplit_network_policy_sync_duration_seconds_count changes, watched
//     every 2 ms from a host-network pod on the node; wall clocks compared),
//     median of -trials;
//   - sync: the agent's own compile-and-load time (the histogram's sum
//     over its count across the trials);
//   - connect(): p50/p99 of -connects new TCP connections from a client pod
//     to the server (testapp dial-latency), whose allowance is the last rule.
//
// It prints a table and writes JSON under -out.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/e2e/suite/internal/benchstat"
	"github.com/kubesplit/kubesplit/e2e/suite/internal/kexec"
	"github.com/kubesplit/kubesplit/testcluster"
)

var (
	sizes    = flag.String("sizes", "0,100,1000", "policy counts to measure at (0 is the baseline: no policy)")
	trials   = flag.Int("trials", 10, "policies created per size for the apply time (the median is reported)")
	connects = flag.Int("connects", 2000, "connections per connect() series")
	out      = flag.String("out", "results", "directory for the JSON result")
)

const (
	ns         = "netpolbench"
	metricsURL = "http://127.0.0.1:10249/metrics" // kube-proxy's, in the agent: the legacy registry
	syncCount  = "kubesplit_network_policy_sync_duration_seconds_count"
	syncSum    = "kubesplit_network_policy_sync_duration_seconds_sum"
)

type row struct {
	Policies      int       `json:"policies"`
	ApplyMs       []float64 `json:"apply_ms"`
	MedianApplyMs float64   `json:"median_apply_ms"`
	MeanSyncMs    float64   `json:"mean_sync_ms"`
	ConnectP50ms  float64   `json:"connect_p50_ms"`
	ConnectP99ms  float64   `json:"connect_p99_ms"`
	ConnectErrors int       `json:"connect_errors"`
}

type result struct {
	When     string `json:"when"`
	Tag      string `json:"tag"`
	Trials   int    `json:"trials"`
	Connects int    `json:"connects"`
	Rows     []row  `json:"rows"`
}

var (
	tag string
	cfg *rest.Config
	cs  kubernetes.Interface
)

func main() {
	flag.Parse()
	tag = benchstat.Setup()
	var want []int
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 0 || n > 5000 {
			fail(fmt.Errorf("-sizes: %q is not a policy count from 0 to 5000", s))
		}
		want = append(want, n)
	}
	ctx := context.Background()
	c, err := testcluster.Run(ctx, testcluster.WithNodes(1))
	if err != nil {
		fail(err)
	}
	defer c.Terminate(ctx)
	if err := c.LoadImages(ctx, "kubesplit/testapp:"+tag); err != nil {
		fail(err)
	}
	cfg, cs = c.RESTConfig(), c.Client()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		fail(err)
	}
	server, err := startPod(ctx, "server", false, "/testapp", "serve")
	if err != nil {
		fail(err)
	}
	if _, err := startPod(ctx, "client", false, "/testapp", "sleep"); err != nil {
		fail(err)
	}
	if _, err := startPod(ctx, "watcher", true, "/testapp", "sleep"); err != nil {
		fail(err)
	}
	r := result{When: time.Now().UTC().Format(time.RFC3339), Tag: tag, Trials: *trials, Connects: *connects}
	have := 0
	for _, n := range want {
		// the client's allowance sorts after every other policy: its
		// connections walk the whole chain
		if n > 0 && have == 0 {
			if err := createPolicy(ctx, "zz-client", nil, &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}); err != nil {
				fail(err)
			}
		}
		for ; have < n; have++ {
			if err := createPolicy(ctx, fmt.Sprintf("p-%04d", have), ptr.To(int32(10000+have)), &metav1.LabelSelector{}); err != nil {
				fail(err)
			}
		}
		if n == 0 && have > 0 {
			fail(fmt.Errorf("-sizes must grow; 0 (the baseline) comes first"))
		}
		time.Sleep(2 * time.Second) // the burst of creations synced
		row := row{Policies: n}
		count0, sum0, err := syncTotals(ctx)
		if err != nil {
			fail(err)
		}
		for i := range *trials {
			ms, err := applyTime(ctx, fmt.Sprintf("trial-%d-%d", n, i))
			if err != nil {
				fail(fmt.Errorf("%d policies, trial %d: %w", n, i, err))
			}
			row.ApplyMs = append(row.ApplyMs, ms)
		}
		count1, sum1, err := syncTotals(ctx)
		if err != nil {
			fail(err)
		}
		if count1 > count0 {
			row.MeanSyncMs = benchstat.Round2((sum1 - sum0) / (count1 - count0) * 1000)
		}
		row.MedianApplyMs = benchstat.Round2(benchstat.Median(row.ApplyMs))
		lat, err := dialLatency(ctx, server.Status.PodIP+":8080")
		if err != nil {
			fail(err)
		}
		row.ConnectP50ms, row.ConnectP99ms, row.ConnectErrors = lat.P50ms, lat.P99ms, lat.Errors
		fmt.Fprintf(os.Stderr, "%d policies: apply %.1f ms (median), sync %.2f ms, connect p50 %.3f ms p99 %.3f ms\n",
			n, row.MedianApplyMs, row.MeanSyncMs, row.ConnectP50ms, row.ConnectP99ms)
		r.Rows = append(r.Rows, row)
	}

	fmt.Printf("\nNetworkPolicy on one node (%d trials, %d connections per size; row 0 is the baseline: no policy):\n", *trials, *connects)
	fmt.Println("| policies selecting the server | new policy → rules loaded, median ms | agent sync (compile + nft), mean ms | connect() p50 ms | connect() p99 ms |")
	fmt.Println("|---|---|---|---|---|")
	for _, x := range r.Rows {
		fmt.Printf("| %d | %.1f | %.2f | %.3f | %.3f |\n", x.Policies, x.MedianApplyMs, x.MeanSyncMs, x.ConnectP50ms, x.ConnectP99ms)
	}
	path, err := benchstat.WriteJSON(*out, "netpol", r)
	if err != nil {
		fail(err)
	}
	fmt.Println("wrote", path)
}

// startPod runs testapp pod name (label app=name) and waits until it runs.
func startPod(ctx context.Context, name string, hostNetwork bool, cmd ...string) (*corev1.Pod, error) {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{HostNetwork: hostNetwork, TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{Name: name, Image: "kubesplit/testapp:" + tag, ImagePullPolicy: corev1.PullNever, Command: cmd}}},
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, _ = cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		return p != nil && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "", nil
	})
	return p, err
}

// createPolicy makes a policy selecting the server that admits from every
// namespace on port (every port when nil), or from the pods of from.
func createPolicy(ctx context.Context, name string, port *int32, from *metav1.LabelSelector) error {
	rule := networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: from}}}
	if from.MatchLabels != nil {
		rule.From = []networkingv1.NetworkPolicyPeer{{PodSelector: from}}
	}
	if port != nil {
		rule.Ports = []networkingv1.NetworkPolicyPort{{Port: ptr.To(intstr.FromInt32(*port))}}
	}
	_, err := cs.NetworkingV1().NetworkPolicies(ns).Create(ctx, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}, Ingress: []networkingv1.NetworkPolicyIngressRule{rule}},
	}, metav1.CreateOptions{})
	return err
}

// applyTime creates one more policy (a port of its own: a new rule) and
// returns the milliseconds until the agent loaded the rules, then deletes
// it and lets that sync pass.
func applyTime(ctx context.Context, name string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- execIn(ctx, "watcher", pw, "/testapp", "watch", metricsURL, syncCount, "30s")
		pw.Close()
	}()
	lines := bufio.NewScanner(pr)
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), "ready") {
		return 0, fmt.Errorf("watcher: %q, %v", lines.Text(), <-done)
	}
	start := time.Now()
	if err := createPolicy(ctx, name, ptr.To(int32(9000)), &metav1.LabelSelector{}); err != nil {
		return 0, err
	}
	if !lines.Scan() {
		return 0, fmt.Errorf("watcher: %v", <-done)
	}
	f := strings.Fields(lines.Text())
	if len(f) != 2 || f[0] != "changed" {
		return 0, fmt.Errorf("watcher said %q", lines.Text())
	}
	at, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, err
	}
	<-done
	ms := float64(time.Unix(0, at).Sub(start).Microseconds()) / 1000
	if err := cs.NetworkingV1().NetworkPolicies(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		return 0, err
	}
	time.Sleep(time.Second)
	return ms, nil
}

// syncTotals reads the agent's sync histogram count and sum.
func syncTotals(ctx context.Context) (count, sum float64, err error) {
	var b strings.Builder
	if err := execIn(ctx, "watcher", &b, "/testapp", "get", metricsURL); err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(b.String(), "\n") {
		if v, ok := strings.CutPrefix(line, syncCount+" "); ok {
			count, _ = strconv.ParseFloat(v, 64)
		}
		if v, ok := strings.CutPrefix(line, syncSum+" "); ok {
			sum, _ = strconv.ParseFloat(v, 64)
		}
	}
	return count, sum, nil
}

func dialLatency(ctx context.Context, addr string) (kexec.Latency, error) {
	return kexec.DialLatency(ctx, cfg, cs, ns, "client", addr, *connects)
}

// execIn runs cmd in pod (namespace netpolbench), writing its stdout to w.
func execIn(ctx context.Context, pod string, w io.Writer, cmd ...string) error {
	return kexec.Exec(ctx, cfg, cs, ns, pod, w, cmd...)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "netpolbench:", err)
	os.Exit(1)
}
