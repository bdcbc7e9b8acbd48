package suite

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/testcluster"
)

// testapp is the project's test image (e2e/cmd/testapp): serve, get, lookup, echo.
func testapp() string { return "kubesplit/testapp:" + tag() }

func tag() string {
	if t := os.Getenv("KUBESPLIT_TAG"); t != "" {
		return t
	}
	return testcluster.DefaultTag
}

// run starts a cluster for t and removes it when t ends.
func run(t *testing.T, opts ...testcluster.Option) *testcluster.Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a cluster of containers: not under -short")
	}
	// what this machine needs (ENVIRONMENT.md): no reaper image, no guessing the host
	if os.Getenv("TESTCONTAINERS_RYUK_DISABLED") == "" {
		t.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
	}
	if os.Getenv("TESTCONTAINERS_HOST_OVERRIDE") == "" {
		t.Setenv("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")
	}
	start := time.Now()
	c, err := testcluster.Run(context.Background(), append([]testcluster.Option{testcluster.WithLogf(t.Logf)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	testcluster.Cleanup(t, c)
	t.Logf("cluster %s ready in %.1fs", c.ID, time.Since(start).Seconds())
	// the test image, as a user's locally built image gets there
	if len(c.Nodes()) > 0 {
		if err := c.LoadImages(context.Background(), testapp()); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), 500*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		// cond may explain a false with an error; a true ends the wait
		ok, err := cond(ctx)
		if ok {
			return true, nil
		}
		last = err
		return false, nil
	})
	if err != nil {
		t.Fatalf("%s: not within %s (last error: %v)", what, timeout, last)
	}
}

var web = map[string]string{"app": "web"}

// deployWeb creates Deployment and Service "web": replicas of testapp
// serving their pod name on :8080, spread over the nodes, with tolerations
// that evict them tolerationSeconds after their node becomes unreachable.
func deployWeb(t *testing.T, cs kubernetes.Interface, replicas int32, tolerationSeconds int64) {
	t.Helper()
	ctx := context.Background()
	tol := []corev1.Toleration{
		{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &tolerationSeconds},
		{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &tolerationSeconds},
	}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: web},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: web},
				Spec: corev1.PodSpec{
					Tolerations:                   tol,
					TerminationGracePeriodSeconds: ptr.To[int64](1),
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: corev1.LabelHostname,
						WhenUnsatisfiable: corev1.ScheduleAnyway, LabelSelector: &metav1.LabelSelector{MatchLabels: web}}},
					Containers: []corev1.Container{{Name: "web", Image: testapp(), ImagePullPolicy: corev1.PullNever,
						Command: []string{"/testapp", "serve", ":8080"},
						Ports:   []corev1.ContainerPort{{ContainerPort: 8080}},
						ReadinessProbe: &corev1.Probe{PeriodSeconds: 1,
							ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}}}},
				},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.ServiceSpec{Selector: web, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	if _, err := cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitWebReady(t, cs, replicas)
}

func waitWebReady(t *testing.T, cs kubernetes.Interface, replicas int32) {
	t.Helper()
	waitFor(t, "deployment web ready", 3*time.Minute, func(ctx context.Context) (bool, error) {
		d, err := cs.AppsV1().Deployments("default").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		s := d.Status
		return s.ReadyReplicas == replicas && s.UpdatedReplicas == replicas && s.Replicas == replicas,
			fmt.Errorf("%d ready, %d updated, %d replicas", s.ReadyReplicas, s.UpdatedReplicas, s.Replicas)
	})
}

// podState is what must not change while the control plane is upgraded
// under running pods.
type podState struct {
	node, containerID string
	restarts          int32
}

func webPods(t *testing.T, cs kubernetes.Interface) map[string]podState {
	t.Helper()
	pods, err := cs.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]podState{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		s := podState{node: p.Spec.NodeName}
		for _, st := range p.Status.ContainerStatuses {
			s.containerID, s.restarts = st.ContainerID, st.RestartCount
		}
		out[p.Name] = s
	}
	return out
}

