package suite

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/testcluster"
)

// TestBox is the industrial PC: one box (a node container, the role images
// in its images directory, nothing pulled) whose agent runs the control
// plane as static pods, and a second box that joins it through its gateway.
// The scenarios share the cluster and run in order.
func TestBox(t *testing.T) {
	c := run(t, testcluster.WithControlPlaneBox(), testcluster.WithNodes(1))
	for _, s := range boxScenarios {
		if !t.Run(s.name, func(t *testing.T) { s.run(t, c) }) {
			t.Logf("scenario %s failed; going on with the next", s.name)
		}
	}
}

var boxScenarios = []struct {
	name string
	run  func(t *testing.T, c *testcluster.Cluster)
}{
	{"control-plane-pods", boxControlPlanePods},
	{"second-box-joins", boxSecondJoins},
	{"bad-input", boxBadInput},
	{"upgrade", boxUpgrade},
	{"certificates", boxCertificates}, // before the power cut, which restarts every role on the renewed files
	{"snapshot", boxSnapshot},
	{"power-cut", boxPowerCut},
}

// boxControlPlanePods: the five roles are mirror pods in kube-system, as
// kubeadm's control plane is, with what the manifests promise.
func boxControlPlanePods(t *testing.T, c *testcluster.Cluster) {
	ctx := context.Background()
	cs := c.Client()
	pods, err := cs.CoreV1().Pods(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{LabelSelector: "tier=control-plane"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pods.Items {
		names = append(names, p.Name)
		if p.Spec.NodeName != testcluster.Box || p.Status.Phase != corev1.PodRunning || !p.Spec.HostNetwork ||
			p.Spec.PriorityClassName != "system-node-critical" || p.Annotations["kubesplit.io/config-hash"] == "" {
			t.Errorf("mirror pod %s: node %s, phase %s, hostNetwork %v, priority %q, annotations %v",
				p.Name, p.Spec.NodeName, p.Status.Phase, p.Spec.HostNetwork, p.Spec.PriorityClassName, p.Annotations)
		}
		if ref := p.OwnerReferences; len(ref) != 1 || ref[0].Kind != "Node" {
			t.Errorf("%s is not a mirror pod (owner %v)", p.Name, ref)
		}
	}
	slices.Sort(names)
	want := []string{}
	for _, r := range testcluster.Roles() {
		want = append(want, testcluster.MirrorPod(r))
	}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Fatalf("control-plane pods %v, want %v", names, want)
	}
	if out, ok := kubectl(t, c, "get", "pods", "-A", "-o", "wide"); ok {
		for _, n := range want {
			if !strings.Contains(out, n) {
				t.Errorf("kubectl get pods -A does not list %s:\n%s", n, out)
			}
		}
		t.Logf("kubectl get pods -A:\n%s", out)
	}
}

// boxSecondJoins: the second box joined through the first one's gateway;
// a pod on it serves a pod on the first box through a Service by DNS
// name; logs and exec work on pods of both boxes.
func boxSecondJoins(t *testing.T, c *testcluster.Cluster) {
	ctx := context.Background()
	cs := c.Client()
	second := c.Nodes()[1]
	labels := map[string]string{"app": "box-web"}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "box-web", Labels: labels},
		Spec: corev1.PodSpec{NodeName: second, TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{Name: "web", Image: testapp(), ImagePullPolicy: corev1.PullNever,
				Command: []string{"/testapp", "serve", ":8080"},
				ReadinessProbe: &corev1.Probe{PeriodSeconds: 1,
					ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}}}}},
	}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cs.CoreV1().Pods("default").Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
		_ = cs.CoreV1().Services("default").Delete(ctx, pod.Name, metav1.DeleteOptions{})
	}()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "box-web"},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	if _, err := cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPodReady(t, cs, "default", pod.Name)

	// from a pod on the first box, by DNS name (CoreDNS, kube-proxy, the overlay between the boxes)
	deadline := time.Now().Add(30 * time.Second)
	for i := 1; ; i++ {
		out, err := runPod(t, cs, fmt.Sprintf("box-client-%d", i), testcluster.Box, "get", "http://box-web.default.svc.cluster.local/")
		if err == nil && strings.TrimSpace(out) == "box-web" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a pod on %s fetching box-web (on %s) by name: %q %v", testcluster.Box, second, out, err)
		}
		time.Sleep(time.Second)
	}

	// logs and exec on both boxes, through each one's tunnel
	for _, node := range []string{testcluster.Box, second} {
		name := "box-exec-" + node
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: ptr.To[int64](0),
				Containers: []corev1.Container{{Name: "c", Image: testapp(), ImagePullPolicy: corev1.PullNever,
					Command: []string{"/testapp", "serve", ":8081"}}}}}
		if _, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer func() {
			_ = cs.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
		}()
		waitPodReady(t, cs, "default", name)
		if out, ok := kubectl(t, c, "exec", name, "--", "/testapp", "echo", "hello-from", node); ok && !strings.Contains(out, "hello-from "+node) {
			t.Errorf("kubectl exec on %s: %q", node, out)
		}
		if _, ok := kubectl(t, c, "logs", name); !ok {
			continue
		}
		logs, err := podLogs(ctx, cs, name)
		if err != nil {
			t.Errorf("logs of a pod on %s: %v", node, err)
		} else {
			t.Logf("logs of %s: %q", name, logs)
		}
	}
}

