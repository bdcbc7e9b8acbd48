package suite

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/testcluster"
)

// proxiedNS holds one plain-HTTP testapp per node, reached through the
// apiserver's pods/proxy and services/proxy.
const proxiedNS = "e2e-proxy"

// podsAndServicesProxy: the apiserver reaches a pod on each node (it has no
// route to any: every byte rides the node's tunnel), by pod and by Service,
// including a streaming response that arrives line by line.
func podsAndServicesProxy(t *testing.T, c *testcluster.Cluster) {
	ctx := context.Background()
	cs := c.Client()
	pods := onePodPerNode(t, cs, proxiedNS, "proxied", []string{"/testapp", "serve"}, 8080, nil)
	defer deleteNamespace(t, cs, proxiedNS)

	for node, pod := range pods {
		body, err := cs.CoreV1().RESTClient().Get().AbsPath("/api/v1/namespaces/" + proxiedNS + "/pods/" + pod + ":8080/proxy/").DoRaw(ctx)
		if err != nil || strings.TrimSpace(string(body)) != pod {
			t.Fatalf("pods/proxy to %s on %s: %q %v", pod, node, body, err)
		}
	}
	// a Service picks an endpoint per request: ask until both pods answered
	seen := map[string]bool{}
	for i := 0; i < 60 && len(seen) < len(pods); i++ {
		body, err := cs.CoreV1().RESTClient().Get().AbsPath("/api/v1/namespaces/" + proxiedNS + "/services/proxied:80/proxy/").DoRaw(ctx)
		if err != nil {
			t.Fatalf("services/proxy: %v", err)
		}
		seen[strings.TrimSpace(string(body))] = true
	}
	for _, pod := range pods {
		if !seen[pod] {
			t.Fatalf("services/proxy never reached %s (saw %v)", pod, seen)
		}
	}
	// streaming: 5 lines 400 ms apart must arrive as they are written
	for node, pod := range pods {
		rc, err := cs.CoreV1().RESTClient().Get().AbsPath("/api/v1/namespaces/"+proxiedNS+"/pods/"+pod+":8080/proxy/stream").
			Param("n", "5").Param("ms", "400").Stream(ctx)
		if err != nil {
			t.Fatalf("streaming pods/proxy on %s: %v", node, err)
		}
		sc := bufio.NewScanner(rc)
		var arrived []time.Time
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "line ") {
				arrived = append(arrived, time.Now())
			}
		}
		rc.Close()
		if len(arrived) != 5 {
			t.Fatalf("streaming on %s: %d lines: %v", node, len(arrived), sc.Err())
		}
		if spread := arrived[4].Sub(arrived[0]); spread < time.Second {
			t.Fatalf("streaming on %s: the 5 lines arrived within %s: the response was buffered, not streamed", node, spread)
		}
	}
}

// onePodPerNode runs a Deployment NAME (and a Service NAME port 80 ->
// port, 443 for 8443) of testapp with command cmd, one pod on each node
// (or replicas[0] pods on different nodes), and returns node -> pod name
// once all are ready.
func onePodPerNode(t *testing.T, cs kubernetes.Interface, ns, name string, cmd []string, port int32, mounts func(*corev1.PodSpec), replicas ...int) map[string]string {
	t.Helper()
	ctx := context.Background()
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	want := len(nodes.Items)
	if len(replicas) > 0 {
		want = replicas[0]
	}
	labels := map[string]string{"app": name}
	scheme := corev1.URISchemeHTTP
	if port == 8443 {
		scheme = corev1.URISchemeHTTPS
	}
	spec := corev1.PodSpec{
		TerminationGracePeriodSeconds: ptr.To[int64](1),
		Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
			TopologyKey: corev1.LabelHostname, LabelSelector: &metav1.LabelSelector{MatchLabels: labels}}}}},
		Containers: []corev1.Container{{Name: name, Image: testapp(), ImagePullPolicy: corev1.PullNever, Command: cmd,
			Ports: []corev1.ContainerPort{{ContainerPort: port}},
			ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
				HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(port), Scheme: scheme}}}}},
	}
	if mounts != nil {
		mounts(&spec)
	}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To(int32(want)), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec}},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svcPort := int32(80)
	if port == 8443 {
		svcPort = 443
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: svcPort, TargetPort: intstr.FromInt32(port)}}}}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	waitFor(t, "one ready "+name+" pod per node", 2*time.Minute, func(ctx context.Context) (bool, error) {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return false, err
		}
		out = map[string]string{}
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil && podReady(&p) {
				out[p.Spec.NodeName] = p.Name
			}
		}
		return len(out) == want, fmt.Errorf("ready on %v", out)
	})
	return out
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func deleteNamespace(t *testing.T, cs kubernetes.Interface, ns string) {
	t.Helper()
	ctx := context.Background()
	if err := cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
		t.Errorf("deleting namespace %s: %v", ns, err)
		return
	}
	waitFor(t, "namespace "+ns+" gone", 2*time.Minute, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		return err != nil && strings.Contains(err.Error(), "not found"), err
	})
}

