// Command bench measures the control plane side by side on SQLite and on
// embedded etcd, in one run: time to /readyz, idle RSS per role, ConfigMap
// create throughput and latency with 16 clients, and watch latency. It prints
// a table and writes JSON under results/.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubesplit/kubesplit/e2e/hostcluster"
	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/localcluster"
	"github.com/kubesplit/kubesplit/pkg/procs"
	"github.com/kubesplit/kubesplit/pkg/version"
)

type result struct {
	Backend           string             `json:"backend"`
	DatastoreToReadyS float64            `json:"datastore_start_to_apiserver_readyz_s"`
	APIServerToReadyS float64            `json:"apiserver_start_to_readyz_s"`
	IdleRSSMiB        map[string]float64 `json:"idle_rss_mib"`
	IdleRSSTotalMiB   float64            `json:"idle_rss_total_mib"`
	IdleAnonMiB       map[string]float64 `json:"idle_anon_mib"`
	IdleAnonTotalMiB  float64            `json:"idle_anon_total_mib"`
	IdleFileTotalMiB  float64            `json:"idle_file_backed_total_mib"`
	Creates           int                `json:"creates"`
	CreateThroughput  float64            `json:"create_per_s"`
	CreateP50Ms       float64            `json:"create_p50_ms"`
	CreateP99Ms       float64            `json:"create_p99_ms"`
	WatchEvents       int                `json:"watch_events"`
	WatchP50Ms        float64            `json:"watch_p50_ms"`
	WatchP99Ms        float64            `json:"watch_p99_ms"`
}

func main() {
	creates := flag.Int("creates", 2000, "ConfigMaps to create in the throughput test")
	clients := flag.Int("clients", 16, "concurrent clients in the throughput test")
	watchN := flag.Int("watch-events", 300, "writes timed in the watch-latency test")
	settle := flag.Duration("settle", 20*time.Second, "idle time before reading RSS")
	out := flag.String("out", "results", "folder for the JSON results")
	flag.Parse()

	var results []result
	for _, backend := range []string{"sqlite", "etcd"} {
		r, err := run(backend, *creates, *clients, *watchN, *settle)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench %s: %v\n", backend, err)
			os.Exit(1)
		}
		results = append(results, r)
	}
	printTable(os.Stdout, results)
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	doc := map[string]any{
		"when":       time.Now().UTC().Format(time.RFC3339),
		"kubesplit":  version.Version,
		"kubernetes": version.Kubernetes,
		"clients":    *clients,
		"results":    results,
	}
	b, _ := json.MarshalIndent(doc, "", "  ")
	path := filepath.Join(*out, "controlplane-"+time.Now().UTC().Format("20060102T150405Z")+".json")
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("\nwritten", path)
}

func run(backend string, creates, clients, watchN int, settle time.Duration) (result, error) {
	r := result{Backend: backend, IdleRSSMiB: map[string]float64{}, IdleAnonMiB: map[string]float64{}}
	bin, err := hostcluster.BinDir()
	if err != nil {
		return r, err
	}
	dir, err := os.MkdirTemp("", "kubesplit-bench-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	ports, err := localcluster.FreePorts()
	if err != nil {
		return r, err
	}
	spec := localcluster.Spec{BinDir: bin, DataDir: layout.Dir(dir), Backend: backend, Ports: ports}
	if _, err := spec.Init(); err != nil {
		return r, err
	}
	g, err := spec.Group()
	if err != nil {
		return r, err
	}
	defer g.StopAll(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t0 := time.Now()
	var apiStart time.Time
	for _, p := range g.Procs {
		if p.Name == localcluster.APIServer {
			apiStart = time.Now()
		}
		if err := startFast(ctx, p); err != nil {
			return r, err
		}
		if p.Name == localcluster.APIServer {
			r.DatastoreToReadyS = time.Since(t0).Seconds()
			r.APIServerToReadyS = time.Since(apiStart).Seconds()
		}
	}

	time.Sleep(settle)
	for _, p := range g.Procs {
		m, err := memMiB(p.Pid())
		if err != nil {
			return r, err
		}
		r.IdleRSSMiB[p.Name] = m["Rss"]
		r.IdleRSSTotalMiB += m["Rss"]
		r.IdleAnonMiB[p.Name] = m["Anonymous"]
		r.IdleAnonTotalMiB += m["Anonymous"]
		r.IdleFileTotalMiB += m["Rss"] - m["Anonymous"]
	}

	cfg, err := clientcmd.BuildConfigFromFlags("", spec.DataDir.Kubeconfig(layout.Admin))
	if err != nil {
		return r, err
	}
	cfg.QPS, cfg.Burst = 5000, 5000
	writer := kubernetes.NewForConfigOrDie(cfg)

	ns, err := writer.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "bench-"}}, metav1.CreateOptions{})
	if err != nil {
		return r, err
	}
	lat, elapsed, err := createLoad(ctx, writer, ns.Name, creates, clients)
	if err != nil {
		return r, err
	}
	r.Creates = creates
	r.CreateThroughput = float64(creates) / elapsed.Seconds()
	r.CreateP50Ms, r.CreateP99Ms = pct(lat, 50), pct(lat, 99)

	// The watcher uses its own client (own connection), as another program would.
	watchCfg := *cfg
	watcher := kubernetes.NewForConfigOrDie(&watchCfg)
	wl, err := watchLatency(ctx, writer, watcher, ns.Name, watchN)
	if err != nil {
		return r, err
	}
	r.WatchEvents = len(wl)
	r.WatchP50Ms, r.WatchP99Ms = pct(wl, 50), pct(wl, 99)
	return r, nil
}

