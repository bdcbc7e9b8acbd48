package suite

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/testcluster"
)

// metricsServer: the bundled metrics-server serves the resource metrics API
// through its APIService (the apiserver reaches its pod through a node's
// tunnel and verifies it with the cluster CA): `kubectl top nodes` and
// `kubectl top pods -A` show numbers, and a HorizontalPodAutoscaler scales
// a Deployment up under a bounded CPU load and back down after it.
func metricsServer(t *testing.T, c *testcluster.Cluster) {
	cs := c.Client()
	waitFor(t, "metrics-server available", 3*time.Minute, func(ctx context.Context) (bool, error) {
		d, err := cs.AppsV1().Deployments(metav1.NamespaceSystem).Get(ctx, "metrics-server", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return deploymentAvailable(d), fmt.Errorf("%d of 1 ready", d.Status.ReadyReplicas)
	})
	t.Run("top-nodes", func(t *testing.T) { topNodes(t, c) })
	t.Run("top-pods", func(t *testing.T) { topPods(t, c) })
	t.Run("node-proxy-narrowed", func(t *testing.T) { nodeProxyNarrowed(t, c) })
	t.Run("hpa", func(t *testing.T) { autoscale(t, c.RESTConfig(), cs) })
}

// usage is the part of NodeMetrics and a PodMetrics container we read
// (k8s.io/metrics' types, without the module).
type usage struct {
	Metadata metav1.ObjectMeta            `json:"metadata"`
	Usage    map[string]resource.Quantity `json:"usage"`
}

type podMetrics struct {
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Containers []struct {
		Name  string                       `json:"name"`
		Usage map[string]resource.Quantity `json:"usage"`
	} `json:"containers"`
}

// metricsList GETs a metrics.k8s.io list, as kubectl top does.
func metricsList[T any](ctx context.Context, cs kubernetes.Interface, resource string) ([]T, error) {
	b, err := cs.Discovery().RESTClient().Get().AbsPath("/apis/metrics.k8s.io/v1beta1/" + resource).DoRaw(ctx)
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []T `json:"items"`
	}
	err = json.Unmarshal(b, &list)
	return list.Items, err
}

func topNodes(t *testing.T, c *testcluster.Cluster) {
	cs := c.Client()
	waitFor(t, "NodeMetrics with CPU and memory for every node", 2*time.Minute, func(ctx context.Context) (bool, error) {
		nodes, err := metricsList[usage](ctx, cs, "nodes")
		if err != nil {
			return false, err
		}
		got := map[string]usage{}
		for _, n := range nodes {
			got[n.Metadata.Name] = n
		}
		for _, name := range c.Nodes() {
			n, ok := got[name]
			cpu, mem := n.Usage["cpu"], n.Usage["memory"]
			if !ok || cpu.IsZero() || mem.IsZero() {
				return false, fmt.Errorf("node %s: %v", name, n.Usage)
			}
		}
		for _, n := range nodes {
			cpu, mem := n.Usage["cpu"], n.Usage["memory"]
			t.Logf("node %s: cpu %s, memory %s", n.Metadata.Name, cpu.String(), mem.String())
		}
		return true, nil
	})
	if out, ok := kubectl(t, c, "top", "nodes"); ok {
		for _, name := range c.Nodes() {
			if !strings.Contains(out, name) {
				t.Errorf("kubectl top nodes does not show %s:\n%s", name, out)
			}
		}
		t.Logf("kubectl top nodes:\n%s", out)
	}
}