// dataDirFile is a file of the data volume, as pkg/layout names it.
const dataDirFile = "/var/lib/kubesplit/pki/"

// tunnelIsolation: what the apiserver's egress can reach. With the
// apiserver's own egress certificate, a CONNECT to a pod goes through, but
// a node's other ports, the control network and the gateway itself are
// refused by the gateway; and an address in a node's pod range that is the
// node itself (its bridge) is refused by the node's agent.
func tunnelIsolation(t *testing.T, c *testcluster.Cluster) {
	ctx := context.Background()
	cs := c.Client()
	pods := onePodPerNode(t, cs, "e2e-isolation", "target", []string{"/testapp", "serve"}, 8080, nil)
	defer deleteNamespace(t, cs, "e2e-isolation")

	read := func(name string) []byte {
		rc, err := c.Container(testcluster.APIServer).CopyFileFromContainer(ctx, dataDirFile+name)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cert, err := tls.X509KeyPair(read("apiserver-egress-client.crt"), read("apiserver-egress-client.key"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(read("ca.crt"))
	gw := containerIP(t, c, testcluster.TunnelGateway, "control")
	datastore := containerIP(t, c, testcluster.Datastore, "control")

	// connect CONNECTs to target and, on 200, sends an HTTP request through
	// the stream: it returns the status and what came back
	connect := func(target string) (int, string) {
		d := &net.Dialer{Timeout: 5 * time.Second}
		conn, err := tls.DialWithDialer(d, "tcp", net.JoinHostPort(gw, "8131"),
			&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: "tunnel-gateway"})
		if err != nil {
			t.Fatalf("egress port: %v", err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil {
			t.Fatalf("CONNECT %s: %v", target, err)
		}
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		fmt.Fprintf(conn, "GET / HTTP/1.0\r\nHost: x\r\n\r\n")
		b, _ := io.ReadAll(br)
		return resp.StatusCode, string(b)
	}

	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes.Items {
		ip := internalIP(&n)
		pod, err := cs.CoreV1().Pods("e2e-isolation").Get(ctx, pods[n.Name], metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if code, body := connect(pod.Status.PodIP + ":8080"); code != http.StatusOK || !strings.Contains(body, pod.Name) {
			t.Errorf("a pod on %s (%s): %d %q", n.Name, pod.Status.PodIP, code, body)
		}
		for _, port := range []string{"10249", "22", "8472"} { // kube-proxy's metrics, ssh, VXLAN
			if code, body := connect(ip + ":" + port); code != http.StatusForbidden {
				t.Errorf("node %s port %s: %d %q, want 403", n.Name, port, code, body)
			}
		}
		// the bridge's address (.1 of the node's range) is the node itself: the agent refuses it
		bridge := strings.TrimSuffix(n.Spec.PodCIDR, ".0/24") + ".1"
		if code, body := connect(bridge + ":10250"); code == http.StatusOK && body != "" {
			t.Errorf("node %s's bridge address %s answered through the tunnel: %q", n.Name, bridge, body)
		}
	}
	for _, target := range []string{datastore + ":2379", gw + ":8132", c.GatewayIP() + ":8131", "10.43.0.1:443", "10.42.250.9:80"} {
		if code, body := connect(target); code != http.StatusForbidden {
			t.Errorf("%s: %d %q, want 403", target, code, body)
		}
	}

	// a pod sees the gateway's health alone: the per-node views are on the mTLS port
	out, err := runPod(t, cs, "peek-debug", "", "get", "http://"+c.GatewayIP()+":8133/debug/tunnels")
	if err == nil || !strings.Contains(out, "404") {
		t.Errorf("a pod read the gateway's /debug/tunnels: %q %v", out, err)
	}
	if out, err := runPod(t, cs, "peek-health", "", "get", "http://"+c.GatewayIP()+":8133/healthz"); err != nil {
		t.Errorf("a pod cannot read the gateway's /healthz: %q %v", out, err)
	}

	// the apiserver is on the control network alone: it has no route to a node
	in, err := c.Container(testcluster.APIServer).Inspect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name, ep := range in.NetworkSettings.Networks {
		if !strings.HasSuffix(name, "-control") {
			t.Errorf("the apiserver is on network %s (%s) besides the control network", name, ep.IPAddress)
		}
	}
}

func containerIP(t *testing.T, c *testcluster.Cluster, member, network string) string {
	t.Helper()
	in, err := c.Container(member).Inspect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for name, ep := range in.NetworkSettings.Networks {
		if strings.HasSuffix(name, "-"+network) {
			return ep.IPAddress.String()
		}
	}
	t.Fatalf("%s is not on the %s network", member, network)
	return ""
}

func internalIP(n *corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}
