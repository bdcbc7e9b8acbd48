// Command svcbench measures the node's Service proxies side by side in one
// testcluster: node-1 runs kube-proxy (--service-proxy iptables, the
// baseline), node-2 the eBPF proxy (--service-proxy ebpf). At each of
// -sizes Services (selectorless, each with an EndpointSlice of two
// addresses that are never dialled: no pods, no traffic), for each node:
//   - update: a new Service's EndpointSlice created → the first connection
//     through its ClusterIP from a pod on that node (testapp wait-connect,
//     trying every millisecond; wall clocks compared), median of -trials;
//   - sync: the proxy's own mean sync time over the run (kube-proxy's
//     kubeproxy_sync_proxy_rules_duration_seconds, the eBPF proxy's
//     kubesplit_service_proxy_sync_duration_seconds);
//   - connect(): p50/p99 of -connects new TCP connections to a real
//     Service's ClusterIP (testapp dial-latency), in 5 rounds alternating
//     the two nodes (the median of the rounds' percentiles).
//
// Then churn: -churn-rate EndpointSlice updates per second for
// -churn-for, with each node agent's CPU time and RSS read from /proc in
// its container before and after (kube-proxy runs inside the agent, so both
// are the same accounting).
//
// It prints tables and writes JSON under -out.
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
	discoveryv1 "k8s.io/api/discovery/v1"
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
	sizes     = flag.String("sizes", "10,1000,5000", "Service counts to measure at")
	trials    = flag.Int("trials", 5, "new Services per size and node for the update time (the median is reported)")
	connects  = flag.Int("connects", 2000, "connections per connect() series")
	churnRate = flag.Int("churn-rate", 100, "EndpointSlice updates per second during the churn")
	churnFor  = flag.Duration("churn-for", 30*time.Second, "how long the churn lasts")
	out       = flag.String("out", "results", "directory for the JSON result")
)

const ns = "svcbench"

// proxies are the modes measured, each on a node of its own.
var proxies = []string{"iptables", "ebpf"}

// connectRounds is how many alternating rounds -connects is split into.
const connectRounds = 5

type row struct {
	Proxy          string    `json:"proxy"`
	Services       int       `json:"services"`
	UpdateMs       []float64 `json:"update_ms"`
	MedianUpdateMs float64   `json:"median_update_ms"`
	ConnectP50ms   float64   `json:"connect_p50_ms"`
	ConnectP99ms   float64   `json:"connect_p99_ms"`
	ConnectErrors  int       `json:"connect_errors"`
}

type churn struct {
	Proxy      string  `json:"proxy"`
	Updates    int     `json:"updates"`
	CPUSeconds float64 `json:"cpu_seconds"`
	CPUPercent float64 `json:"cpu_percent"`
	RSSBeforeM float64 `json:"rss_before_mib"`
	RSSAfterM  float64 `json:"rss_after_mib"`
	MeanSyncMs float64 `json:"mean_sync_ms"`
}

type result struct {
	When     string  `json:"when"`
	Tag      string  `json:"tag"`
	Trials   int     `json:"trials"`
	Connects int     `json:"connects"`
	Rows     []row   `json:"rows"`
	Churn    []churn `json:"churn"`
}

var (
	tag   string
	cfg   *rest.Config
	cs    kubernetes.Interface
	c     *testcluster.Cluster
	nodes = map[string]string{} // proxy -> node name
)

