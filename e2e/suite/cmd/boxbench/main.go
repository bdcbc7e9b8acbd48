// Command boxbench measures the control-plane box (testcluster's
// WithControlPlaneBox: one node container whose kubelet runs the five roles
// as static pods) beside the baseline of the same run, the same images as a
// container per role (testcluster's default layout, as compose): start
// (first role container started, by Docker's clock → API ready, and → a
// first pod Running),
// median of -runs; idle memory after -idle (RSS of the roles, the kubelet's
// agent and containerd, and the roles' cgroup memory); and the time of each
// `kubesplit upgrade` on the box, command to healthy. It prints tables and
// writes JSON under -out.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubesplit/kubesplit/e2e/suite/internal/benchstat"
	"github.com/kubesplit/kubesplit/testcluster"
)

var (
	runs = flag.Int("runs", 3, "starts per layout (the median is reported)")
	idle = flag.Duration("idle", time.Minute, "idle time before memory is read")
	out  = flag.String("out", "results", "directory for the JSON result")
)

type start struct {
	APIReadyS, FirstPodS float64
}

type memory struct {
	// RSS in MiB by process name (roles, kubesplit-node, containerd, shims)
	RSS       map[string]float64 `json:"rss_mib"`
	RolesRSS  float64            `json:"roles_rss_mib"`
	TotalRSS  float64            `json:"total_rss_mib"`
	CgroupMiB float64            `json:"roles_cgroup_mib"`
}

type layout struct {
	Name     string             `json:"name"`
	Starts   []start            `json:"starts"`
	MedianAP float64            `json:"median_api_ready_s"`
	MedianFP float64            `json:"median_first_pod_s"`
	Memory   memory             `json:"idle_memory"`
	Upgrades map[string]float64 `json:"upgrade_s,omitempty"`
}

var tag string

func main() {
	flag.Parse()
	tag = benchstat.Setup()
	box := &layout{Name: "box: static pods in one node container"}
	base := &layout{Name: "baseline: a container per role + 1 node"}
	for n := 0; n < *runs; n++ {
		for _, l := range []*layout{box, base} {
			last := n == *runs-1
			s, err := measure(l == box, last, l)
			if err != nil {
				fail(fmt.Errorf("%s: %w", l.Name, err))
			}
			l.Starts = append(l.Starts, s)
			fmt.Fprintf(os.Stderr, "run %d/%d %-42s API ready %5.1fs, first pod %5.1fs\n", n+1, *runs, l.Name, s.APIReadyS, s.FirstPodS)
		}
	}
	for _, l := range []*layout{box, base} {
		var a, p []float64
		for _, s := range l.Starts {
			a, p = append(a, s.APIReadyS), append(p, s.FirstPodS)
		}
		l.MedianAP, l.MedianFP = benchstat.Median(a), benchstat.Median(p)
	}
	fmt.Printf("\nStart, first role container → ready, median of %d (images %s):\n", *runs, tag)
	fmt.Printf("| %-42s | %12s | %13s |\n", "layout", "API ready s", "first pod s")
	fmt.Printf("|%s|%s|%s|\n", strings.Repeat("-", 44), strings.Repeat("-", 14), strings.Repeat("-", 15))
	for _, l := range []*layout{box, base} {
		fmt.Printf("| %-42s | %12.1f | %13.1f |\n", l.Name, l.MedianAP, l.MedianFP)
	}
	fmt.Printf("\nIdle memory after %s (MiB):\n", *idle)
	fmt.Printf("| %-42s | %9s | %8s | %10s | %10s | %11s | %11s |\n", "layout", "roles RSS", "agent", "containerd", "total RSS", "roles cgrp", "apiserver")
	fmt.Printf("|%s|%s|%s|%s|%s|%s|%s|\n", strings.Repeat("-", 44), strings.Repeat("-", 11), strings.Repeat("-", 10), strings.Repeat("-", 12), strings.Repeat("-", 12), strings.Repeat("-", 13), strings.Repeat("-", 13))
	for _, l := range []*layout{box, base} {
		m := l.Memory
		fmt.Printf("| %-42s | %9.1f | %8.1f | %10.1f | %10.1f | %11.1f | %11.1f |\n", l.Name, m.RolesRSS, m.RSS["kubesplit-node"], m.RSS["containerd"], m.TotalRSS, m.CgroupMiB, m.RSS["apiserver"])
	}
	if len(box.Upgrades) > 0 {
		fmt.Printf("\n`kubesplit upgrade ROLE` on the box, command to healthy (s):\n| role | s |\n|---|---|\n")
		for _, r := range testcluster.Roles() {
			fmt.Printf("| %s | %.1f |\n", r, box.Upgrades[r])
		}
	}
	path, err := benchstat.WriteJSON(*out, "box", map[string]any{"when": time.Now().UTC().Format(time.RFC3339), "tag": tag, "layouts": []*layout{box, base}})
	if err != nil {
		fail(err)
	}
	fmt.Println("wrote", path)
}

