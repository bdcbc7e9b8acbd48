// Package compose drives the dev cluster of deploy/compose the way a user
// does: `make up` (hack/compose.sh), `make load`, kubectl and client-go,
// `docker restart`, `make down` and `make up` again.
package compose

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/e2e/dockercluster"
	"github.com/kubesplit/kubesplit/e2e/hostcluster"
	kroles "github.com/kubesplit/kubesplit/roles"
)

// A project of its own, beside any dev cluster the user has up.
const (
	project   = "kubesplit-e2e"
	apiPort   = "16443"
	edgeNet   = "10.252.0.0/24"
	gatewayIP = "10.252.0.2"
	webImage  = "kubesplit-e2e/web:dev" // built by the test: a "locally built image"
)

var roles = kroles.Names()

type cluster struct {
	t          *testing.T
	root       string
	kubeconfig string
	client     kubernetes.Interface
}

func (c *cluster) env() []string {
	return append(os.Environ(), "COMPOSE_PROJECT_NAME="+project, "KUBESPLIT_API_PORT="+apiPort,
		"KUBESPLIT_EDGE_SUBNET="+edgeNet, "KUBESPLIT_GATEWAY_IP="+gatewayIP,
		"KUBESPLIT_KUBECONFIG_DIR="+filepath.Dir(c.kubeconfig), "KUBESPLIT_TAG="+dockercluster.DefaultTag())
}

// compose runs hack/compose.sh (what make up/down/load run).
func (c *cluster) compose(args ...string) string {
	c.t.Helper()
	cmd := exec.Command(filepath.Join(c.root, "hack", "compose.sh"), args...)
	cmd.Env = c.env()
	out, err := cmd.CombinedOutput()
	if err != nil {
		c.t.Fatalf("hack/compose.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (c *cluster) kubectl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.root, "bin", "kubectl"), append([]string{"--kubeconfig", c.kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func container(service string, n int) string { return fmt.Sprintf("%s_%s_%d", project, service, n) }

func docker(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := dockercluster.Docker(ctx, args...)
	if err != nil {
		t.Fatalf("docker %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	dockercluster.WaitFor(t, what, timeout, cond)
}

func up(t *testing.T) *cluster {
	t.Helper()
	root, err := hostcluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if os.Getenv("KUBESPLIT_KEEP") != "" { // the kubeconfig must outlive the test
		if dir, err = os.MkdirTemp("", "kubesplit-e2e-"); err != nil {
			t.Fatal(err)
		}
	}
	c := &cluster{t: t, root: root, kubeconfig: filepath.Join(dir, "admin.kubeconfig")}
	t.Cleanup(func() {
		if t.Failed() {
			cmd := exec.Command(filepath.Join(root, "hack", "compose.sh"), "logs", "--tail", "40")
			cmd.Env = c.env()
			out, _ := cmd.CombinedOutput()
			t.Logf("compose logs:\n%s", out)
		}
		if os.Getenv("KUBESPLIT_KEEP") != "" {
			t.Logf("KUBESPLIT_KEEP: cluster %s left up; kubeconfig %s", project, c.kubeconfig)
			return
		}
		cmd := exec.Command(filepath.Join(root, "hack", "compose.sh"), "clean")
		cmd.Env = c.env()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("compose clean: %v\n%s", err, out)
		}
	})
	start := time.Now()
	c.compose("up")
	t.Logf("make up: cluster ready (2 nodes Ready, CoreDNS available) in %s", time.Since(start).Round(100*time.Millisecond))
	cfg, err := clientcmd.BuildConfigFromFlags("", c.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(cfg.Host, "127.0.0.1:"+apiPort) {
		t.Fatalf("the admin kubeconfig points at %s, want the published port 127.0.0.1:%s", cfg.Host, apiPort)
	}
	c.client = kubernetes.NewForConfigOrDie(cfg)
	return c
}

func nodeNames(t *testing.T, c *cluster) []string {
	t.Helper()
	nodes, err := c.client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range nodes.Items {
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status != corev1.ConditionTrue {
				t.Errorf("node %s is not Ready: %s", n.Name, cond.Message)
			}
		}
		names = append(names, n.Name)
	}
	slices.Sort(names)
	return names
}

// runPod runs testapp with args to completion on node and returns its log.
func runPod(t *testing.T, c *cluster, name, node string, args ...string) string {
	t.Helper()
	out, err := tryRun(t, c, name, node, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// tryRun is runPod that returns a failed run as an error.
func tryRun(t *testing.T, c *cluster, name, node string, args ...string) (string, error) {
	t.Helper()
	return tryRunPod(t, c, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			NodeName:      node,
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "c", Image: webImage, ImagePullPolicy: corev1.PullNever,
				Command: append([]string{"/testapp"}, args...)}},
		},
	})
}

// tryRunPod runs pod (RestartPolicy Never) to its end and returns its log;
// a failed run is an error.
func tryRunPod(t *testing.T, c *cluster, pod *corev1.Pod) (string, error) {
	t.Helper()
	ctx := context.Background()
	name, node, cmd := pod.Name, pod.Spec.NodeName, pod.Spec.Containers[0].Command
	if _, err := c.client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var phase corev1.PodPhase
	waitFor(t, "pod "+name+" to finish", 2*time.Minute, func(ctx context.Context) (bool, error) {
		p, err := c.client.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		phase = p.Status.Phase
		return phase == corev1.PodSucceeded || phase == corev1.PodFailed, nil
	})
	logs, err := c.kubectl("logs", name)
	_ = c.client.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	if err != nil || phase != corev1.PodSucceeded {
		return "", fmt.Errorf("pod %s (%s %s): %s, %v", name, node, strings.Join(cmd, " "), logs, err)
	}
	return logs, nil
}

// onVolume runs script in the local-path helper image (a busybox shell,
// preloaded on the nodes) on node, with the claim "kept" at /data (made
// when missing: the default StorageClass, local-path), and returns its log.
func onVolume(t *testing.T, c *cluster, name, node, script string) string {
	t.Helper()
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "kept"},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("16Mi")}}},
	}
	if _, err := c.client.CoreV1().PersistentVolumeClaims("default").Create(context.Background(), pvc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	out, err := tryRunPod(t, c, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			// a selector, not spec.nodeName: the claim binds where the scheduler puts the pod
			NodeSelector:  map[string]string{corev1.LabelHostname: node},
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "c", Image: "kubesplit/local-path-helper:" + dockercluster.DefaultTag(),
				ImagePullPolicy: corev1.PullNever, Command: []string{"/bin/sh", "-c", script},
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "kept"}}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type podState struct{ uid, containerID string }