func main() {
	flag.Parse()
	tag = benchstat.Setup()
	var want []int
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 10000 {
			fail(fmt.Errorf("-sizes: %q is not a Service count from 1 to 10000", s))
		}
		if len(want) > 0 && n <= want[len(want)-1] {
			fail(fmt.Errorf("-sizes must grow"))
		}
		want = append(want, n)
	}
	ctx := context.Background()
	var err error
	c, err = testcluster.Run(ctx, testcluster.WithNodes(1), testcluster.WithNodeArgs("--service-proxy", "iptables"))
	if err != nil {
		fail(err)
	}
	defer c.Terminate(ctx)
	nodes["iptables"] = c.Nodes()[0]
	if nodes["ebpf"], err = c.AddNode(ctx, "--service-proxy", "ebpf"); err != nil {
		fail(err)
	}
	if err := c.LoadImages(ctx, "kubesplit/testapp:"+tag); err != nil {
		fail(err)
	}
	cfg = c.RESTConfig()
	cfg.QPS, cfg.Burst = 500, 1000 // creating thousands of Services
	if cs, err = kubernetes.NewForConfig(cfg); err != nil {
		fail(err)
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		fail(err)
	}
	// per node a server, a client and a Service of that server: each
	// client's connections stay on its own node, so the two rows differ
	// only by the proxy
	servers, webs := map[string]string{}, map[string]string{}
	for _, p := range proxies {
		server, err := startPod(ctx, "server-"+p, nodes[p], "/testapp", "serve")
		if err != nil {
			fail(err)
		}
		if _, err := startPod(ctx, "client-"+p, nodes[p], "/testapp", "sleep"); err != nil {
			fail(err)
		}
		web, err := createService(ctx, "web-"+p, server.Status.PodIP)
		if err != nil {
			fail(err)
		}
		servers[p], webs[p] = server.Status.PodIP, web.Spec.ClusterIP
	}
	r := result{When: time.Now().UTC().Format(time.RFC3339), Tag: tag, Trials: *trials, Connects: *connects}
	have := len(proxies) // the web Services
	for _, n := range want {
		for ; have < n; have++ {
			if _, err := createService(ctx, fmt.Sprintf("fake-%05d", have), fakeAddr(have, 0), fakeAddr(have, 1)); err != nil {
				fail(err)
			}
		}
		time.Sleep(5 * time.Second) // both proxies caught up with the burst
		rows := map[string]*row{}
		for _, p := range proxies {
			rows[p] = &row{Proxy: p, Services: n}
			for i := range *trials {
				ms, err := updateTime(ctx, p, fmt.Sprintf("probe-%s-%d-%d", p, n, i), servers[p])
				if err != nil {
					fail(fmt.Errorf("%s, %d Services, trial %d: %w", p, n, i, err))
				}
				rows[p].UpdateMs = append(rows[p].UpdateMs, ms)
			}
			rows[p].MedianUpdateMs = benchstat.Round2(benchstat.Median(rows[p].UpdateMs))
		}
		// connect(): after kube-proxy's resync of the probes (it would
		// load the CPU under the other series), in rounds that alternate
		// the proxies, so that what else the machine does falls on both;
		// the median of the rounds' percentiles is reported
		time.Sleep(3 * time.Second)
		p50s, p99s := map[string][]float64{}, map[string][]float64{}
		for range connectRounds {
			for _, p := range proxies {
				lat, err := kexec.DialLatency(ctx, cfg, cs, ns, "client-"+p, webs[p]+":80", max(*connects/connectRounds, 1))
				if err != nil {
					fail(err)
				}
				p50s[p], p99s[p] = append(p50s[p], lat.P50ms), append(p99s[p], lat.P99ms)
				rows[p].ConnectErrors += lat.Errors
			}
		}
		for _, p := range proxies {
			x := rows[p]
			x.ConnectP50ms, x.ConnectP99ms = benchstat.Median(p50s[p]), benchstat.Median(p99s[p])
			fmt.Fprintf(os.Stderr, "%s, %d Services: update %.1f ms (median), connect p50 %.3f ms p99 %.3f ms\n",
				p, n, x.MedianUpdateMs, x.ConnectP50ms, x.ConnectP99ms)
			r.Rows = append(r.Rows, *x)
		}
	}
	r.Churn, err = churnRun(ctx, have)
	if err != nil {
		fail(err)
	}

	fmt.Printf("\nService proxies, node-1 kube-proxy iptables (baseline) and node-2 eBPF, one run (%d trials, %d connections per row in %d alternating rounds):\n", *trials, *connects, connectRounds)
	fmt.Println("| Services | proxy | EndpointSlice created → first connection, median ms | connect() p50 ms | connect() p99 ms |")
	fmt.Println("|---|---|---|---|---|")
	for _, x := range r.Rows {
		fmt.Printf("| %d | %s | %.1f | %.3f | %.3f |\n", x.Services, x.Proxy, x.MedianUpdateMs, x.ConnectP50ms, x.ConnectP99ms)
	}
	fmt.Printf("\nChurn: %d EndpointSlice updates per second for %v at %d Services:\n", *churnRate, *churnFor, have)
	fmt.Println("| proxy | updates | agent CPU s (% of one core) | agent RSS before → after MiB | proxy sync, mean ms |")
	fmt.Println("|---|---|---|---|---|")
	for _, x := range r.Churn {
		fmt.Printf("| %s | %d | %.2f (%.0f%%) | %.0f → %.0f | %.2f |\n", x.Proxy, x.Updates, x.CPUSeconds, x.CPUPercent, x.RSSBeforeM, x.RSSAfterM, x.MeanSyncMs)
	}
	path, err := benchstat.WriteJSON(*out, "svc", r)
	if err != nil {
		fail(err)
	}
	fmt.Println("wrote", path)
}