func topPods(t *testing.T, c *testcluster.Cluster) {
	cs := c.Client()
	waitFor(t, "PodMetrics of the running CoreDNS and metrics-server pods", 2*time.Minute, func(ctx context.Context) (bool, error) {
		pods, err := metricsList[podMetrics](ctx, cs, "pods")
		if err != nil {
			return false, err
		}
		found := map[string]bool{}
		for _, p := range pods {
			for _, ctr := range p.Containers {
				mem := ctr.Usage["memory"]
				if p.Metadata.Namespace == metav1.NamespaceSystem && !mem.IsZero() && (ctr.Name == "coredns" || ctr.Name == "metrics-server") {
					found[ctr.Name] = true
					cpu := ctr.Usage["cpu"]
					// metrics-server's own working set, idle: the number the README reports
					t.Logf("pod %s/%s container %s: cpu %s, memory %s (%.1f MiB)", p.Metadata.Namespace, p.Metadata.Name, ctr.Name,
						cpu.String(), mem.String(), float64(mem.Value())/(1<<20))
				}
			}
		}
		return found["coredns"] && found["metrics-server"], fmt.Errorf("%d pods with metrics, found %v", len(pods), found)
	})
	if out, ok := kubectl(t, c, "top", "pods", "-A"); ok {
		if !strings.Contains(out, "metrics-server-") || !strings.Contains(out, "coredns-") {
			t.Errorf("kubectl top pods -A shows neither metrics-server nor CoreDNS:\n%s", out)
		}
		t.Logf("kubectl top pods -A:\n%s", out)
	}
}

// kubectl runs the kubectl that hack/build.sh builds (bin/kubectl, when it
// builds everything) with the cluster's admin kubeconfig: what the user
// sees. Without that binary it says so and reports false.
func kubectl(t *testing.T, c *testcluster.Cluster, args ...string) (string, bool) {
	t.Helper()
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := c.WriteKubeconfig(kc); err != nil {
		t.Fatal(err)
	}
	return kubectlWith(t, kc, args...)
}