// runPod runs testapp with args to completion (on node, if not "") and
// returns its log.
func runPod(t *testing.T, cs kubernetes.Interface, name, node string, args ...string) (string, error) {
	t.Helper()
	logs, _, err := runToEnd(t, cs, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			NodeName:      node,
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "c", Image: testapp(), ImagePullPolicy: corev1.PullNever,
				Command: append([]string{"/testapp"}, args...)}},
		},
	})
	return logs, err
}

// runToEnd creates pod (RestartPolicy Never) in default, waits up to 2
// minutes for it to finish, deletes it and returns its log and the node it
// ran on; a failed pod is an error with its log.
func runToEnd(t *testing.T, cs kubernetes.Interface, pod *corev1.Pod) (logs, node string, err error) {
	t.Helper()
	ctx := context.Background()
	name := pod.Name
	if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return "", "", err
	}
	defer func() {
		_ = cs.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	}()
	var phase corev1.PodPhase
	waitFor(t, "pod "+name+" to finish", 2*time.Minute, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		phase, node = p.Status.Phase, p.Spec.NodeName
		return phase == corev1.PodSucceeded || phase == corev1.PodFailed, fmt.Errorf("phase %s", phase)
	})
	logs, err = podLogs(ctx, cs, name)
	if err != nil {
		return "", node, fmt.Errorf("logs of %s: %w", name, err)
	}
	if phase != corev1.PodSucceeded {
		c := pod.Spec.Containers[0]
		return logs, node, fmt.Errorf("pod %s (%s) failed: %s", name, strings.Join(append(c.Command, c.Args...), " "), logs)
	}
	return logs, node, nil
}

// podLogs reads a pod's log through the apiserver, the gateway and the
// node's tunnel, as `kubectl logs` does.
func podLogs(ctx context.Context, cs kubernetes.Interface, name string) (string, error) {
	rc, err := cs.CoreV1().Pods("default").GetLogs(name, &corev1.PodLogOptions{}).Stream(ctx)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return strings.TrimSpace(string(b)), err
}

// fetchWeb has a client pod fetch the web Service by its DNS name; the
// answer is the name of the web pod that served it. A Service is served
// once kube-proxy has programmed it, a moment after its endpoints are
// ready: until then a connection is refused, so a refusal is retried for
// up to 30 s, with a new pod each time.
func fetchWeb(t *testing.T, cs kubernetes.Interface, name, node string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for i := 1; ; i++ {
		out, err := runPod(t, cs, fmt.Sprintf("%s-%d", name, i), node, "get", "http://web.default.svc.cluster.local/")
		if err == nil && strings.HasPrefix(out, "web-") {
			return out
		}
		if time.Now().After(deadline) || (err == nil) || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("fetching the web Service by name: %q %v", out, err)
		}
		t.Logf("attempt %d: %v", i, err)
		time.Sleep(time.Second)
	}
}

// docker runs the docker CLI (for what a test does beside the cluster, such
// as building an image) and returns its output.
func docker(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command("docker", args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func writeConfigMaps(t *testing.T, cs kubernetes.Interface, prefix string, n int) {
	t.Helper()
	for i := range n {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", prefix, i), Labels: map[string]string{"e2e": prefix}},
			Data: map[string]string{"i": fmt.Sprint(i)}}
		if _, err := cs.CoreV1().ConfigMaps("default").Create(context.Background(), cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func countConfigMaps(t *testing.T, cs kubernetes.Interface, prefix string) int {
	t.Helper()
	cms, err := cs.CoreV1().ConfigMaps("default").List(context.Background(), metav1.ListOptions{LabelSelector: "e2e=" + prefix})
	if err != nil {
		t.Fatal(err)
	}
	return len(cms.Items)
}
