// Command hostedbench measures the hosted control plane (deploy/helm) on a
// two-node testcluster host: for each datastore mode, `helm install` (no
// --wait) → the hosted API answers /readyz at the gateway's public address
// → a node container outside the host cluster is Ready in the hosted
// cluster; then, after every release has idled, the host's metrics-server's
// CPU and memory of each hosted role, beside the host's own control plane
// (the same images, a container per role as compose runs them; docker
// stats) in the same run. It prints tables and writes JSON under -out.
package main

import (
	"context"
	"encoding/json"
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

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/kubernetes"

	"github.com/kubesplit/kubesplit/e2e/suite/internal/benchstat"
	"github.com/kubesplit/kubesplit/e2e/suite/internal/hosted"
	"github.com/kubesplit/kubesplit/roles"
	"github.com/kubesplit/kubesplit/testcluster"
)

type install struct {
	Mode      string  `json:"mode"`
	APIReadyS float64 `json:"api_ready_s"`
	NodeS     float64 `json:"node_ready_s"`
}

type usage struct {
	Where    string  `json:"where"` // "hosted MODE" or "host control plane"
	Role     string  `json:"role"`
	Pods     int     `json:"pods"`
	MilliCPU int64   `json:"millicpu"`
	MemMiB   float64 `json:"memory_mib"`
}

type result struct {
	When     string    `json:"when"`
	CPUs     int       `json:"cpus"`
	Tag      string    `json:"tag"`
	IdleS    float64   `json:"idle_s"`
	Installs []install `json:"installs"`
	Usage    []usage   `json:"usage"`
}

var (
	out   = flag.String("out", "results", "directory for the JSON result")
	helm  = flag.String("helm", "../../bin/helm", "the helm CLI (hack/helm.sh)")
	modes = flag.String("modes", "sqlite,etcd,external", "datastore modes, in order")
	idle  = flag.Duration("idle", 90*time.Second, "how long the releases idle before their usage is read")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "hostedbench:", err)
		os.Exit(1)
	}
}

func run() error {
	tag := benchstat.Setup()
	ctx := context.Background()
	c, err := testcluster.Run(ctx, testcluster.WithNodes(2), testcluster.WithTag(tag))
	if err != nil {
		return err
	}
	defer c.Terminate(context.Background())
	if err := c.LoadImages(ctx, append(hosted.Images(tag), "kubesplit/postgres:"+tag, "kubesplit/testapp:"+tag)...); err != nil {
		return err
	}
	kc := filepath.Join(os.TempDir(), "hostedbench-"+c.ID+".kubeconfig")
	if err := c.WriteKubeconfig(kc); err != nil {
		return err
	}
	defer os.Remove(kc)
	bin, err := filepath.Abs(*helm)
	if err != nil {
		return err
	}
	h := hosted.Helm{Bin: bin, Kubeconfig: kc}
	host := c.Client()
	r := result{When: time.Now().UTC().Format(time.RFC3339), CPUs: runtime.NumCPU(), Tag: tag, IdleS: idle.Seconds()}
	for i, mode := range strings.Split(*modes, ",") {
		ns := "bench-" + mode
		set := []string{"datastore.mode=" + mode,
			fmt.Sprintf("gateway.service.ports.nodes=%d", 8132+10000*i), fmt.Sprintf("gateway.service.ports.api=%d", 6443+10000*i)}
		if mode == "external" {
			if _, err := hosted.Postgres(ctx, host, ns, tag); err != nil {
				return err
			}
			set = append(set, "datastore.external.secretName=pg")
		}
		in, err := measureInstall(ctx, c, h, host, ns, tag, 8132+10000*i, set)
		if err != nil {
			return fmt.Errorf("%s: %w", mode, err)
		}
		in.Mode = mode
		fmt.Printf("%s: API ready %.1f s, external node Ready %.1f s after helm install\n", mode, in.APIReadyS, in.NodeS)
		r.Installs = append(r.Installs, in)
	}
	fmt.Printf("idling %s\n", *idle)
	time.Sleep(*idle)
	for _, mode := range strings.Split(*modes, ",") {
		u, err := podUsage(ctx, host, "bench-"+mode)
		if err != nil {
			return err
		}
		for i := range u {
			u[i].Where = "hosted " + mode
		}
		r.Usage = append(r.Usage, u...)
	}
	base, err := containerUsage(c)
	if err != nil {
		return err
	}
	r.Usage = append(r.Usage, base...)
	printTables(r)
	path, err := benchstat.WriteJSON(*out, "hosted", r)
	if err != nil {
		return err
	}
	fmt.Println("wrote", path)
	return nil
}