func webPods(t *testing.T, c *cluster) map[string]podState {
	t.Helper()
	pods, err := c.client.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]podState{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		id := ""
		for _, s := range p.Status.ContainerStatuses {
			id = s.ContainerID
			if s.RestartCount != 0 {
				t.Errorf("pod %s restarted %d times", p.Name, s.RestartCount)
			}
		}
		out[p.Name] = podState{string(p.UID), id}
	}
	return out
}

func waitWebReady(t *testing.T, c *cluster) {
	t.Helper()
	waitFor(t, "deployment web ready", 3*time.Minute, func(ctx context.Context) (bool, error) {
		d, err := c.client.AppsV1().Deployments("default").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return d.Status.ReadyReplicas == 2 && d.Status.UpdatedReplicas == 2 && d.Status.Replicas == 2, nil
	})
}

func deployWeb(t *testing.T, c *cluster, node string) {
	t.Helper()
	ctx := context.Background()
	labels := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{"kubernetes.io/hostname": node},
					Containers: []corev1.Container{{Name: "web", Image: webImage, ImagePullPolicy: corev1.PullNever,
						Ports:          []corev1.ContainerPort{{ContainerPort: 8080}},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1}}},
				},
			},
		},
	}
	if _, err := c.client.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Selector: labels,
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	if _, err := c.client.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitWebReady(t, c)
}

