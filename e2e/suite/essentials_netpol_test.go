package suite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	utilexec "k8s.io/client-go/util/exec"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/e2e/suite/internal/kexec"
	"github.com/kubesplit/kubesplit/testcluster"
)

// networkPolicies: the node agents enforce NetworkPolicies (on by
// default). Two namespaces, np-a (team=a) and np-b (team=b), one pod per
// node of web (np-a; :8080 named http, :8081 unnamed), peer (np-a) and
// client (np-b), each also serving :8080. Connections are made from inside
// the pods (exec through the tunnels), on one node and across nodes.
func networkPolicies(t *testing.T, c *testcluster.Cluster) {
	ctx := context.Background()
	cs := c.Client()
	for ns, team := range map[string]string{"np-a": "a", "np-b": "b"} {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"team": team}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer deleteNamespace(t, cs, ns)
	}
	serve := []string{"/testapp", "serve"}
	withAlt := func(s *corev1.PodSpec) {
		s.Containers[0].Ports[0].Name = "http"
		s.Containers = append(s.Containers, corev1.Container{Name: "alt", Image: testapp(), ImagePullPolicy: corev1.PullNever,
			Command: []string{"/testapp", "serve", "--port", "8081"}, Ports: []corev1.ContainerPort{{ContainerPort: 8081}}})
	}
	webs := onePodPerNode(t, cs, "np-a", "web", serve, 8080, withAlt)
	peers := onePodPerNode(t, cs, "np-a", "peer", serve, 8080, nil)
	clients := onePodPerNode(t, cs, "np-b", "client", serve, 8080, nil)
	nodes := slices.Sorted(maps.Keys(webs))
	n1, n2 := nodes[0], nodes[1]
	ip := map[string]string{} // "ns/pod" -> pod IP
	for _, ns := range []string{"np-a", "np-b"} {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range list.Items {
			ip[ns+"/"+p.Name] = p.Status.PodIP
		}
	}
	type probe struct {
		from string // ns/pod
		to   string // ns/pod
		port int
		want bool
		what string
	}
	pod := func(ns string, byNode map[string]string, node string) string { return ns + "/" + byNode[node] }
	web1, web2 := pod("np-a", webs, n1), pod("np-a", webs, n2)
	peer1, peer2 := pod("np-a", peers, n1), pod("np-a", peers, n2)
	client1, client2 := pod("np-b", clients, n1), pod("np-b", clients, n2)
	// expect checks every probe until all give their wanted answer (policies
	// take effect within moments, not at once) and says how long that took
	expect := func(stage string, probes ...probe) {
		t.Helper()
		start := time.Now()
		var wrong []string
		for time.Since(start) < 20*time.Second {
			wrong = nil
			for _, p := range probes {
				got, err := connects(ctx, c.RESTConfig(), cs, p.from, ip[p.to], p.port)
				if err != nil {
					wrong = append(wrong, fmt.Sprintf("%s -> %s:%d (%s): %v", p.from, p.to, p.port, p.what, err))
				} else if got != p.want {
					wrong = append(wrong, fmt.Sprintf("%s -> %s:%d (%s): connected=%v, want %v", p.from, p.to, p.port, p.what, got, p.want))
				}
			}
			if len(wrong) == 0 {
				t.Logf("%s: all %d connections as expected after %.1fs", stage, len(probes), time.Since(start).Seconds())
				return
			}
		}
		t.Fatalf("%s: after %s:\n%s", stage, time.Since(start).Round(time.Second), strings.Join(wrong, "\n"))
	}

	expect("no policy",
		probe{from: client1, to: web1, port: 8080, want: true, what: "same node"},
		probe{from: client2, to: web1, port: 8081, want: true, what: "across nodes"},
		probe{from: peer2, to: web2, port: 8080, want: true, what: "same namespace"})

	create := func(np *networkingv1.NetworkPolicy) {
		t.Helper()
		if _, err := cs.NetworkingV1().NetworkPolicies(np.Namespace).Create(ctx, np, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	sel := func(kv ...string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{kv[0]: kv[1]}}
	}
	create(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "np-a", Name: "default-deny"},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}})
	expect("default deny in np-a",
		probe{from: client1, to: web1, port: 8080, want: false, what: "same node"},
		probe{from: client2, to: web1, port: 8080, want: false, what: "across nodes"},
		probe{from: peer2, to: web2, port: 8080, want: false, what: "same namespace"},
		probe{from: web1, to: client2, port: 8080, want: true, what: "np-a's egress is not isolated"},
		probe{from: client1, to: client2, port: 8080, want: true, what: "np-b is not isolated"})

	create(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "np-a", Name: "web-from-team-b"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "web"),
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("team", "b")}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: ptr.To(intstr.FromString("http"))}},
			}}}})
	expect("web's named port http from namespaces of team b",
		probe{from: client1, to: web1, port: 8080, want: true, what: "same node"},
		probe{from: client2, to: web1, port: 8080, want: true, what: "across nodes"},
		probe{from: client1, to: web1, port: 8081, want: false, what: "not the named port"},
		probe{from: peer1, to: web1, port: 8080, want: false, what: "team a"},
		probe{from: client1, to: peer1, port: 8080, want: false, what: "peer is not web"})
	// through the Service (kube-proxy's DNAT comes before the policy) and
	// with DNS: the whole reply reaches the client
	if out, err := podExec(ctx, c.RESTConfig(), cs, client2, "/testapp", "get", "http://web.np-a.svc.cluster.local/"); err != nil || !strings.HasPrefix(out, "web-") {
		t.Errorf("client -> Service web: %q, %v", out, err)
	}

	// egress: np-b's clients may reach the cluster's pod network except
	// web on the first node
	prefix := netip.MustParsePrefix(ip[web1] + "/16").Masked()
	create(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "np-b", Name: "client-egress"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "client"),
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress: []networkingv1.NetworkPolicyEgressRule{
				{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: prefix.String(), Except: []string{ip[web1] + "/32"}}}}},
			}}})
	expect("client egress to an ipBlock with an exception",
		probe{from: client1, to: web1, port: 8080, want: false, what: "the exception"},
		probe{from: client2, to: web1, port: 8080, want: false, what: "the exception, across nodes"},
		probe{from: client1, to: web2, port: 8080, want: true, what: "in the block"},
		probe{from: client1, to: client2, port: 8080, want: true, what: "in the block, own namespace"})

	// replies pass: web may open no connection at all, yet answers
	create(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "np-a", Name: "web-egress-deny"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "web"),
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}}})
	expect("web's egress denied",
		probe{from: web1, to: client1, port: 8080, want: false, what: "web opens a connection"},
		probe{from: web2, to: client1, port: 8080, want: false, what: "web opens a connection, across nodes"},
		probe{from: client2, to: web2, port: 8080, want: true, what: "web answers"})
	if out, err := podExec(ctx, c.RESTConfig(), cs, client1, "/testapp", "get", "http://"+ip[web2]+":8080/"); err != nil || !strings.HasPrefix(out, "web-") {
		t.Errorf("a whole HTTP exchange with an egress-denied server: %q, %v", out, err)
	}
	lookup := func() error {
		_, err := podExec(ctx, c.RESTConfig(), cs, web1, "/testapp", "lookup", "kubernetes.default.svc.cluster.local")
		return err
	}
	if err := lookup(); err == nil {
		t.Errorf("web looked a name up with all its egress denied")
	}
	// DNS over UDP to CoreDNS's pods, by their named port (each
	// destination pod's own) in a namespace picked by its name label; the
	// Service address is translated to a pod's before the policy applies
	create(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "np-a", Name: "web-dns"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: *sel("app", "web"),
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress: []networkingv1.NetworkPolicyEgressRule{{
				To:    []networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel("kubernetes.io/metadata.name", "kube-system")}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: ptr.To(corev1.ProtocolUDP), Port: ptr.To(intstr.FromString("dns"))}},
			}}}})
	waitFor(t, "DNS from web with UDP to CoreDNS allowed", 20*time.Second, func(context.Context) (bool, error) {
		err := lookup()
		return err == nil, err
	})
	expect("web's egress: DNS only",
		probe{from: web1, to: client1, port: 8080, want: false, what: "still no TCP"})

	// the node still reaches its pods: kubelet probes keep them ready
	time.Sleep(3 * time.Second)
	for _, ns := range []string{"np-a", "np-b"} {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range list.Items {
			if !podReady(&p) {
				t.Errorf("pod %s/%s is not ready under the policies: its node's probes are blocked", ns, p.Name)
			}
		}
	}

	// a node started with --disable network-policy enforces nothing and
	// holds no table, under the same policies
	free, err := c.AddNode(ctx, "--disable", "network-policy")
	if free != "" {
		defer func() {
			if err := c.RemoveNode(ctx, free); err != nil {
				t.Errorf("removing node %s: %v", free, err)
			}
		}()
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := c.LoadImages(ctx, testapp()); err != nil {
		t.Fatal(err)
	}
	if out, err := c.Exec(ctx, free, "nft", "list", "tables"); err != nil || strings.Contains(out, "kubesplit-netpol") {
		t.Errorf("nft list tables on %s (enforcement disabled): %q, %v", free, out, err)
	}
	peer3 := "np-a/peer-on-" + free
	if _, err := cs.CoreV1().Pods("np-a").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "peer-on-" + free, Labels: map[string]string{"app": "peer"}},
		Spec: corev1.PodSpec{NodeName: free, TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{Name: "peer", Image: testapp(), ImagePullPolicy: corev1.PullNever, Command: serve}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a peer pod on "+free, 2*time.Minute, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods("np-a").Get(ctx, "peer-on-"+free, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		ip[peer3] = p.Status.PodIP
		return p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "", fmt.Errorf("phase %s", p.Status.Phase)
	})
	expect("np-a's default deny on a node that does not enforce",
		probe{from: client1, to: peer3, port: 8080, want: true, what: "to the unenforcing node"},
		probe{from: peer3, to: web1, port: 8080, want: false, what: "from it to an enforcing node"})
	if err := cs.CoreV1().Pods("np-a").Delete(ctx, "peer-on-"+free, metav1.DeleteOptions{}); err != nil {
		t.Error(err)
	}

	// deleting the policies lifts them
	for _, ns := range []string{"np-a", "np-b"} {
		if err := cs.NetworkingV1().NetworkPolicies(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	expect("policies deleted",
		probe{from: client1, to: web1, port: 8081, want: true, what: "same node"},
		probe{from: peer2, to: web1, port: 8080, want: true, what: "across nodes"},
		probe{from: web2, to: client1, port: 8080, want: true, what: "web's egress"})
}

// connects: whether pod (ns/name) can open a TCP connection to ip:port
// (testapp connect exits 1 when it cannot); an error is anything else going
// wrong, such as the exec itself.
func connects(ctx context.Context, cfg *rest.Config, cs kubernetes.Interface, pod, ip string, port int) (bool, error) {
	_, err := podExec(ctx, cfg, cs, pod, "/testapp", "connect", fmt.Sprintf("%s:%d", ip, port), "1s")
	var exit utilexec.ExitError
	if errors.As(err, &exit) && exit.ExitStatus() == 1 {
		return false, nil
	}
	return err == nil, err
}

// podExec runs cmd in the first container of pod (ns/name), as kubectl
// exec does (through the apiserver and the node's tunnel), and returns its
// stdout; an error carries its stderr (and wraps the exit status).
func podExec(ctx context.Context, cfg *rest.Config, cs kubernetes.Interface, pod string, cmd ...string) (string, error) {
	ns, name, _ := strings.Cut(pod, "/")
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var stdout bytes.Buffer
	err := kexec.Exec(ctx, cfg, cs, ns, name, &stdout, cmd...)
	return stdout.String(), err
}
