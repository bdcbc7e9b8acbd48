// Command composebench measures the compose dev cluster (deploy/compose) as
// `make up` starts it, images already built: seconds and machine CPU-seconds
// from `up` to the API answering, to the first pod Running and to cluster DNS
// answering in a pod, and to `make up` returning (nodes Ready, CoreDNS
// available); the same again for a warm start (`make down` then `make up`,
// volumes kept) in the same run; idle memory per container (docker stats);
// and each image's size, compressed and uncompressed, beside the upstream
// Kubernetes binary of the same role built here from k8s.io/kubernetes with
// upstream's flags (an upstream image is that binary plus a small base layer,
// so the binary is a lower bound for it). It prints a table and writes JSON
// under results/.
package main

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/e2e/dockercluster"
	"github.com/kubesplit/kubesplit/e2e/hostcluster"
)

const project = "kubesplit-bench"

type start struct {
	APIS          float64 `json:"api_answering_s"`
	FirstPodS     float64 `json:"first_pod_running_s"`
	DNSS          float64 `json:"dns_answering_in_a_pod_s"`
	UpReturnedS   float64 `json:"make_up_returned_s"`
	CPUFirstPodS  float64 `json:"cpu_seconds_to_first_pod"`
	CPUDNSS       float64 `json:"cpu_seconds_to_dns"`
	CPUUpReturned float64 `json:"cpu_seconds_to_make_up_returned"`
}

type imageSize struct {
	Image              string  `json:"image"`
	CompressedMB       float64 `json:"compressed_mb"`
	UncompressedMB     float64 `json:"uncompressed_mb"`
	UpstreamBinary     string  `json:"upstream_binary,omitempty"`
	UpstreamBinaryMB   float64 `json:"upstream_binary_mb,omitempty"`
	UpstreamCompressed float64 `json:"upstream_binary_gzip_mb,omitempty"`
}

type result struct {
	When         string             `json:"when"`
	Nodes        int                `json:"nodes"`
	CPUs         int                `json:"cpus"`
	Cold         start              `json:"cold_start"`
	Warm         start              `json:"warm_start_after_down"`
	IdleMiB      map[string]float64 `json:"idle_memory_mib"` // docker stats: cgroup usage less inactive page cache
	ControlPlane float64            `json:"control_plane_idle_mib_total"`
	IdleRSSMiB   map[string]float64 `json:"idle_rss_mib"` // sum of VmRSS of the container's processes
	ControlRSS   float64            `json:"control_plane_idle_rss_mib_total"`
	Images       []imageSize        `json:"images"`
}

var (
	root  string
	nodes = flag.Int("nodes", 2, "node containers")
	out   = flag.String("out", "results", "directory for the JSON result")
	idle  = flag.Duration("idle", 30*time.Second, "settle time before docker stats")
)

func main() {
	flag.Parse()
	var err error
	if root, err = hostcluster.RepoRoot(); err != nil {
		fail(err)
	}
	kubeDir, err := os.MkdirTemp("", "composebench")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(kubeDir)
	env := append(os.Environ(), "COMPOSE_PROJECT_NAME="+project, "KUBESPLIT_API_PORT=26443",
		"KUBESPLIT_EDGE_SUBNET=10.253.0.0/24", "KUBESPLIT_GATEWAY_IP=10.253.0.2",
		"KUBESPLIT_KUBECONFIG_DIR="+kubeDir, "KUBESPLIT_TAG="+dockercluster.DefaultTag(), "NODES="+strconv.Itoa(*nodes))
	compose := func(args ...string) error {
		cmd := exec.Command(filepath.Join(root, "hack", "compose.sh"), args...)
		cmd.Env = env
		b, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("hack/compose.sh %s: %v\n%s", strings.Join(args, " "), err, b)
		}
		return nil
	}
	_ = compose("clean")
	defer func() { _ = compose("clean") }()
	r := &result{When: time.Now().UTC().Format(time.RFC3339), Nodes: *nodes, CPUs: runtime.NumCPU()}

	// the workload image sits in the nodes' images volume, as after `make load`
	if err := preloadTestapp(); err != nil {
		fail(err)
	}
	kubeconfig := filepath.Join(kubeDir, "admin.kubeconfig")
	if r.Cold, err = measureStart(compose, kubeconfig, "cold"); err != nil {
		fail(err)
	}
	fmt.Fprintf(os.Stderr, "composebench: settling %s before docker stats\n", *idle)
	time.Sleep(*idle)
	if r.IdleMiB, r.ControlPlane, err = idleMemory(); err != nil {
		fail(err)
	}
	if r.IdleRSSMiB, r.ControlRSS, err = idleRSS(); err != nil {
		fail(err)
	}
	if err := compose("down"); err != nil {
		fail(err)
	}
	if r.Warm, err = measureStart(compose, kubeconfig, "warm"); err != nil {
		fail(err)
	}
	if r.Images, err = imageSizes(); err != nil {
		fail(err)
	}
	printTable(r)
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fail(err)
	}
	path := filepath.Join(*out, "compose-"+time.Now().UTC().Format("20060102T150405Z")+".json")
	b, _ := json.MarshalIndent(r, "", "  ")
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		fail(err)
	}
	fmt.Println("wrote", path)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "composebench:", err)
	os.Exit(1)
}

