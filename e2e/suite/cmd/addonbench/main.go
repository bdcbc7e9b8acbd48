// Command addonbench measures the bundled addons on a one-node testcluster:
//   - a small chart (a ConfigMap and a ServiceAccount) from a HelmChart
//     created → its Ready condition True (the HelmChart controller, Helm's
//     Go SDK in the controllers), beside the baseline of the same run: the
//     same chart archive installed with the helm CLI (`helm install`,
//     command to exit), median of -runs each;
//   - Traefik's idle memory (working set from the metrics API, beside the
//     other kube-system addons'), after -idle;
//   - request latency through Traefik (its ClusterIP, an Ingress host)
//     beside the same backend called directly at its ClusterIP: p50/p99 of
//     -requests sequential requests from a pod (testapp latency).
//
// It prints tables and writes JSON under -out.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/e2e/suite/internal/benchstat"
	"github.com/kubesplit/kubesplit/testcluster"
)

var (
	runs     = flag.Int("runs", 5, "installs per way (the median is reported)")
	requests = flag.Int("requests", 2000, "requests per latency series")
	idle     = flag.Duration("idle", time.Minute, "idle time before memory is read")
	helmBin  = flag.String("helm", "../../bin/helm", "the helm CLI (hack/bench.sh builds it)")
	out      = flag.String("out", "results", "directory for the JSON result")
)

var helmChartGVR = schema.GroupVersionResource{Group: "helm.cattle.io", Version: "v1", Resource: "helmcharts"}

type latency struct {
	Name   string  `json:"name"`
	N      int     `json:"n"`
	Errors int     `json:"errors"`
	P50ms  float64 `json:"p50_ms"`
	P99ms  float64 `json:"p99_ms"`
	MaxMs  float64 `json:"max_ms"`
}

type result struct {
	When       string             `json:"when"`
	Tag        string             `json:"tag"`
	HelmChart  []float64          `json:"helmchart_s"`
	HelmCLI    []float64          `json:"helm_cli_s"`
	MedianHC   float64            `json:"median_helmchart_s"`
	MedianCLI  float64            `json:"median_helm_cli_s"`
	MemoryMiB  map[string]float64 `json:"idle_working_set_mib"`
	Latency    []latency          `json:"latency"`
	IdleWaitS  float64            `json:"idle_s"`
	RequestsPS int                `json:"requests_per_series"`
}

var tag string