// startFast starts a process and polls readiness every 20ms (the harness's
// default of 100ms would round the start time up).
func startFast(ctx context.Context, p *procs.Process) error {
	if err := p.Start(); err != nil {
		return err
	}
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := p.Ready(pctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("%s exited: %v", p.Name, p.Err())
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %v", p.Name, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func createLoad(ctx context.Context, cs kubernetes.Interface, ns string, n, clients int) ([]time.Duration, time.Duration, error) {
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	var firstErr error
	var mu sync.Mutex
	start := time.Now()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; i < n; i += clients {
				t := time.Now()
				_, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
					ObjectMeta: metav1.ObjectMeta{Name: "load-" + strconv.Itoa(i)},
					Data:       map[string]string{"payload": strings.Repeat("x", 256)},
				}, metav1.CreateOptions{})
				lat[i] = time.Since(t)
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return lat, time.Since(start), firstErr
}

func watchLatency(ctx context.Context, writer, watcher kubernetes.Interface, ns string, n int) ([]time.Duration, error) {
	w, err := watcher.CoreV1().ConfigMaps(ns).Watch(ctx, metav1.ListOptions{LabelSelector: "bench=watch"})
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	seen := make(map[string]time.Time, n)
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range w.ResultChan() {
			if e.Type != watch.Added {
				continue
			}
			cm := e.Object.(*corev1.ConfigMap)
			mu.Lock()
			seen[cm.Name] = time.Now()
			k := len(seen)
			mu.Unlock()
			if k == n {
				return
			}
		}
	}()
	acked := make(map[string]time.Time, n)
	for i := range n {
		name := "watch-" + strconv.Itoa(i)
		_, err := writer.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"bench": "watch"}},
		}, metav1.CreateOptions{})
		if err != nil {
			return nil, err
		}
		acked[name] = time.Now()
		time.Sleep(5 * time.Millisecond) // a steady trickle, not a burst
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("watch saw %d of %d events", len(seen), n)
	}
	var lat []time.Duration
	mu.Lock()
	defer mu.Unlock()
	for name, a := range acked {
		d := seen[name].Sub(a)
		if d < 0 { // the event overtook the response: zero latency
			d = 0
		}
		lat = append(lat, d)
	}
	return lat, nil
}

func pct(d []time.Duration, p int) float64 {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	idx := (len(s)*p + 99) / 100
	if idx > 0 {
		idx--
	}
	return float64(s[idx].Microseconds()) / 1000
}

// memMiB reads Rss and Anonymous from /proc/PID/smaps_rollup. Rss minus
// Anonymous is file-backed: mostly the binary's text, clean and reclaimable.
func memMiB(pid int) (map[string]float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[2] == "kB" {
			kb, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return nil, err
			}
			out[strings.TrimSuffix(f[0], ":")] = kb / 1024
		}
	}
	if _, ok := out["Rss"]; !ok {
		return nil, fmt.Errorf("no Rss for pid %d", pid)
	}
	return out, nil
}

func printTable(w io.Writer, rs []result) {
	row := func(name string, f func(r result) string) {
		fmt.Fprintf(w, "%-44s", name)
		for _, r := range rs {
			fmt.Fprintf(w, " %14s", f(r))
		}
		fmt.Fprintln(w)
	}
	f1 := func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }
	f2 := func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
	row("metric", func(r result) string { return r.Backend })
	row("datastore start -> apiserver /readyz (s)", func(r result) string { return f2(r.DatastoreToReadyS) })
	row("apiserver start -> /readyz (s)", func(r result) string { return f2(r.APIServerToReadyS) })
	for _, role := range localcluster.Roles {
		row("idle RSS "+role+" (MiB)", func(r result) string { return f1(r.IdleRSSMiB[role]) })
	}
	row("idle RSS, all five (MiB)", func(r result) string { return f1(r.IdleRSSTotalMiB) })
	row("  of which anonymous: heap, stacks (MiB)", func(r result) string { return f1(r.IdleAnonTotalMiB) })
	row("  of which file-backed: binary text (MiB)", func(r result) string { return f1(r.IdleFileTotalMiB) })
	row("ConfigMap creates/s (16 clients)", func(r result) string { return f1(r.CreateThroughput) })
	row("create latency p50 (ms)", func(r result) string { return f2(r.CreateP50Ms) })
	row("create latency p99 (ms)", func(r result) string { return f2(r.CreateP99Ms) })
	row("watch latency p50 (ms)", func(r result) string { return f2(r.WatchP50Ms) })
	row("watch latency p99 (ms)", func(r result) string { return f2(r.WatchP99Ms) })
}