func run(name string, args ...string) (string, error) {
	b, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, b)
	}
	return strings.TrimSpace(string(b)), nil
}

func preloadTestapp() error {
	vol := project + "_images"
	if _, err := run("docker", "volume", "create", "--label", "com.docker.compose.project="+project,
		"--label", "com.docker.compose.volume=images", vol); err != nil {
		return err
	}
	cmd := exec.Command("bash", "-c", fmt.Sprintf("docker save kubesplit/testapp:%s | docker run -i --rm -v %s:/images --entrypoint sh kubesplit/node:%s -c 'cat > /images/testapp.tar'",
		dockercluster.DefaultTag(), vol, dockercluster.DefaultTag()))
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("preloading testapp: %v: %s", err, b)
	}
	return nil
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
	fields := strings.Fields(sc.Text())
	var busy float64
	for i, v := range fields[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseFloat(v, 64)
		busy += n
	}
	return busy / 100 // USER_HZ
}

func measureStart(compose func(...string) error, kubeconfig, what string) (start, error) {
	var s start
	os.Remove(kubeconfig)
	t0, c0 := time.Now(), cpuSeconds()
	since := func() float64 { return time.Since(t0).Seconds() }
	upDone := make(chan error, 1)
	go func() {
		err := compose("up")
		s.UpReturnedS, s.CPUUpReturned = since(), cpuSeconds()-c0
		upDone <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var client *kubernetes.Clientset
	for client == nil {
		if ctx.Err() != nil {
			return s, fmt.Errorf("%s start: no admin kubeconfig", what)
		}
		if cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig); err == nil {
			client = kubernetes.NewForConfigOrDie(cfg)
		} else {
			time.Sleep(100 * time.Millisecond)
		}
	}
	for {
		if _, err := client.Discovery().ServerVersion(); err == nil {
			break
		}
		if ctx.Err() != nil {
			return s, fmt.Errorf("%s start: the API never answered", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.APIS = since()
	name := "first-" + what
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{
		TerminationGracePeriodSeconds: ptr.To[int64](0),
		Containers: []corev1.Container{{Name: "c", Image: "kubesplit/testapp:" + dockercluster.DefaultTag(),
			ImagePullPolicy: corev1.PullNever, Command: []string{"/testapp", "sleep"}}}}}
	for {
		_, err := client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{})
		if err == nil {
			break
		}
		if ctx.Err() != nil { // the default service account may not exist yet
			return s, fmt.Errorf("%s start: creating the first pod: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for {
		p, err := client.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err == nil && p.Status.Phase == corev1.PodRunning {
			break
		}
		if ctx.Err() != nil {
			return s, fmt.Errorf("%s start: the first pod never ran", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.FirstPodS, s.CPUFirstPodS = since(), cpuSeconds()-c0
	kubectl := filepath.Join(root, "bin", "kubectl")
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		b, err := exec.CommandContext(cctx, kubectl, "--kubeconfig", kubeconfig, "exec", name, "--",
			"/testapp", "lookup", "kubernetes.default").CombinedOutput()
		ccancel()
		if err == nil && strings.TrimSpace(string(b)) != "" {
			break
		}
		if ctx.Err() != nil {
			return s, fmt.Errorf("%s start: DNS never answered: %s", what, b)
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.DNSS, s.CPUDNSS = since(), cpuSeconds()-c0
	if err := <-upDone; err != nil {
		return s, err
	}
	_ = client.CoreV1().Pods("default").Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	return s, nil
}

// idleMemory reads docker stats of the project's containers; the control
// plane is every container but the nodes.
func idleMemory() (map[string]float64, float64, error) {
	ids, err := run("docker", "ps", "-q", "--filter", "label=com.docker.compose.project="+project)
	if err != nil {
		return nil, 0, err
	}
	args := append([]string{"stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}"}, strings.Fields(ids)...)
	outp, err := run("docker", args...)
	if err != nil {
		return nil, 0, err
	}
	mem := map[string]float64{}
	var cp float64
	for _, line := range strings.Split(outp, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name := strings.TrimPrefix(f[0], project+"_")
		mib := parseMem(f[1])
		mem[name] = mib
		if !strings.HasPrefix(name, "node") {
			cp += mib
		}
	}
	return mem, cp, nil
}

// idleRSS sums the resident memory of every process in each container
// (its PID namespace's processes, found through the container's cgroup).
func idleRSS() (map[string]float64, float64, error) {
	ids, err := run("docker", "ps", "-q", "--filter", "label=com.docker.compose.project="+project)
	if err != nil {
		return nil, 0, err
	}
	rss := map[string]float64{}
	var cp float64
	for _, id := range strings.Fields(ids) {
		info, err := run("docker", "inspect", "-f", "{{.Name}} {{.State.Pid}}", id)
		if err != nil {
			return nil, 0, err
		}
		name, pid, _ := strings.Cut(strings.TrimPrefix(info, "/"), " ")
		name = strings.TrimPrefix(name, project+"_")
		top, err := run("docker", "top", id, "-o", "pid")
		if err != nil {
			return nil, 0, err
		}
		var kib float64
		for _, p := range strings.Fields(top)[1:] {
			kib += vmRSS(p)
		}
		if kib == 0 {
			kib = vmRSS(pid)
		}
		rss[name] = kib / 1024
		if !strings.HasPrefix(name, "node") {
			cp += kib / 1024
		}
	}
	return rss, cp, nil
}

func vmRSS(pid string) float64 {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	return 0
}

func parseMem(s string) float64 {
	for _, u := range []struct {
		suffix string
		mib    float64
	}{{"GiB", 1024}, {"MiB", 1}, {"KiB", 1.0 / 1024}, {"B", 1.0 / (1 << 20)}} {
		if strings.HasSuffix(s, u.suffix) {
			v, _ := strconv.ParseFloat(strings.TrimSuffix(s, u.suffix), 64)
			return v * u.mib
		}
	}
	return 0
}

// upstream names the k8s.io/kubernetes command of the same role.
var upstream = map[string]string{"apiserver": "kube-apiserver", "scheduler": "kube-scheduler", "controllers": "kube-controller-manager"}

func imageSizes() ([]imageSize, error) {
	archive, err := hostArchive()
	if err != nil {
		return nil, err
	}
	compressed, err := compressedSizes(archive)
	if err != nil {
		return nil, err
	}
	upDir, err := os.MkdirTemp("", "upstream-bins")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(upDir)
	var pkgs []string
	for _, cmd := range upstream {
		pkgs = append(pkgs, "k8s.io/kubernetes/cmd/"+cmd)
	}
	sort.Strings(pkgs)
	build := exec.Command("go", append([]string{"build", "-trimpath", "-ldflags", "-s -w", "-o", upDir + "/"}, pkgs...)...)
	build.Dir, build.Env = root, append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the upstream binaries: %v: %s", err, b)
	}
	var sizes []imageSize
	for _, img := range []string{"datastore", "apiserver", "scheduler", "controllers", "tunnel-gateway", "kubesplit", "coredns", "pause", "node"} {
		ref := "kubesplit/" + img + ":" + dockercluster.DefaultTag()
		raw, err := run("docker", "image", "inspect", "-f", "{{.Size}}", ref)
		if err != nil {
			return nil, err
		}
		n, _ := strconv.ParseFloat(raw, 64)
		is := imageSize{Image: img, UncompressedMB: n / 1e6, CompressedMB: compressed[ref] / 1e6}
		if cmd, ok := upstream[img]; ok {
			p := filepath.Join(upDir, cmd)
			st, err := os.Stat(p)
			if err != nil {
				return nil, err
			}
			is.UpstreamBinary, is.UpstreamBinaryMB = cmd, float64(st.Size())/1e6
			gz, err := run("bash", "-c", "gzip -c "+p+" | wc -c")
			if err != nil {
				return nil, err
			}
			g, _ := strconv.ParseFloat(gz, 64)
			is.UpstreamCompressed = g / 1e6
		}
		sizes = append(sizes, is)
	}
	return sizes, nil
}

// hostArchive is hack/images.sh's archive holding the host platform.
func hostArchive() (string, error) {
	tag := dockercluster.DefaultTag()
	for _, name := range []string{"kubesplit-images-" + tag + "-linux-" + runtime.GOARCH + ".tar", "kubesplit-images-" + tag + ".tar"} {
		p := filepath.Join(root, "dist", name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no image archive in %s/dist: run make images", root)
}

// compressedSizes sums the (gzip) layer and config blob sizes of each image's
// host-platform manifest in the archive's docker manifest.json.
func compressedSizes(archive string) (map[string]float64, error) {
	f, err := os.Open(archive)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	blobSize := map[string]int64{}
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		blobSize[h.Name] = h.Size
		if h.Name == "manifest.json" {
			if err := json.NewDecoder(tr).Decode(&manifest); err != nil {
				return nil, err
			}
		}
	}
	out := map[string]float64{}
	for _, m := range manifest {
		var total int64
		for _, l := range append([]string{m.Config}, m.Layers...) {
			total += blobSize[l]
		}
		for _, t := range m.RepoTags {
			out[strings.TrimPrefix(t, "docker.io/")] = float64(total)
		}
	}
	return out, nil
}

func printTable(r *result) {
	fmt.Printf("\ncompose cluster, %d nodes, %d CPUs (seconds since `make up`; CPU = machine busy CPU-seconds)\n", r.Nodes, r.CPUs)
	fmt.Printf("%-28s %10s %10s\n", "", "cold", "warm")
	row := func(name string, c, w float64) { fmt.Printf("%-28s %10.1f %10.1f\n", name, c, w) }
	row("API answering (s)", r.Cold.APIS, r.Warm.APIS)
	row("first pod Running (s)", r.Cold.FirstPodS, r.Warm.FirstPodS)
	row("  CPU-seconds", r.Cold.CPUFirstPodS, r.Warm.CPUFirstPodS)
	row("DNS answering in a pod (s)", r.Cold.DNSS, r.Warm.DNSS)
	row("  CPU-seconds", r.Cold.CPUDNSS, r.Warm.CPUDNSS)
	row("make up returned (s)", r.Cold.UpReturnedS, r.Warm.UpReturnedS)
	row("  CPU-seconds", r.Cold.CPUUpReturned, r.Warm.CPUUpReturned)
	fmt.Printf("\nidle memory after %s: docker stats (cgroup, less inactive cache) and process RSS\n", *idle)
	var names []string
	for n := range r.IdleMiB {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Printf("  %-26s %8.1f MiB %8.1f MiB\n", n, r.IdleMiB[n], r.IdleRSSMiB[n])
	}
	fmt.Printf("  %-26s %8.1f MiB %8.1f MiB (target < 400)\n", "control plane total", r.ControlPlane, r.ControlRSS)
	fmt.Printf("\n%-16s %12s %14s   %-24s %10s %10s\n", "image", "compressed", "uncompressed", "upstream binary (here)", "size", "gzip")
	for _, s := range r.Images {
		up := ""
		if s.UpstreamBinary != "" {
			up = fmt.Sprintf("%-24s %7.1f MB %7.1f MB", s.UpstreamBinary, s.UpstreamBinaryMB, s.UpstreamCompressed)
		}
		fmt.Printf("%-16s %9.1f MB %11.1f MB   %s\n", s.Image, s.CompressedMB, s.UncompressedMB, up)
	}
}