// fakeAddr is endpoint j of fake Service i: 10.99.0.0/16, never dialled.
func fakeAddr(i, j int) string {
	k := 2*i + j
	return fmt.Sprintf("10.99.%d.%d", (k/250)%250, k%250+1)
}

// createService makes a selectorless Service (port 80) and, when addrs are
// given, its EndpointSlice (port 8080).
func createService(ctx context.Context, name string, addrs ...string) (*corev1.Service, error) {
	svc, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{})
	if err != nil || len(addrs) == 0 {
		return svc, err
	}
	return svc, createSlice(ctx, name, addrs...)
}

func createSlice(ctx context.Context, svc string, addrs ...string) error {
	_, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice(svc, addrs...), metav1.CreateOptions{})
	return err
}

func slice(svc string, addrs ...string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: svc, Namespace: ns, Labels: map[string]string{
			discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: "svcbench"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	}
	return s
}

// updateTime creates Service name without endpoints, starts a client on
// the proxy's node waiting to connect to it, then creates its EndpointSlice
// (the server's address) and returns the milliseconds until the client's
// first connection; the Service is deleted after.
func updateTime(ctx context.Context, proxy, name, serverIP string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	svc, err := createService(ctx, name)
	if err != nil {
		return 0, err
	}
	defer func() {
		_ = cs.CoreV1().Services(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
		_ = cs.DiscoveryV1().EndpointSlices(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
	}()
	time.Sleep(2 * time.Second) // the Service (without endpoints) reached both proxies
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- execIn(ctx, "client-"+proxy, pw, "/testapp", "wait-connect", svc.Spec.ClusterIP+":80", "60s")
		pw.Close()
	}()
	lines := bufio.NewScanner(pr)
	if !lines.Scan() || lines.Text() != "ready" {
		return 0, fmt.Errorf("wait-connect: %q, %v", lines.Text(), <-done)
	}
	time.Sleep(100 * time.Millisecond) // trying
	start := time.Now()
	if err := createSlice(ctx, name, serverIP); err != nil {
		return 0, err
	}
	if !lines.Scan() {
		return 0, fmt.Errorf("wait-connect: %v", <-done)
	}
	f := strings.Fields(lines.Text())
	if len(f) != 2 || f[0] != "connected" {
		return 0, fmt.Errorf("wait-connect said %q", lines.Text())
	}
	at, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, err
	}
	<-done
	return float64(time.Unix(0, at).Sub(start).Microseconds()) / 1000, nil
}

