// Command runbench measures testcluster.Run to a ready-for-use cluster (API
// ready, roles healthy, nodes Ready, default ServiceAccount, CoreDNS
// available) for 1 and 3 nodes, and for 1 node without the CoreDNS wait,
// beside the baseline of the same run: the compose dev cluster's `make up`
// (hack/compose.sh up from clean volumes, NODES=1: nodes Ready and CoreDNS
// running). Each is the median of -runs starts, in seconds and in machine
// CPU-seconds (/proc/stat, busy time of all CPUs over the same span). It
// prints a table and writes JSON under -out.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kubesplit/kubesplit/e2e/suite/internal/benchstat"
	"github.com/kubesplit/kubesplit/testcluster"
)

type series struct {
	Name       string    `json:"name"`
	Runs       []float64 `json:"seconds"`
	CPU        []float64 `json:"cpu_seconds"`
	MedianS    float64   `json:"median_s"`
	MedianCPUS float64   `json:"median_cpu_s"`
	MinS       float64   `json:"min_s"`
	MaxS       float64   `json:"max_s"`
}

type result struct {
	When   string   `json:"when"`
	CPUs   int      `json:"cpus"`
	Tag    string   `json:"tag"`
	Series []series `json:"series"`
}

var (
	runs = flag.Int("runs", 5, "starts per measurement (the median is reported)")
	out  = flag.String("out", "results", "directory for the JSON result")
	root = flag.String("root", "../..", "the kubesplit repository (for hack/compose.sh)")
)

func main() {
	flag.Parse()
	tag := benchstat.Setup()
	r := result{When: time.Now().UTC().Format(time.RFC3339), CPUs: runtime.NumCPU(), Tag: tag}
	measurements := []struct {
		name  string
		start func() (func() error, error)
	}{
		{"testcluster.Run, 1 node", runCluster(testcluster.WithNodes(1))},
		{"testcluster.Run, 1 node, WithoutDNSWait", runCluster(testcluster.WithNodes(1), testcluster.WithoutDNSWait())},
		{"testcluster.Run, 3 nodes", runCluster(testcluster.WithNodes(3))},
		{"baseline: compose make up, 1 node", composeUp},
	}
	// interleaved, so a slow spell of the machine does not land on one series
	all := make([]series, len(measurements))
	for i, m := range measurements {
		all[i].Name = m.name
	}
	for n := 0; n < *runs; n++ {
		for i, m := range measurements {
			t0, c0 := time.Now(), cpuSeconds()
			stop, err := m.start()
			secs, cpu := time.Since(t0).Seconds(), cpuSeconds()-c0
			if err != nil {
				fail(fmt.Errorf("%s: %w", m.name, err))
			}
			if err := stop(); err != nil {
				fail(fmt.Errorf("%s: stopping: %w", m.name, err))
			}
			all[i].Runs = append(all[i].Runs, benchstat.Round(secs))
			all[i].CPU = append(all[i].CPU, benchstat.Round(cpu))
			fmt.Fprintf(os.Stderr, "run %d/%d %-45s %6.1fs %6.1f CPU-s\n", n+1, *runs, m.name, secs, cpu)
		}
	}
	for i := range all {
		s := &all[i]
		s.MedianS, s.MedianCPUS = benchstat.Median(s.Runs), benchstat.Median(s.CPU)
		s.MinS, s.MaxS = slices.Min(s.Runs), slices.Max(s.Runs)
	}
	r.Series = all
	printTable(&r)
	path, err := benchstat.WriteJSON(*out, "testcluster", r)
	if err != nil {
		fail(err)
	}
	fmt.Println("wrote", path)
}

func runCluster(opts ...testcluster.Option) func() (func() error, error) {
	return func() (func() error, error) {
		c, err := testcluster.Run(context.Background(), opts...)
		if err != nil {
			return nil, err
		}
		return func() error { return c.Terminate(context.Background()) }, nil
	}
}

// composeUp is `make up` from clean volumes with one node; `make clean`
// after it.
func composeUp() (func() error, error) {
	script := filepath.Join(*root, "hack", "compose.sh")
	env := append(os.Environ(), "COMPOSE_PROJECT_NAME=kubesplit-runbench", "KUBESPLIT_API_PORT=16445",
		"KUBESPLIT_EDGE_SUBNET=10.253.0.0/24", "KUBESPLIT_GATEWAY_IP=10.253.0.2", "NODES=1",
		"KUBESPLIT_KUBECONFIG_DIR="+filepath.Join(os.TempDir(), "kubesplit-runbench"))
	run := func(arg string) error {
		cmd := exec.Command(script, arg)
		cmd.Env = env
		b, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("hack/compose.sh %s: %v\n%s", arg, err, b)
		}
		return nil
	}
	if err := run("up"); err != nil {
		_ = run("clean")
		return nil, err
	}
	return func() error { return run("clean") }, nil
}

// cpuSeconds is the machine's busy CPU time so far (all of /proc/stat's
// "cpu" line but idle and iowait), in seconds.
func cpuSeconds() float64 {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan()
	var busy float64
	for i, v := range strings.Fields(sc.Text())[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseFloat(v, 64)
		busy += n
	}
	return busy / 100 // USER_HZ
}

func printTable(r *result) {
	fmt.Printf("\nStart to ready-for-use, median of %d (%d CPUs, images %s):\n", *runs, r.CPUs, r.Tag)
	fmt.Printf("| %-45s | %8s | %10s | %13s |\n", "what", "median s", "min-max s", "median CPU-s")
	fmt.Printf("|%s|%s|%s|%s|\n", strings.Repeat("-", 47), strings.Repeat("-", 10), strings.Repeat("-", 12), strings.Repeat("-", 15))
	for _, s := range r.Series {
		fmt.Printf("| %-45s | %8.1f | %4.1f-%-5.1f | %13.1f |\n", s.Name, s.MedianS, s.MinS, s.MaxS, s.MedianCPUS)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "runbench:", err)
	os.Exit(1)
}