func main() {
	flag.Parse()
	tag = benchstat.Setup()
	helm, err := filepath.Abs(*helmBin)
	if err != nil {
		fail(err)
	}
	if _, err := os.Stat(helm); err != nil {
		fail(fmt.Errorf("no helm CLI at %s (hack/bench.sh builds it): %w", helm, err))
	}
	ctx := context.Background()
	c, err := testcluster.Run(ctx, testcluster.WithNodes(1))
	if err != nil {
		fail(err)
	}
	defer c.Terminate(ctx)
	// the backend and the load run testapp, which nodes do not preload
	if err := c.LoadImages(ctx, "kubesplit/testapp:"+tag); err != nil {
		fail(err)
	}
	dir, err := os.MkdirTemp("", "addonbench")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := c.WriteKubeconfig(kubeconfig); err != nil {
		fail(err)
	}
	cs := c.Client()
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		fail(err)
	}
	r := result{When: time.Now().UTC().Format(time.RFC3339), Tag: tag, IdleWaitS: idle.Seconds(), RequestsPS: *requests}

	// HelmChart vs helm install, alternating
	tgz := smallChart()
	chartFile := filepath.Join(dir, "small.tgz")
	if err := os.WriteFile(chartFile, tgz, 0o644); err != nil {
		fail(err)
	}
	for i := range *runs {
		s, err := viaHelmChart(ctx, dyn, fmt.Sprintf("hc-%d", i), tgz)
		if err != nil {
			fail(err)
		}
		r.HelmChart = append(r.HelmChart, s)
		start := time.Now()
		cmd := exec.CommandContext(ctx, helm, "install", fmt.Sprintf("cli-%d", i), chartFile, "--namespace", "default", "--kubeconfig", kubeconfig)
		if b, err := cmd.CombinedOutput(); err != nil {
			fail(fmt.Errorf("helm install: %v: %s", err, b))
		}
		r.HelmCLI = append(r.HelmCLI, benchstat.Round2(time.Since(start).Seconds()))
		fmt.Fprintf(os.Stderr, "run %d/%d: HelmChart %.2fs, helm install %.2fs\n", i+1, *runs, s, r.HelmCLI[i])
	}
	r.MedianHC, r.MedianCLI = benchstat.Median(r.HelmChart), benchstat.Median(r.HelmCLI)

	// Traefik: an Ingress to a testapp backend
	if err := backend(ctx, cs); err != nil {
		fail(err)
	}
	fmt.Fprintf(os.Stderr, "idle for %s\n", *idle)
	time.Sleep(*idle)
	if r.MemoryMiB, err = addonMemory(ctx, cs); err != nil {
		fail(err)
	}
	tr, err := cs.CoreV1().Services("kube-system").Get(ctx, "traefik", metav1.GetOptions{})
	if err != nil {
		fail(err)
	}
	web, err := cs.CoreV1().Services("default").Get(ctx, "bench-web", metav1.GetOptions{})
	if err != nil {
		fail(err)
	}
	for _, s := range []struct{ name, url, host string }{
		{"direct: the backend's ClusterIP", "http://" + web.Spec.ClusterIP + "/", ""},
		{"through Traefik: its ClusterIP, Ingress host", "http://" + tr.Spec.ClusterIP + "/", "bench.kubesplit.test"},
	} {
		l, err := measureLatency(ctx, cs, s.url, s.host)
		if err != nil {
			fail(fmt.Errorf("%s: %w", s.name, err))
		}
		l.Name = s.name
		r.Latency = append(r.Latency, l)
	}

	fmt.Printf("\nA small chart deployed, median of %d (s):\n| way | median s | runs |\n|---|---|---|\n", *runs)
	fmt.Printf("| HelmChart → Ready (HelmChart controller) | %.2f | %v |\n", r.MedianHC, r.HelmChart)
	fmt.Printf("| baseline: helm install (CLI, to exit) | %.2f | %v |\n", r.MedianCLI, r.HelmCLI)
	fmt.Printf("\nIdle working set after %s (MiB, metrics API):\n| pod | MiB |\n|---|---|\n", *idle)
	for _, k := range sortedKeys(r.MemoryMiB) {
		fmt.Printf("| %s | %.1f |\n", k, r.MemoryMiB[k])
	}
	fmt.Printf("\nRequest latency from a pod, %d sequential requests, one kept-alive connection (ms):\n| path | p50 | p99 | max | errors |\n|---|---|---|---|---|\n", *requests)
	for _, l := range r.Latency {
		fmt.Printf("| %s | %.2f | %.2f | %.2f | %d |\n", l.Name, l.P50ms, l.P99ms, l.MaxMs, l.Errors)
	}
	path, err := benchstat.WriteJSON(*out, "addons", r)
	if err != nil {
		fail(err)
	}
	fmt.Println("wrote", path)
}

// smallChart is a chart archive of a ConfigMap and a ServiceAccount named
// after the release.
func smallChart() []byte {
	files := map[string]string{
		"small/Chart.yaml":            "apiVersion: v2\nname: small\nversion: 0.1.0\n",
		"small/values.yaml":           "greeting: hello\n",
		"small/templates/config.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\ndata:\n  greeting: {{ .Values.greeting }}\n",
		"small/templates/sa.yaml":     "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {{ .Release.Name }}\n",
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, name := range sortedKeys(files) {
		_ = tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(files[name]))})
		_, _ = tw.Write([]byte(files[name]))
	}
	_ = tw.Close()
	_ = gz.Close()
	return buf.Bytes()
}

// viaHelmChart creates a HelmChart of the chart and times it to Ready.
func viaHelmChart(ctx context.Context, dyn dynamic.Interface, name string, tgz []byte) (float64, error) {
	charts := dyn.Resource(helmChartGVR).Namespace("default")
	hc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "helm.cattle.io/v1", "kind": "HelmChart",
		"metadata": map[string]any{"name": name, "namespace": "default"},
		"spec":     map[string]any{"chartContent": base64.StdEncoding.EncodeToString(tgz)},
	}}
	start := time.Now()
	if _, err := charts.Create(ctx, hc, metav1.CreateOptions{}); err != nil {
		return 0, err
	}
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		u, err := charts.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			if m, ok := c.(map[string]any); ok && m["type"] == "Ready" && m["status"] == "True" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return 0, fmt.Errorf("HelmChart %s not Ready: %w", name, err)
	}
	return benchstat.Round2(time.Since(start).Seconds()), nil
}