// churnRun updates fake EndpointSlices at -churn-rate per second for
// -churn-for and reads each node agent's CPU time and RSS around it.
func churnRun(ctx context.Context, services int) ([]churn, error) {
	type sample struct{ cpu, rss, syncCount, syncSum float64 }
	read := func(p string) (sample, error) {
		var s sample
		out, err := c.Exec(ctx, nodes[p], "bash", "-c",
			`pid=$(pgrep -f "kubesplit-node agent" | head -1); cat /proc/$pid/stat; grep VmRSS /proc/$pid/status; getconf CLK_TCK`)
		if err != nil {
			return s, err
		}
		lines := strings.Split(out, "\n")
		if len(lines) < 3 {
			return s, fmt.Errorf("reading the agent's /proc: %q", out)
		}
		stat := strings.Fields(lines[0][strings.LastIndexByte(lines[0], ')')+2:])
		ut, _ := strconv.ParseFloat(stat[11], 64) // utime, field 14
		st, _ := strconv.ParseFloat(stat[12], 64) // stime, field 15
		tck, _ := strconv.ParseFloat(strings.TrimSpace(lines[2]), 64)
		s.cpu = (ut + st) / tck
		rss := strings.Fields(lines[1])
		kb, _ := strconv.ParseFloat(rss[1], 64)
		s.rss = kb / 1024
		metric := map[string]string{"iptables": "kubeproxy_sync_proxy_rules_duration_seconds", "ebpf": "kubesplit_service_proxy_sync_duration_seconds"}[p]
		m, err := c.Exec(ctx, nodes[p], "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/10249; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3")
		if err != nil {
			return s, err
		}
		// samples may carry labels (kube-proxy's have ip_family): sum them
		for _, l := range strings.Split(m, "\n") {
			for suffix, dst := range map[string]*float64{"_count": &s.syncCount, "_sum": &s.syncSum} {
				rest, ok := strings.CutPrefix(l, metric+suffix)
				if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
					continue
				}
				f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
				if len(f) > 0 {
					v, _ := strconv.ParseFloat(f[0], 64)
					*dst += v
				}
			}
		}
		return s, nil
	}
	before := map[string]sample{}
	for _, p := range proxies {
		s, err := read(p)
		if err != nil {
			return nil, err
		}
		before[p] = s
	}
	start := time.Now()
	tick := time.NewTicker(time.Second / time.Duration(*churnRate))
	defer tick.Stop()
	updates := 0
	for time.Since(start) < *churnFor {
		<-tick.C
		first := len(proxies) // fake Services are numbered from here
		i := first + updates%(services-first)
		s := slice(fmt.Sprintf("fake-%05d", i), fakeAddr(i, 0), fakeAddr(i+updates/(services-first)+1, 1))
		if _, err := cs.DiscoveryV1().EndpointSlices(ns).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			return nil, fmt.Errorf("churn update %d: %w", updates, err)
		}
		updates++
	}
	elapsed := time.Since(start).Seconds()
	time.Sleep(2 * time.Second)
	var out []churn
	for _, p := range proxies {
		after, err := read(p)
		if err != nil {
			return nil, err
		}
		b := before[p]
		ch := churn{Proxy: p, Updates: updates, CPUSeconds: benchstat.Round2(after.cpu - b.cpu),
			CPUPercent: benchstat.Round(100 * (after.cpu - b.cpu) / elapsed), RSSBeforeM: benchstat.Round(b.rss), RSSAfterM: benchstat.Round(after.rss)}
		if n := after.syncCount - b.syncCount; n > 0 {
			ch.MeanSyncMs = benchstat.Round2((after.syncSum - b.syncSum) / n * 1000)
		}
		out = append(out, ch)
	}
	return out, nil
}

// startPod runs testapp pod name on node and waits until it runs.
func startPod(ctx context.Context, name, node string, cmd ...string) (*corev1.Pod, error) {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: ptr.To[int64](1),
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

// execIn runs cmd in pod (namespace svcbench), writing its stdout to w.
func execIn(ctx context.Context, pod string, w io.Writer, cmd ...string) error {
	return kexec.Exec(ctx, cfg, cs, ns, pod, w, cmd...)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "svcbench:", err)
	os.Exit(1)
}