// measureInstall times helm install → API ready → a joined node Ready.
func measureInstall(ctx context.Context, c *testcluster.Cluster, h hosted.Helm, host kubernetes.Interface, ns, tag string, nodesPort int, set []string) (install, error) {
	start := time.Now()
	if err := h.Install(ctx, ns, tag, false, set...); err != nil {
		return install{}, err
	}
	var rel hosted.Release
	var cs kubernetes.Interface
	err := hosted.WaitReady(ctx, 6*time.Minute, func(ctx context.Context) (bool, error) {
		var err error
		if cs == nil {
			if rel, err = hosted.Read(ctx, host, ns); err != nil {
				return false, err
			}
			if _, cs, err = rel.Client(); err != nil {
				return false, err
			}
		}
		return hosted.APIReady(ctx, cs)
	})
	if err != nil {
		return install{}, fmt.Errorf("hosted API: %w", err)
	}
	api := time.Since(start)
	node, err := rel.Join(ctx, c, nodesPort)
	if err != nil {
		return install{}, err
	}
	if err := hosted.WaitReady(ctx, 5*time.Minute, func(ctx context.Context) (bool, error) { return hosted.NodeReady(ctx, cs, node) }); err != nil {
		return install{}, fmt.Errorf("node %s: %w", node, err)
	}
	return install{APIReadyS: benchstat.Round(api.Seconds()), NodeS: benchstat.Round(time.Since(start).Seconds())}, nil
}

// podUsage sums the host metrics-server's PodMetrics of ns by role.
func podUsage(ctx context.Context, host kubernetes.Interface, ns string) ([]usage, error) {
	b, err := host.Discovery().RESTClient().Get().AbsPath("/apis/metrics.k8s.io/v1beta1/namespaces/" + ns + "/pods").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("PodMetrics of %s: %w", ns, err)
	}
	var list struct {
		Items []struct {
			Metadata struct {
				Labels map[string]string `json:"labels"`
			} `json:"metadata"`
			Containers []struct {
				Usage map[string]resource.Quantity `json:"usage"`
			} `json:"containers"`
		} `json:"items"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, err
	}
	by := map[string]*usage{}
	for _, p := range list.Items {
		role := p.Metadata.Labels["app.kubernetes.io/component"]
		if !roles.Valid(role) {
			continue // the init Job, PostgreSQL
		}
		u := by[role]
		if u == nil {
			u = &usage{Role: role}
			by[role] = u
		}
		u.Pods++
		for _, ct := range p.Containers {
			cpu, mem := ct.Usage["cpu"], ct.Usage["memory"]
			u.MilliCPU += cpu.MilliValue()
			u.MemMiB += float64(mem.Value()) / (1 << 20)
		}
	}
	var out []usage
	for _, role := range roles.Names() {
		if u := by[role]; u != nil {
			u.MemMiB = benchstat.Round(u.MemMiB)
			out = append(out, *u)
		}
	}
	return out, nil
}

// containerUsage is docker stats of the host's own control-plane containers.
func containerUsage(c *testcluster.Cluster) ([]usage, error) {
	var out []usage
	for _, role := range roles.Names() {
		name, err := c.Container(role).Name(context.Background())
		if err != nil {
			return nil, err
		}
		name = strings.TrimPrefix(name, "/")
		o, err := exec.Command("docker", "stats", "--no-stream", "--format", "{{.CPUPerc}} {{.MemUsage}}", name).Output()
		if err != nil {
			return nil, fmt.Errorf("docker stats %s: %w", name, err)
		}
		f := strings.Fields(string(o)) // "0.52% 45.1MiB / 23.4GiB"
		if len(f) < 2 {
			return nil, fmt.Errorf("docker stats %s: %q", name, o)
		}
		pct, _ := strconv.ParseFloat(strings.TrimSuffix(f[0], "%"), 64)
		mem, err := resource.ParseQuantity(strings.TrimSuffix(f[1], "B")) // MiB → Mi
		if err != nil {
			return nil, fmt.Errorf("docker stats %s: memory %q: %w", name, f[1], err)
		}
		out = append(out, usage{Where: "host control plane", Role: role, Pods: 1, MilliCPU: int64(pct * 10),
			MemMiB: benchstat.Round(float64(mem.Value()) / (1 << 20))})
	}
	return out, nil
}

func printTables(r result) {
	fmt.Printf("\n%-10s %22s %28s\n", "datastore", "helm install → API ready", "→ external node Ready")
	for _, in := range r.Installs {
		fmt.Printf("%-10s %20.1f s %26.1f s\n", in.Mode, in.APIReadyS, in.NodeS)
	}
	fmt.Printf("\nidle usage after %.0f s (hosted: the host's metrics-server; host control plane: docker stats)\n", r.IdleS)
	fmt.Printf("%-20s %-15s %5s %10s %12s\n", "where", "role", "pods", "CPU (m)", "memory (MiB)")
	wheres := []string{}
	for _, u := range r.Usage {
		if !slices.Contains(wheres, u.Where) {
			wheres = append(wheres, u.Where)
		}
	}
	for _, w := range wheres {
		var cpu int64
		var mem float64
		for _, u := range r.Usage {
			if u.Where == w {
				fmt.Printf("%-20s %-15s %5d %10d %12.1f\n", w, u.Role, u.Pods, u.MilliCPU, u.MemMiB)
				cpu += u.MilliCPU
				mem += u.MemMiB
			}
		}
		fmt.Printf("%-20s %-15s %5s %10d %12.1f\n", w, "total", "", cpu, mem)
	}
}