// backend runs testapp behind ClusterIP Service bench-web and an Ingress
// for host bench.kubesplit.test, and waits until Traefik serves it.
func backend(ctx context.Context, cs kubernetes.Interface) error {
	labels := map[string]string{"app": "bench-web"}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bench-web", Labels: labels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "kubesplit/testapp:" + tag, ImagePullPolicy: corev1.PullNever,
			Command: []string{"/testapp", "serve", "--port", "8080"}}}}}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return err
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "bench-web"},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	if _, err := cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return err
	}
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: "bench"}, Spec: networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{{
		Host: "bench.kubesplit.test", IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
			Paths: []networkingv1.HTTPIngressPath{{Path: "/", PathType: ptr.To(networkingv1.PathTypePrefix),
				Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "bench-web", Port: networkingv1.ServiceBackendPort{Number: 80}}}}}}},
	}}}}
	if _, err := cs.NetworkingV1().Ingresses("default").Create(ctx, ing, metav1.CreateOptions{}); err != nil {
		return err
	}
	// a short run through Traefik: it succeeds once Traefik is up and has the route
	tr := func(ctx context.Context) (bool, error) {
		s, err := cs.CoreV1().Services("kube-system").Get(ctx, "traefik", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		l, err := runLatency(ctx, cs, "http://"+s.Spec.ClusterIP+"/", "bench.kubesplit.test", 10)
		return err == nil && l.Errors == 0, nil
	}
	return wait.PollUntilContextTimeout(ctx, 2*time.Second, 4*time.Minute, true, tr)
}

func measureLatency(ctx context.Context, cs kubernetes.Interface, url, host string) (latency, error) {
	return runLatency(ctx, cs, url, host, *requests)
}

// runLatency runs `testapp latency` in a pod and reads its JSON line.
func runLatency(ctx context.Context, cs kubernetes.Interface, url, host string, n int) (latency, error) {
	var l latency
	name := fmt.Sprintf("latency-%d", time.Now().UnixNano())
	args := []string{"/testapp", "latency", url, fmt.Sprint(n)}
	if host != "" {
		args = append(args, host)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "load",
			Image: "kubesplit/testapp:" + tag, ImagePullPolicy: corev1.PullNever, Command: args}}}}
	pods := cs.CoreV1().Pods("default")
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return l, err
	}
	defer func() {
		_ = pods.Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	}()
	var phase corev1.PodPhase
	if err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		phase = p.Status.Phase
		return phase == corev1.PodSucceeded || phase == corev1.PodFailed, nil
	}); err != nil {
		return l, fmt.Errorf("pod %s: %w", name, err)
	}
	logs, err := pods.GetLogs(name, &corev1.PodLogOptions{}).DoRaw(ctx)
	if err != nil {
		return l, err
	}
	if phase != corev1.PodSucceeded {
		return l, fmt.Errorf("pod %s %s: %s", name, phase, strings.TrimSpace(string(logs)))
	}
	return l, json.Unmarshal(bytes.TrimSpace(logs), &l)
}

// addonMemory reads the working set of every kube-system pod from the
// metrics API (metrics-server), summed over its containers.
func addonMemory(ctx context.Context, cs kubernetes.Interface) (map[string]float64, error) {
	var list struct {
		Items []struct {
			Metadata   metav1.ObjectMeta `json:"metadata"`
			Containers []struct {
				Usage map[string]resource.Quantity `json:"usage"`
			} `json:"containers"`
		} `json:"items"`
	}
	err := wait.PollUntilContextTimeout(ctx, 2*time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		b, err := cs.CoreV1().RESTClient().Get().AbsPath("/apis/metrics.k8s.io/v1beta1/namespaces/kube-system/pods").DoRaw(ctx)
		if err != nil || json.Unmarshal(b, &list) != nil {
			return false, nil
		}
		return len(list.Items) > 0, nil
	})
	if err != nil {
		return nil, fmt.Errorf("metrics API: %w", err)
	}
	m := map[string]float64{}
	for _, p := range list.Items {
		name := p.Metadata.Labels["app.kubernetes.io/name"]
		if name == "" {
			name = p.Metadata.Labels["k8s-app"]
		}
		if name == "" {
			name = p.Metadata.Name
		}
		for _, c := range p.Containers {
			mem := c.Usage["memory"]
			m[name] += benchstat.Round(float64(mem.Value()) / (1 << 20))
		}
	}
	return m, nil
}

func sortedKeys[V any](m map[string]V) []string {
	var k []string
	for s := range m {
		k = append(k, s)
	}
	slices.Sort(k)
	return k
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "addonbench:", err)
	os.Exit(1)
}