// kubectlWith runs bin/kubectl against the cluster of a kubeconfig file.
func kubectlWith(t *testing.T, kc string, args ...string) (string, bool) {
	t.Helper()
	bin, err := filepath.Abs("../../bin/kubectl")
	if err == nil {
		_, err = os.Stat(bin)
	}
	if err != nil {
		t.Logf("no bin/kubectl (hack/build.sh builds it when IMAGES is empty): checked through the API only")
		return "", false
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", kc}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), true
}

// nodeProxyNarrowed: metrics-server's account may GET nodes/proxy, which
// the bundled ValidatingAdmissionPolicy narrows to the kubelet's
// /metrics/resource: any other kubelet path is refused to it.
func nodeProxyNarrowed(t *testing.T, c *testcluster.Cluster) {
	cfg := c.RESTConfig()
	cfg.Impersonate.UserName = "system:serviceaccount:kube-system:metrics-server"
	cfg.Impersonate.Groups = []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"}
	as, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	node := c.Nodes()[0]
	// (the body, not the error: client-go does not decode a proxy's Status)
	proxy := func(path string) (int, string, error) {
		var code int
		b, err := as.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes/" + node + "/proxy" + path).Do(ctx).StatusCode(&code).Raw()
		return code, string(b), err
	}
	if code, b, err := proxy("/metrics/resource"); err != nil || !strings.Contains(b, "node_cpu_usage_seconds_total") {
		t.Fatalf("metrics-server's account reading %s's /metrics/resource: %d %v %.200s", node, code, err, b)
	}
	for _, path := range []string{"/pods", "/configz", "/metrics/cadvisor", "/exec/kube-system/x/y?command=id"} {
		code, b, _ := proxy(path)
		if code != http.StatusForbidden || !strings.Contains(b, "may read only /metrics/resource through the node proxy") {
			t.Errorf("metrics-server's account reading %s's %s: %d %.300s, want it refused by the policy", node, path, code, b)
		}
	}
}

// autoscale: a Deployment of pods that each burn CPU until one moment (the
// load stops by itself), with an HPA aiming at 50% of the CPU they
// request. Each pod burns up to its limit, 300% of its request: the HPA
// scales up to its maximum, and once the load is over, back to one.
func autoscale(t *testing.T, cfg *rest.Config, cs kubernetes.Interface) {
	ctx := context.Background()
	const name = "burn"
	labels := map[string]string{"app": name}
	// the load's bound: long enough to see metrics of a started pod (two
	// scrapes, 15 s apart) and an HPA sync (15 s) after them, with room for
	// a slow machine (the scale-up took 46-61 s on 2 busy cores); the test
	// ends it as soon as the HPA has scaled up
	loadEnds := time.Now().Add(120 * time.Second)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](1),
					Containers: []corev1.Container{{Name: name, Image: testapp(), ImagePullPolicy: corev1.PullNever,
						Command: []string{"/testapp", "burn", loadEnds.UTC().Format(time.RFC3339)},
						Resources: corev1.ResourceRequirements{
							Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m")},
							// the load per pod, kept small on a shared machine
							Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("150m")},
						}}},
				},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	hpa := &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: name},
			MinReplicas:    ptr.To[int32](1),
			MaxReplicas:    3,
			Metrics: []autoscalingv2.MetricSpec{{Type: autoscalingv2.ResourceMetricSourceType, Resource: &autoscalingv2.ResourceMetricSource{
				Name: corev1.ResourceCPU, Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: ptr.To[int32](50)},
			}}},
			// scale down soon after the load (the default waits 5 minutes)
			Behavior: &autoscalingv2.HorizontalPodAutoscalerBehavior{ScaleDown: &autoscalingv2.HPAScalingRules{StabilizationWindowSeconds: ptr.To[int32](10)}},
		},
	}
	if _, err := cs.AutoscalingV2().HorizontalPodAutoscalers("default").Create(ctx, hpa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cs.AutoscalingV2().HorizontalPodAutoscalers("default").Delete(ctx, name, metav1.DeleteOptions{})
		_ = cs.AppsV1().Deployments("default").Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationForeground)})
	}()

	replicas := func(ctx context.Context) (int32, string, error) {
		h, err := cs.AutoscalingV2().HorizontalPodAutoscalers("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return 0, "", err
		}
		util := "unknown"
		for _, m := range h.Status.CurrentMetrics {
			if m.Resource != nil && m.Resource.Current.AverageUtilization != nil {
				util = fmt.Sprintf("%d%%", *m.Resource.Current.AverageUtilization)
			}
		}
		return h.Status.CurrentReplicas, fmt.Sprintf("%d replicas (desired %d) at %s CPU", h.Status.CurrentReplicas, h.Status.DesiredReplicas, util), nil
	}
	start := time.Now()
	waitFor(t, "the HPA scaling up under load", time.Until(loadEnds), func(ctx context.Context) (bool, error) {
		n, state, err := replicas(ctx)
		if err != nil {
			return false, err
		}
		return n == 3, errors.New(state)
	})
	t.Logf("scaled up to 3 after %.0fs", time.Since(start).Seconds())
	// end the load now in all three pods (the new ones burn too), not at
	// loadEnds; then come metrics, an HPA sync and the 10 s window
	stopped := map[string]bool{}
	waitFor(t, "the load stopped in the 3 pods", time.Until(loadEnds), func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return false, err
		}
		for _, p := range pods.Items {
			if stopped[p.Name] || p.Status.Phase != corev1.PodRunning {
				continue
			}
			// (its first line says the burn has its signal handler: a
			// SIGUSR1 before it would end the process, and a restarted one
			// would burn again)
			if b, err := cs.CoreV1().Pods("default").GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(ctx); err != nil || !strings.Contains(string(b), "burning one CPU") {
				continue
			}
			if _, err := podExec(ctx, cfg, cs, "default/"+p.Name, "/testapp", "stop-burn"); err != nil {
				return false, fmt.Errorf("stop-burn in %s: %w", p.Name, err)
			}
			stopped[p.Name] = true
		}
		return len(stopped) >= 3, fmt.Errorf("stopped in %d pods of %d", len(stopped), len(pods.Items))
	})
	loadEnded := time.Now()
	waitFor(t, "the HPA scaling back down after the load", 3*time.Minute, func(ctx context.Context) (bool, error) {
		n, state, err := replicas(ctx)
		if err != nil {
			return false, err
		}
		return n == 1, errors.New(state)
	})
	t.Logf("back to 1 replica %.0fs after the load ended", time.Since(loadEnded).Seconds())
}
