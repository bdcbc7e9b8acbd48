package suite

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/testcluster"
)

// serviceProxyEBPF: the cluster's nodes run the default eBPF Service proxy
// (socket programs, and an nftables table for NodePorts); a node joined
// with --service-proxy=iptables runs kube-proxy beside them. The Service
// checks every cluster gets, across the two proxies, then what the eBPF
// proxy promises on top: ClientIP affinity, refusal without endpoints, no
// connection to a removed backend while a Deployment scales 3 -> 0 -> 3,
// established connections kept across an agent restart, and programs that
// act on this node alone (not on the host's sockets, nor on another node
// container, nor on processes of the node container outside its cgroups).
func serviceProxyEBPF(t *testing.T, c *testcluster.Cluster) {
	ctx := context.Background()
	cs := c.Client()
	nodes := c.Nodes()
	node := nodes[len(nodes)-1] // the eBPF node the checks run on
	kubeProxyNode, err := c.AddNode(ctx, "--service-proxy", "iptables")
	if kubeProxyNode != "" {
		defer func() {
			if err := c.RemoveNode(ctx, kubeProxyNode); err != nil {
				t.Errorf("removing node %s: %v", kubeProxyNode, err)
			}
		}()
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := c.LoadImages(ctx, testapp()); err != nil {
		t.Fatal(err)
	}
	const ns = "sp"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer deleteNamespace(t, cs, ns)

	// web: 3 pods spread over the nodes; Services over it
	deployTestapp(t, cs, ns, "web", 3)
	svc := func(name string, mutate func(*corev1.Service)) *corev1.Service {
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
		if mutate != nil {
			mutate(s)
		}
		got, err := cs.CoreV1().Services(ns).Create(ctx, s, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	web := svc("web", nil)
	svc("sticky", func(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP })
	svc("empty", func(s *corev1.Service) { s.Spec.Selector = map[string]string{"app": "nothing"} })
	np := svc("web-np", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeNodePort })
	lb := svc("web-lb", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		s.Spec.Ports[0].Port = 18090
	})
	// the client: on the eBPF node
	client := ns + "/client"
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "client"},
		Spec: corev1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{Name: "client", Image: testapp(), ImagePullPolicy: corev1.PullNever, Command: []string{"/testapp", "sleep"}}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPodReady(t, cs, ns, "client")
	cfg := c.RESTConfig()
	get := func(url string) (string, error) {
		out, err := podExec(ctx, cfg, cs, client, "/testapp", "get", url)
		return strings.TrimSpace(out), err
	}

	t.Run("the agent attached its programs and serves the maps", func(t *testing.T) {
		out, err := c.Exec(ctx, node, "kubesplit-node", "debug", "services")
		if err != nil || !strings.Contains(out, "10.43.0.1:443/tcp") || !strings.Contains(out, "10.43.0.10:53/udp") {
			t.Fatalf("debug services (want the kubernetes and DNS Services): %v\n%s", err, out)
		}
		metrics, err := c.Exec(ctx, node, "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/10249; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3")
		if err != nil || !strings.Contains(metrics, "kubesplit_service_proxy_programs_attached 8") ||
			!strings.Contains(metrics, `kubesplit_service_proxy_map_entries{map="ks_svc"}`) {
			t.Errorf("metrics on :10249 (want 8 programs attached: 4 on the pods' cgroup, 4 on the node's): %v\n%s", err, grep(metrics, "kubesplit_service_proxy"))
		}
	})
	t.Run("ClusterIP by DNS name reaches pods on every node", func(t *testing.T) {
		seen := map[string]bool{}
		for range 30 {
			host, err := get("http://web." + ns + ".svc.cluster.local/")
			if err != nil {
				t.Fatal(err)
			}
			seen[host] = true
		}
		if len(seen) < 2 {
			t.Fatalf("30 requests reached %v; want several of the 3 pods", seen)
		}
	})
	t.Run("the kubernetes Service and CoreDNS over UDP and TCP", func(t *testing.T) {
		if out, err := podExec(ctx, cfg, cs, client, "/testapp", "kube", "version"); err != nil || !strings.Contains(out, "gitVersion") {
			t.Errorf("kubernetes Service from the pod: %v %s", err, out)
		}
		if out, err := podExec(ctx, cfg, cs, client, "/testapp", "lookup", "web."+ns+".svc.cluster.local"); err != nil || strings.TrimSpace(out) == "" {
			t.Errorf("DNS over UDP through the ClusterIP: %v %q", err, out)
		}
		if _, err := podExec(ctx, cfg, cs, client, "/testapp", "connect", "10.43.0.10:53", "2s"); err != nil {
			t.Errorf("TCP to CoreDNS's ClusterIP: %v", err)
		}
	})
	t.Run("session affinity keeps a client on one backend", func(t *testing.T) {
		seen := map[string]bool{}
		for range 15 {
			host, err := get("http://sticky/")
			if err != nil {
				t.Fatal(err)
			}
			seen[host] = true
		}
		if len(seen) != 1 {
			t.Fatalf("with ClientIP affinity one client reached %v", seen)
		}
	})
	t.Run("a Service without endpoints refuses at once", func(t *testing.T) {
		start := time.Now()
		_, err := podExec(ctx, cfg, cs, client, "/testapp", "connect", "empty:80", "5s")
		if err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("connect to a Service without endpoints: %v, want connection refused", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("refusal took %v (exec included); want at once", d)
		}
	})
	nodeIP := nodeAddress(t, cs, node)
	t.Run("NodePort and ClusterIP from a kube-proxy node, NodePort from the host", func(t *testing.T) {
		url := fmt.Sprintf("http://%s:%d/", nodeIP, np.Spec.Ports[0].NodePort)
		port := int(np.Spec.Ports[0].NodePort)
		if _, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "elsewhere"},
			Spec: corev1.PodSpec{NodeName: kubeProxyNode, TerminationGracePeriodSeconds: ptr.To[int64](1),
				Containers: []corev1.Container{{Name: "c", Image: testapp(), ImagePullPolicy: corev1.PullNever, Command: []string{"/testapp", "sleep"}}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitPodReady(t, cs, ns, "elsewhere")
		if out, err := podExec(ctx, cfg, cs, ns+"/elsewhere", "/testapp", "get", url); err != nil || !strings.HasPrefix(strings.TrimSpace(out), "web-") {
			t.Errorf("NodePort of the eBPF node from a pod on the kube-proxy node: %v %q", err, out)
		}
		if out, err := podExec(ctx, cfg, cs, ns+"/elsewhere", "/testapp", "get", "http://web."+ns+".svc.cluster.local/"); err != nil || !strings.HasPrefix(strings.TrimSpace(out), "web-") {
			t.Errorf("ClusterIP by DNS name from a pod on the kube-proxy node: %v %q", err, out)
		}
		if out, err := c.Exec(ctx, kubeProxyNode, "iptables", "-w", "-t", "nat", "-S", "KUBE-SERVICES"); err != nil || !strings.Contains(out, web.Spec.ClusterIP) {
			t.Errorf("the kube-proxy node has no iptables rule for web: %v\n%s", err, out)
		}
		if body, err := fetch(nodeIP, port); err != nil || !strings.HasPrefix(body, "web-") {
			t.Errorf("NodePort of the eBPF node from the host: %v %q", err, body)
		}
	})
	t.Run("ServiceLB from the host", func(t *testing.T) {
		waitServes(t, nodeIP, int(lb.Spec.Ports[0].Port), "web-")
	})
	t.Run("scaling 3 -> 0 -> 3 under a polling client: no connection to a removed backend", func(t *testing.T) {
		scaleUnderPoll(t, cs, ns, node)
	})
	t.Run("an agent restart keeps established connections", func(t *testing.T) {
		before, _ := c.Exec(ctx, node, "kubesplit-node", "debug", "services")
		// the stream's client is a pod of its own, read through its log
		// afterwards: an exec session would ride the agent's tunnel, which
		// the restart cuts
		if _, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "streamer"},
			Spec: corev1.PodSpec{NodeName: node, RestartPolicy: corev1.RestartPolicyNever,
				Containers: []corev1.Container{{Name: "streamer", Image: testapp(), ImagePullPolicy: corev1.PullNever,
					Command: []string{"/testapp", "get", "http://web/stream?n=30&ms=500", "60s"}}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitPodReady(t, cs, ns, "streamer")
		time.Sleep(2 * time.Second)
		if _, err := c.Exec(ctx, node, "pkill", "-f", "kubesplit-node agent"); err != nil {
			t.Fatalf("stopping the agent: %v", err)
		}
		healthz := func(ctx context.Context) (bool, error) {
			out, err := c.Exec(ctx, node, "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/10249; printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3")
			return err == nil && strings.Contains(out, "ok"), err
		}
		time.Sleep(time.Second) // the supervisor waits a second before it restarts the agent
		waitFor(t, "the restarted agent", time.Minute, healthz)
		restarted := time.Now()
		var out string
		waitFor(t, "the streamer to finish", 2*time.Minute, func(ctx context.Context) (bool, error) {
			p, err := cs.CoreV1().Pods(ns).Get(ctx, "streamer", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
				return false, fmt.Errorf("phase %s", p.Status.Phase)
			}
			b, err := cs.CoreV1().Pods(ns).GetLogs("streamer", &corev1.PodLogOptions{}).DoRaw(ctx)
			out = string(b)
			return err == nil, err
		})
		if n := strings.Count(out, "\n"); n != 30 || strings.Contains(out, "testapp:") {
			t.Fatalf("the stream delivered %d of 30 lines across the restart:\n%s", n, out)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		last, err := time.Parse(time.RFC3339Nano, strings.Fields(lines[len(lines)-1])[2])
		if err != nil || !last.After(restarted) {
			t.Fatalf("the stream ended at %v, before the agent was back (%v): the restart did not happen under it", last, restarted)
		}
		after, _ := c.Exec(ctx, node, "kubesplit-node", "debug", "services")
		if webLine(before) == "" || webLine(before) != webLine(after) {
			t.Errorf("the restarted agent rewrote web's entry (it should read the pinned maps back):\nbefore %q\nafter  %q", webLine(before), webLine(after))
		}
		if host, err := get("http://web/"); err != nil || !strings.HasPrefix(host, "web-") {
			t.Errorf("a new connection after the restart: %v %q", err, host)
		}
	})
	t.Run("the programs act on this node alone", func(t *testing.T) {
		// Each probe runs in a network namespace of its own (unshare -n)
		// holding web's ClusterIP on its loopback: a connect() that is
		// not translated finds nothing listening there and is refused; a
		// translated one is sent to a pod address, which that namespace
		// cannot route. Nothing leaves the machine either way.
		probe := fmt.Sprintf("ip link set lo up && ip addr add %[1]s/32 dev lo && exec 3<>/dev/tcp/%[1]s/80", web.Spec.ClusterIP)
		const refused, unreachable = "Connection refused", "Network is unreachable"
		// the host (this test's own cgroup)
		out, _ := exec.Command("unshare", "-n", "bash", "-c", probe).CombinedOutput()
		if !strings.Contains(string(out), refused) {
			t.Errorf("from the host: %q; want %q (not translated)", out, refused)
		}
		// another node container (kube-proxy's: its iptables rules are in
		// its own network namespace, not in the probe's)
		if out, _ := c.Exec(ctx, kubeProxyNode, "unshare", "-n", "bash", "-c", probe); !strings.Contains(out, refused) {
			t.Errorf("from another node container: %q; want %q (not translated)", out, refused)
		}
		// the node container: its own cgroup is translated, as kube-proxy
		// would; a process in a cgroup outside the node's is not
		if out, _ := c.Exec(ctx, node, "unshare", "-n", "bash", "-c", probe); !strings.Contains(out, unreachable) {
			t.Errorf("from the node container's cgroup: %q; want %q (translated to a pod address)", out, unreachable)
		}
		cg := "/sys/fs/cgroup/unified/kubesplit-isolation-" + node
		outside := fmt.Sprintf("mkdir -p %[1]s && echo $$ > %[1]s/cgroup.procs && unshare -n bash -c '%[2]s'; echo $$ > /sys/fs/cgroup/unified/cgroup.procs; rmdir %[1]s", cg, probe)
		if out, _ := c.Exec(ctx, node, "bash", "-c", outside); !strings.Contains(out, refused) {
			t.Errorf("from a cgroup outside the node's, in the node container: %q; want %q", out, refused)
		}
	})
}

// webLine is web's ClusterIP entry in `debug services` output.
func webLine(debug string) string {
	for _, l := range strings.Split(debug, "\n") {
		if strings.Contains(l, ":80/tcp") && strings.Count(l, ",") == 2 {
			return strings.Join(strings.Fields(l), " ")
		}
	}
	return ""
}

func grep(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func nodeAddress(t *testing.T, cs kubernetes.Interface, node string) string {
	t.Helper()
	n, err := cs.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	t.Fatalf("node %s has no InternalIP", node)
	return ""
}

// deployTestapp runs n testapp servers (:8080, ready on /healthz) labelled
// app=NAME, spread over the nodes, and waits for them.
func deployTestapp(t *testing.T, cs kubernetes.Interface, ns, name string, n int32) {
	t.Helper()
	ctx := context.Background()
	labels := map[string]string{"app": name}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To(n), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				TerminationGracePeriodSeconds: ptr.To[int64](1),
				TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: corev1.LabelHostname,
					WhenUnsatisfiable: corev1.ScheduleAnyway, LabelSelector: &metav1.LabelSelector{MatchLabels: labels}}},
				Containers: []corev1.Container{{Name: name, Image: testapp(), ImagePullPolicy: corev1.PullNever,
					Command: []string{"/testapp", "serve"}, Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
					ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
						HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}}}},
			}}},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitReplicas(t, cs, ns, name, n)
}