func checkConfigMaps(t *testing.T, c *cluster, n int) {
	t.Helper()
	cms, err := c.client.CoreV1().ConfigMaps("default").List(context.Background(), metav1.ListOptions{LabelSelector: "e2e=durable"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cms.Items) != n {
		t.Fatalf("%d of %d acknowledged ConfigMaps are there", len(cms.Items), n)
	}
}

// serveThroughService has a client pod on node `from` fetch the web Service by
// DNS name; the answer is the name of the web pod (on the other node) that served it.
func serveThroughService(t *testing.T, c *cluster, name, from string) string {
	t.Helper()
	body, err := tryServe(t, c, name, from)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func tryServe(t *testing.T, c *cluster, name, from string) (string, error) {
	t.Helper()
	out, err := tryRun(t, c, name, from, "get", "http://web.default.svc.cluster.local/")
	if err != nil {
		return "", err
	}
	if body := strings.TrimSpace(out); strings.HasPrefix(body, "web-") {
		return body, nil
	}
	return "", fmt.Errorf("the web Service answered %q, want a web pod's name", out)
}

func TestComposeCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the compose cluster (real Docker); hack/test.sh runs it without -short")
	}
	c := up(t)
	ctx := context.Background()

	// every role healthy (the images' own probe), both nodes Ready, CoreDNS available
	// and each with its CPU weight from roles/ (the gateway's is raised)
	for _, r := range roles {
		if h := docker(t, "inspect", "-f", "{{.State.Health.Status}}", container(r, 1)); h != "healthy" {
			t.Errorf("%s is %s, want healthy", r, h)
		}
		want := strconv.Itoa(kroles.Wiring{}.Role(r).CPUShares)
		if got := docker(t, "inspect", "-f", "{{.HostConfig.CpuShares}}", container(r, 1)); got != want {
			t.Errorf("%s has CPU shares %s, want %s (roles/)", r, got, want)
		}
	}
	nodes := nodeNames(t, c)
	if want := []string{project + "-node-1", project + "-node-2"}; !slices.Equal(nodes, want) {
		t.Fatalf("nodes %v, want %v (named after their containers)", nodes, want)
	}
	dns, err := c.client.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
	if err != nil || dns.Status.ReadyReplicas < 1 {
		t.Fatalf("CoreDNS not available: %v", err)
	}

	// a locally built image, put onto the nodes with make load
	build := exec.Command("docker", "build", "-q", "-t", webImage, "-")
	build.Stdin = strings.NewReader("FROM kubesplit/testapp:" + dockercluster.DefaultTag() + "\nLABEL io.kubesplit.e2e=web\n")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", webImage).Run() })
	// and nine more, loaded with it in one go (make load runs kubesplit image load)
	loaded := []string{webImage}
	for i := range 9 {
		img := fmt.Sprintf("kubesplit-e2e/extra-%d:dev", i)
		build := exec.Command("docker", "build", "-q", "-t", img, "-")
		build.Stdin = strings.NewReader(fmt.Sprintf("FROM %s\nLABEL io.kubesplit.e2e=extra-%d\n", webImage, i))
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("docker build: %v\n%s", err, out)
		}
		t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", img).Run() })
		loaded = append(loaded, img)
	}
	c.compose(append([]string{"load"}, loaded...)...)
	t.Run("make load put ten images on every node", func(t *testing.T) {
		for i := range nodes {
			have := docker(t, "exec", container("node", i+1), "ctr", "-n", "k8s.io", "images", "ls", "-q")
			for _, img := range loaded {
				if !slices.Contains(strings.Fields(have), "docker.io/"+img) {
					t.Errorf("%s is not on node %d:\n%s", img, i+1, have)
				}
			}
		}
	})

	t.Run("the apiserver cannot reach the nodes", func(t *testing.T) {
		nodeIP := docker(t, "inspect", "-f", `{{(index .NetworkSettings.Networks "`+project+`_edge").IPAddress}}`, container("node", 1))
		cmd := exec.Command("docker", "run", "--rm", "--network", "container:"+container("apiserver", 1), "--entrypoint", "bash",
			"kubesplit/node:"+dockercluster.DefaultTag(), "-c", "timeout 3 bash -c 'echo > /dev/tcp/"+nodeIP+"/10250'")
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Fatalf("a TCP connect from the apiserver's network to node %s:10250 succeeded:\n%s", nodeIP, out)
		}
	})

	t.Run("DNS names from pods", func(t *testing.T) {
		if got := runPod(t, c, "dns-kubernetes", nodes[0], "lookup", "kubernetes.default"); got != "10.43.0.1" {
			t.Errorf("kubernetes.default resolved to %q, want 10.43.0.1", got)
		}
		dnsSvc, err := c.client.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := runPod(t, c, "dns-kube-dns", nodes[1], "lookup", "kube-dns.kube-system.svc.cluster.local"); got != dnsSvc.Spec.ClusterIP {
			t.Errorf("kube-dns.kube-system resolved to %q, want %s", got, dnsSvc.Spec.ClusterIP)
		}
		// and the apiserver itself, through the kubernetes Service (the gateway's relay)
		if got := runPod(t, c, "in-cluster-api", nodes[1], "kube", "/version"); !strings.Contains(got, `"gitVersion": "v1.36.3"`) {
			t.Errorf("in-cluster GET /version: %s", got)
		}
	})

	deployWeb(t, c, nodes[1])
	before := webPods(t, c)
	t.Run("a Service serves a pod on the other node", func(t *testing.T) {
		served := serveThroughService(t, c, "client-a", nodes[0])
		if _, ok := before[served]; !ok {
			t.Fatalf("served by %q, not one of the web pods %v", served, before)
		}
	})

	t.Run("a LoadBalancer Service answers the host", func(t *testing.T) { loadBalancerFromHost(t, c) })
	t.Run("an Ingress answers the host through Traefik", func(t *testing.T) { ingressFromHost(t, c) })

	t.Run("logs and exec through the tunnel", func(t *testing.T) {
		var pod string
		for p := range before {
			pod = p
		}
		out, err := c.kubectl("exec", pod, "--", "/testapp", "echo", "hello", "from", "exec")
		if err != nil || !strings.Contains(out, "hello from exec") {
			t.Fatalf("kubectl exec: %q, %v", out, err)
		}
		out, err = c.kubectl("logs", "-l", "app=web", "--tail", "50", "--prefix")
		if err != nil || !strings.Contains(out, "testapp serving on :8080") {
			t.Fatalf("kubectl logs: %q, %v", out, err)
		}
	})

	// before the restarts below: they prove the roles (uid 65532) still
	// read the files a root operator renewed
	t.Run("certificates checked and rotated in place", func(t *testing.T) { rotateCertificates(t, c) })
	t.Run("kubesplit kubeconfig: the admin's, and a user's that RBAC knows by name and group", func(t *testing.T) {
		userKubeconfig(t, c)
	})
	t.Run("kubesplit snapshot: saved, listed, restored by name and from a file", func(t *testing.T) {
		snapshotRoundTrip(t, c, nodes)
	})

	// acknowledged writes before the restarts
	const durable = 20
	for i := range durable {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("durable-%02d", i), Labels: map[string]string{"e2e": "durable"}},
			Data: map[string]string{"i": fmt.Sprint(i)}}
		if _, err := c.client.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("each control-plane container restarted in turn", func(t *testing.T) {
		for _, r := range roles {
			start := time.Now()
			docker(t, "restart", container(r, 1))
			waitFor(t, r+" healthy after restart", 3*time.Minute, func(context.Context) (bool, error) {
				return docker(t, "inspect", "-f", "{{.State.Health.Status}}", container(r, 1)) == "healthy", nil
			})
			waitFor(t, "the API after restarting "+r, 2*time.Minute, func(ctx context.Context) (bool, error) {
				_, err := c.client.CoreV1().ConfigMaps("default").Get(ctx, "durable-00", metav1.GetOptions{})
				return err == nil, err
			})
			t.Logf("%s restarted: healthy and API answering in %s", r, time.Since(start).Round(100*time.Millisecond))
		}
		checkConfigMaps(t, c, durable)
		// the running pods were not touched: same pods, same containers, no restarts
		after := webPods(t, c)
		if fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("web pods changed across control-plane restarts:\nbefore %v\nafter  %v", before, after)
		}
		// and the cluster works: a new pod is scheduled, DNS and the Service answer,
		// exec rides the re-established tunnels
		serveThroughService(t, c, "client-b", nodes[0])
		waitFor(t, "kubectl exec after the gateway restart", time.Minute, func(context.Context) (bool, error) {
			out, err := c.kubectl("exec", "deploy/web", "--", "/testapp", "echo", "back")
			return strings.Contains(out, "back"), err
		})
	})

	// data on a local-path volume, which the nodes keep on their storage volume
	onVolume(t, c, "kept-writer", nodes[0], "echo kept-across-down-up > /data/file")

	t.Run("make down then make up returns the same cluster", func(t *testing.T) {
		c.compose("down")
		if out := docker(t, "ps", "-aq", "--filter", "label=com.docker.compose.project="+project); out != "" {
			t.Fatalf("containers left after down: %s", out)
		}
		start := time.Now()
		c.compose("up")
		t.Logf("make up after make down: ready in %s", time.Since(start).Round(100*time.Millisecond))
		if got := nodeNames(t, c); !slices.Equal(got, nodes) {
			t.Fatalf("nodes after down/up %v, want the same %v", got, nodes)
		}
		checkConfigMaps(t, c, durable)
		// the node containers are new: the loaded image comes back from the
		// nodes' images volume, and the kubelets start the kept pods again
		// (new containers; the Deployment's status may still show the old ones)
		waitFor(t, "web pods running again in the new node containers", 3*time.Minute, func(ctx context.Context) (bool, error) {
			pods, err := c.client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
			if err != nil {
				return false, err
			}
			fresh := 0
			for _, p := range pods.Items {
				for _, s := range p.Status.ContainerStatuses {
					if s.Ready && s.ContainerID != "" && s.ContainerID != before[p.Name].containerID {
						fresh++
					}
				}
			}
			return fresh == 2, nil
		})
		// endpoints and overlay routes follow within moments
		var err error
		for i := range 10 {
			if _, err = tryServe(t, c, fmt.Sprintf("client-c%d", i), nodes[0]); err == nil {
				break
			}
			time.Sleep(2 * time.Second)
		}
		if err != nil {
			t.Fatalf("the web Service after down/up: %v", err)
		}
		if got := onVolume(t, c, "kept-reader", nodes[0], "cat /data/file"); got != "kept-across-down-up" {
			t.Fatalf("the local-path volume after down/up holds %q, want what was written before", got)
		}
	})
}