// measure starts one cluster; on the last run it also reads idle memory
// and, for the box, times an upgrade of each role.
func measure(box, last bool, l *layout) (start, error) {
	ctx := context.Background()
	opts := []testcluster.Option{testcluster.WithoutDNSWait()}
	if box {
		opts = append(opts, testcluster.WithControlPlaneBox(), testcluster.WithNodes(0))
	} else {
		opts = append(opts, testcluster.WithNodes(1))
	}
	var s start
	c, err := testcluster.Run(ctx, opts...)
	if err != nil {
		return s, err
	}
	defer c.Terminate(ctx)
	// t0: the first control-plane container's start (Docker's StartedAt),
	// what both layouts share; not testcluster's own work before it (the
	// box's copy of the role images into its container, the init container)
	var t0 time.Time
	members := testcluster.Roles()
	if box {
		members = []string{testcluster.Box}
	}
	for _, m := range members {
		in, err := c.Container(m).Inspect(ctx)
		if err != nil {
			return s, err
		}
		at, err := time.Parse(time.RFC3339Nano, in.State.StartedAt)
		if err != nil {
			return s, err
		}
		if t0.IsZero() || at.Before(t0) {
			t0 = at
		}
	}
	// API ready is Run's own first wait; Run also waited for roles, nodes, the default ServiceAccount
	if err := poll(ctx, func() bool {
		_, err := c.Client().Discovery().ServerVersion()
		return err == nil
	}); err != nil {
		return s, err
	}
	s.APIReadyS = apiReady(c, t0)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "first"}, Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "c", Image: "kubesplit/pause:" + tag, ImagePullPolicy: corev1.PullNever}}}}
	if _, err := c.Client().CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return s, err
	}
	if err := poll(ctx, func() bool {
		p, err := c.Client().CoreV1().Pods("default").Get(ctx, "first", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning
	}); err != nil {
		return s, err
	}
	s.FirstPodS = benchstat.Round(time.Since(t0).Seconds())
	if !last {
		return s, nil
	}
	time.Sleep(*idle)
	if l.Memory, err = readMemory(c, box); err != nil {
		return s, err
	}
	if box {
		l.Upgrades, err = upgrades(ctx, c)
	}
	return s, err
}

// apiReady is the first moment the API served, as the cluster itself
// records it: the kube-system namespace's creation time (the apiserver
// makes it as it starts serving), relative to t0; one-second resolution.
func apiReady(c *testcluster.Cluster, t0 time.Time) float64 {
	ns, err := c.Client().CoreV1().Namespaces().Get(context.Background(), "kube-system", metav1.GetOptions{})
	if err != nil {
		return 0
	}
	return benchstat.Round(ns.CreationTimestamp.Sub(t0.Truncate(time.Second)).Seconds())
}

var roleProcs = []string{"datastore", "apiserver", "scheduler", "controllers", "tunnel-gateway"}