func waitReplicas(t *testing.T, cs kubernetes.Interface, ns, name string, n int32) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d ready replicas of %s", n, name), 2*time.Minute, func(ctx context.Context) (bool, error) {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return false, err
		}
		return d.Status.ReadyReplicas == n && len(pods.Items) == int(n), fmt.Errorf("%d ready, %d pods", d.Status.ReadyReplicas, len(pods.Items))
	})
}

// scaleUnderPoll: a poller on the eBPF node GETs web every 50 ms while web
// scales 3 -> 0 -> 3. Once web has no endpoint, every request must be
// refused at once (a connect() sent to a removed pod would time out
// instead), and once the new pods are ready, requests reach them.
func scaleUnderPoll(t *testing.T, cs kubernetes.Interface, ns, node string) {
	ctx := context.Background()
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "poller"},
		Spec: corev1.PodSpec{NodeName: node, RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "poller", Image: testapp(), ImagePullPolicy: corev1.PullNever,
				Command: []string{"/testapp", "poll", "http://web/", "40s", "50ms"}}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPodReady(t, cs, ns, "poller")
	scale := func(n int32) {
		s, err := cs.AppsV1().Deployments(ns).GetScale(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.Spec.Replicas = n
		if _, err := cs.AppsV1().Deployments(ns).UpdateScale(ctx, "web", s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(3 * time.Second)
	scale(0)
	var empty time.Time
	waitFor(t, "web's endpoints to empty", time.Minute, func(ctx context.Context) (bool, error) {
		sl, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=web"})
		if err != nil {
			return false, err
		}
		for _, s := range sl.Items {
			if len(s.Endpoints) > 0 {
				return false, fmt.Errorf("%d endpoints in %s", len(s.Endpoints), s.Name)
			}
		}
		empty = time.Now()
		return true, nil
	})
	time.Sleep(5 * time.Second)
	scaleUp := time.Now()
	scale(3)
	waitReplicas(t, cs, ns, "web", 3)
	ready := time.Now()
	var logs string
	waitFor(t, "the poller to finish", time.Minute, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, "poller", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			return false, fmt.Errorf("phase %s", p.Status.Phase)
		}
		b, err := cs.CoreV1().Pods(ns).GetLogs("poller", &corev1.PodLogOptions{}).DoRaw(ctx)
		logs = string(b)
		return err == nil, err
	})
	// a second for the change to reach the node's watch
	quiet, recovered := empty.Add(time.Second), ready.Add(time.Second)
	var emptyRefused, emptyOther, afterOK, afterOther int
	for _, l := range strings.Split(strings.TrimSpace(logs), "\n") {
		f := strings.Fields(l)
		if len(f) < 3 {
			continue
		}
		ms, _ := strconv.ParseInt(f[0], 10, 64)
		at := time.UnixMilli(ms)
		switch {
		case at.After(quiet) && at.Before(scaleUp):
			if f[1] == "refused" {
				emptyRefused++
			} else {
				emptyOther++
				t.Errorf("while web had no endpoint: %s (want connection refused at once)", l)
			}
		case at.After(recovered):
			if f[1] == "ok" {
				afterOK++
			} else {
				afterOther++
				t.Errorf("after the new pods were ready: %s", l)
			}
		}
	}
	if emptyRefused < 20 || afterOK < 20 {
		t.Errorf("poller saw %d refusals while web was empty and %d answers after it came back; want many of each\n%s", emptyRefused, afterOK, logs)
	}
	t.Logf("while empty: %d refused, %d other; after: %d ok, %d other", emptyRefused, emptyOther, afterOK, afterOther)
}