func waitPodReady(t *testing.T, cs kubernetes.Interface, ns, name string) {
	t.Helper()
	waitFor(t, "pod "+name+" ready", 2*time.Minute, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, fmt.Errorf("phase %s", p.Status.Phase)
	})
}

// boxBadInput: what a box refuses, each with one line that names the
// problem, and exit code 2 (the supervisor does not restart that).
func boxBadInput(t *testing.T, c *testcluster.Cluster) {
	ctx := context.Background()
	agent := func(args ...string) string {
		t.Helper()
		out, err := c.Exec(ctx, testcluster.Box, append([]string{"kubesplit-node", "agent", "--control-plane"}, args...)...)
		if err == nil || !strings.Contains(err.Error(), "exited with 2") {
			t.Errorf("agent %v: want exit code 2, got %v: %s", args, err, out)
		}
		if strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("agent %v: want one line, got:\n%s", args, out)
		}
		return out
	}
	if out := agent(); !strings.Contains(out, "a control-plane agent already runs on this box") {
		t.Errorf("a second control-plane agent: %s", out)
	}
	if _, err := c.Exec(ctx, testcluster.Box, "sh", "-c", "mkdir -p /tmp/bad/manifests && echo 'kind: Pod\nspec: [' > /tmp/bad/manifests/apiserver.yaml"); err != nil {
		t.Fatal(err)
	}
	if out := agent("--data-dir", "/tmp/bad", "--cluster-data-dir", "/tmp/bad-cluster"); !strings.Contains(out, "/tmp/bad/manifests/apiserver.yaml is not a valid pod manifest") {
		t.Errorf("a corrupt manifest: %s", out)
	}
	if out := agent("--data-dir", "/tmp/fresh", "--cluster-data-dir", "/tmp/fresh-cluster"); !strings.Contains(out, "is in use on this box") {
		t.Errorf("a port in use: %s", out)
	}
	// a box without the role images: a node container of its own, offline
	// (its cgroup root, made in the host's tree it mounts, outlives it: removed after)
	bare := "kubesplit-bare-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	t.Cleanup(func() { removeHostCgroups(bare) })
	out, code := dockerRun(t, "--network", "none", "kubesplit/node:"+tag(), "--control-plane", "--node-ip", "10.99.0.1", "--node-name", "bare", "--cgroup-root", "/"+bare)
	if code != 2 || !strings.Contains(out, "image kubesplit/datastore:"+tag()+" (role datastore) is not on this box") {
		t.Errorf("a box without the role images: exit %d:\n%s", code, out)
	}
}

// removeHostCgroups removes the host's (empty) cgroup named name, in every
// hierarchy, children first.
func removeHostCgroups(name string) {
	dirs, _ := filepath.Glob("/sys/fs/cgroup/" + name)
	more, _ := filepath.Glob("/sys/fs/cgroup/*/" + name)
	for _, d := range append(dirs, more...) {
		var all []string
		_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				all = append(all, p)
			}
			return nil
		})
		for i := len(all) - 1; i >= 0; i-- {
			_ = os.Remove(all[i])
		}
	}
}

// dockerRun runs a node container to its end (at most two minutes), with
// what a node needs (as testcluster's nodes get), and returns its output and
// exit code.
func dockerRun(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	base := []string{"run", "--rm", "--init", "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
		"--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined", "--security-opt", "systempaths=unconfined",
		"--device", "/dev/kmsg", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/tmp"}
	cmd := exec.CommandContext(ctx, "docker", append(base, args...)...)
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("docker run: %v\n%s", err, out)
		}
		code = ee.ExitCode()
	}
	return string(out), code
}

// boxCertificates: `kubesplit certs check` on the box lists every
// certificate of its data directory; `kubesplit certs rotate` (as root, as an
// operator on the box would) renews every leaf now, the apiserver serves its
// new certificate without a restart and the API keeps answering. The power
// cut that follows starts every role again on the renewed files, owned as
// before by the roles' user.
func boxCertificates(t *testing.T, c *testcluster.Cluster) {
	ctx := context.Background()
	out, err := c.Exec(ctx, testcluster.Box, "kubesplit", "certs", "check")
	if err != nil || !strings.Contains(out, "apiserver.crt") || !strings.Contains(out, "datastore-server.crt") || strings.Contains(out, "EXPIRED") {
		t.Fatalf("kubesplit certs check on the box: %v\n%s", err, out)
	}
	host := strings.TrimPrefix(c.RESTConfig().Host, "https://")
	served := func() string {
		conn, err := tls.Dial("tcp", host, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // only reading the serial
		if err != nil {
			return ""
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := served()
	if before == "" {
		t.Fatal("no TLS handshake with the apiserver before the rotation")
	}
	out, err = c.Exec(ctx, testcluster.Box, "kubesplit", "certs", "rotate")
	if err != nil || strings.Count(out, "renewed ") < 10 {
		t.Fatalf("kubesplit certs rotate on the box: %v\n%s", err, out)
	}
	waitFor(t, "the box's apiserver to serve its renewed certificate", 2*time.Minute, func(context.Context) (bool, error) {
		now := served()
		return now != "" && now != before, nil
	})
	if _, err := c.Client().CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("the API after the rotation: %v", err)
	}
}