// readMemory sums RSS by process name (box: every process in the box's
// PID namespace; baseline: the role containers' and the node's) and the
// roles' cgroup memory.
func readMemory(c *testcluster.Cluster, box bool) (memory, error) {
	m := memory{RSS: map[string]float64{}}
	// add reads "RSS_KB NAME" lines
	add := func(psOut string) {
		for _, l := range strings.Split(psOut, "\n") {
			f := strings.Fields(l)
			if len(f) < 2 {
				continue
			}
			kb, err := strconv.ParseFloat(f[0], 64)
			if err != nil {
				continue
			}
			name := filepath.Base(f[1])
			if strings.HasPrefix(name, "containerd-shim") {
				name = "containerd-shim"
			}
			m.RSS[name] += kb / 1024
		}
	}
	ctx := context.Background()
	node := testcluster.Box
	if !box {
		node = c.Nodes()[0]
		for _, r := range testcluster.Roles() {
			id := c.Container(r).GetContainerID()
			// docker top's PIDs are the host's: read their RSS from /proc
			o, err := exec.Command("docker", "top", id).CombinedOutput()
			if err != nil {
				return m, fmt.Errorf("docker top %s: %v: %s", r, err, o)
			}
			for _, l := range strings.Split(string(o), "\n")[1:] {
				f := strings.Fields(l)
				if len(f) < 8 {
					continue
				}
				st, err := os.ReadFile("/proc/" + f[1] + "/status")
				if err != nil {
					continue
				}
				for _, sl := range strings.Split(string(st), "\n") {
					if v, ok := strings.CutPrefix(sl, "VmRSS:"); ok {
						add(strings.Fields(v)[0] + " " + f[7])
					}
				}
			}
			cg, err := exec.Command("docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", id).Output()
			if err != nil {
				return m, err
			}
			m.CgroupMiB += parseMiB(strings.Fields(string(cg))[0])
		}
	}
	o, err := c.Exec(ctx, node, "ps", "-eo", "rss=,comm=")
	if err != nil {
		return m, err
	}
	add(o)
	if box {
		// the static pods' cgroups: kubepods/burstable/pod<UID> under the box's cgroup root
		for _, r := range testcluster.Roles() {
			p, err := c.Client().CoreV1().Pods("kube-system").Get(ctx, testcluster.MirrorPod(r), metav1.GetOptions{})
			if err != nil {
				return m, err
			}
			uid := p.Annotations["kubernetes.io/config.mirror"]
			// cgroup v2 (memory.current) or v1 (usage less inactive page cache, as docker stats)
			root := "kubesplit-" + c.ID + "-box"
			v, err := c.Exec(ctx, node, "sh", "-c", `d=$(find /sys/fs/cgroup/`+root+` /sys/fs/cgroup/memory/`+root+` -maxdepth 4 -type d -name pod`+uid+` 2>/dev/null | head -1)
if [ -f "$d/memory.current" ]; then cat "$d/memory.current"; else echo $(( $(cat "$d/memory.usage_in_bytes") - $(awk '/^total_inactive_file /{print $2}' "$d/memory.stat") )); fi`)
			if err != nil {
				return m, err
			}
			b, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			m.CgroupMiB += b / (1 << 20)
		}
	}
	for _, r := range roleProcs {
		m.RolesRSS += m.RSS[r]
	}
	for _, n := range append(slices.Clone(roleProcs), "kubesplit-node", "containerd", "containerd-shim") {
		m.TotalRSS += m.RSS[n]
	}
	for k, v := range m.RSS {
		if !slices.Contains(append(slices.Clone(roleProcs), "kubesplit-node", "containerd", "containerd-shim"), k) {
			delete(m.RSS, k)
		} else {
			m.RSS[k] = benchstat.Round(v)
		}
	}
	m.RolesRSS, m.TotalRSS, m.CgroupMiB = benchstat.Round(m.RolesRSS), benchstat.Round(m.TotalRSS), benchstat.Round(m.CgroupMiB)
	return m, nil
}

func parseMiB(s string) float64 {
	for _, u := range []struct {
		suffix string
		mul    float64
	}{{"GiB", 1024}, {"MiB", 1}, {"KiB", 1.0 / 1024}, {"B", 1.0 / (1 << 20)}} {
		if strings.HasSuffix(s, u.suffix) {
			v, _ := strconv.ParseFloat(strings.TrimSuffix(s, u.suffix), 64)
			return v * u.mul
		}
	}
	return 0
}

// upgrades times `kubesplit upgrade ROLE` on the box to the same image under
// another name, for each role.
func upgrades(ctx context.Context, c *testcluster.Cluster) (map[string]float64, error) {
	var images []string
	for _, r := range testcluster.Roles() {
		to := "kubesplit-bench/" + r + ":next"
		if out, err := exec.Command("docker", "tag", "kubesplit/"+r+":"+tag, to).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("docker tag: %v: %s", err, out)
		}
		defer exec.Command("docker", "rmi", to).Run()
		images = append(images, to)
	}
	if err := c.LoadImages(ctx, images...); err != nil {
		return nil, err
	}
	res := map[string]float64{}
	for i, r := range testcluster.Roles() {
		t0 := time.Now()
		out, err := c.Exec(ctx, testcluster.Box, "kubesplit", "upgrade", r, "--image", images[i])
		if err != nil {
			return nil, fmt.Errorf("kubesplit upgrade %s: %v\n%s", r, err, out)
		}
		res[r] = benchstat.Round(time.Since(t0).Seconds())
		fmt.Fprintf(os.Stderr, "upgrade %s: %.1fs\n", r, res[r])
	}
	return res, nil
}

func poll(ctx context.Context, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "boxbench:", err)
	os.Exit(1)
}