// rotateCertificates: `make certs` lists every certificate, `make certs
// CMD=rotate ...` renews some now, and the running roles serve and use the
// new ones without a restart.
func rotateCertificates(t *testing.T, c *cluster) {
	out := c.compose("certs", "check")
	for _, want := range []string{"apiserver.crt", "datastore-client.crt", "scheduler.kubeconfig", "cluster-ca"} {
		if !strings.Contains(out, want) {
			t.Fatalf("certs check does not list %s:\n%s", want, out)
		}
	}
	served := func() string {
		conn, err := tls.Dial("tcp", "127.0.0.1:"+apiPort, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // only reading the serial
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
	out = c.compose("certs", "rotate", "apiserver.crt", "datastore-server.crt", "datastore-client.crt", "scheduler.kubeconfig", "tunnel-gateway.crt")
	if strings.Count(out, "renewed ") != 5 {
		t.Fatalf("certs rotate:\n%s", out)
	}
	waitFor(t, "the apiserver to serve its renewed certificate", 2*time.Minute, func(context.Context) (bool, error) {
		now := served()
		return now != "" && now != before, nil
	})
	if out, err := c.kubectl("get", "nodes"); err != nil {
		t.Fatalf("kubectl after the rotation: %v\n%s", err, out)
	}
}
