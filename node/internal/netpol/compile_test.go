package netpol

import (
	"net/netip"
	"slices"
	"testing"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// allowed is the forward hook's decision for a new connection from src to
// dst (proto, port) under rs, as Render's rules make it: the source pod's
// egress allowances first, then the destination pod's ingress ones.
func allowed(rs Ruleset, src, dst string, proto v1.Protocol, port uint16) bool {
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	for _, p := range rs.Pods {
		if p.EgressIsolated && hasIP(p.IPs, s) && !admits(p.Egress, d, proto, port) {
			return false
		}
	}
	for _, p := range rs.Pods {
		if p.IngressIsolated && hasIP(p.IPs, d) && !admits(p.Ingress, s, proto, port) {
			return false
		}
	}
	return true
}

func hasIP(ips []netip.Addr, a netip.Addr) bool {
	for _, ip := range ips {
		if ip == a {
			return true
		}
	}
	return false
}

func admits(allows []Allow, peer netip.Addr, proto v1.Protocol, port uint16) bool {
	for _, a := range allows {
		if !peerIn(a.Peers, peer) {
			continue
		}
		if len(a.Ports) == 0 {
			return true
		}
		for _, p := range a.Ports {
			if p.Protocol == proto && (p.From == 0 || p.From <= port && port <= p.To) {
				return true
			}
		}
	}
	return false
}

func peerIn(p Peers, a netip.Addr) bool {
	if p.Any || hasIP(p.IPs, a) {
		return true
	}
	for _, b := range p.Blocks {
		if !b.CIDR.Contains(a) {
			continue
		}
		excluded := false
		for _, e := range b.Except {
			excluded = excluded || e.Contains(a)
		}
		if !excluded {
			return true
		}
	}
	return false
}

// the cluster of the tests: node n1 runs a/web (10.0.0.2), a/db
// (10.0.0.3) and b/client (10.0.0.4); node n2 runs b/other (10.0.1.2) and
// a/web2 (10.0.1.3); a host-network pod on n1 has the node's 192.168.0.1.
func cluster() ([]*v1.Pod, []*v1.Namespace) {
	pod := func(ns, name, node, ip string, lbl map[string]string, ports ...v1.ContainerPort) *v1.Pod {
		return &v1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbl},
			Spec:       v1.PodSpec{NodeName: node, Containers: []v1.Container{{Name: "c", Ports: ports}}},
			Status:     v1.PodStatus{Phase: v1.PodRunning, PodIPs: []v1.PodIP{{IP: ip}}},
		}
	}
	host := pod("kube-system", "host", "n1", "192.168.0.1", map[string]string{"app": "web"})
	host.Spec.HostNetwork = true
	done := pod("a", "job", "n1", "10.0.0.9", map[string]string{"app": "web"})
	done.Status.Phase = v1.PodSucceeded
	return []*v1.Pod{
			pod("a", "web", "n1", "10.0.0.2", map[string]string{"app": "web"}, v1.ContainerPort{Name: "http", ContainerPort: 8080}),
			pod("a", "db", "n1", "10.0.0.3", map[string]string{"app": "db"}, v1.ContainerPort{Name: "sql", ContainerPort: 5432}),
			pod("b", "client", "n1", "10.0.0.4", map[string]string{"app": "client"}),
			pod("b", "other", "n2", "10.0.1.2", map[string]string{"app": "web"}, v1.ContainerPort{Name: "http", ContainerPort: 9090}),
			pod("a", "web2", "n2", "10.0.1.3", map[string]string{"app": "web"}, v1.ContainerPort{Name: "http", ContainerPort: 8081}),
			host, done,
		}, []*v1.Namespace{
			{ObjectMeta: metav1.ObjectMeta{Name: "a", Labels: map[string]string{"team": "a"}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "b", Labels: map[string]string{"team": "b"}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "kube-system"}},
		}
}

func policy(ns string, sel map[string]string, types []networkingv1.PolicyType, in []networkingv1.NetworkPolicyIngressRule, eg []networkingv1.NetworkPolicyEgressRule) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "p"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: sel}, PolicyTypes: types, Ingress: in, Egress: eg,
		},
	}
}

var (
	ingressOnly = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	egressOnly  = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	tcp, udp    = v1.ProtocolTCP, v1.ProtocolUDP
)

func port(p intstr.IntOrString, proto *v1.Protocol) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Port: &p, Protocol: proto}
}

func TestCompile(t *testing.T) {
	pods, nss := cluster()
	type conn struct {
		src, dst string
		proto    v1.Protocol
		port     uint16
		want     bool
	}
	for _, tc := range []struct {
		name     string
		policies []*networkingv1.NetworkPolicy
		conns    []conn
	}{{
		name: "no policy: everything passes",
		conns: []conn{
			{"10.0.0.4", "10.0.0.2", tcp, 8080, true},
			{"10.0.1.2", "10.0.0.3", udp, 53, true},
		},
	}, {
		name:     "default deny ingress isolates every pod of the namespace, and only for ingress",
		policies: []*networkingv1.NetworkPolicy{policy("a", nil, ingressOnly, nil, nil)},
		conns: []conn{
			{"10.0.0.4", "10.0.0.2", tcp, 8080, false},
			{"10.0.0.2", "10.0.0.3", tcp, 5432, false}, // same namespace too
			{"10.0.1.2", "10.0.0.3", udp, 53, false},   // from another node
			{"10.0.0.2", "10.0.0.4", tcp, 80, true},    // egress of a's pods is not isolated
			{"10.0.1.2", "10.0.0.4", tcp, 80, true},    // b is not isolated
		},
	}, {
		name: "a namespace selector admits that namespace's pods only",
		policies: []*networkingv1.NetworkPolicy{policy("a", map[string]string{"app": "web"}, ingressOnly,
			[]networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "b"}}}}}}, nil)},
		conns: []conn{
			{"10.0.0.4", "10.0.0.2", tcp, 8080, true},
			{"10.0.1.2", "10.0.0.2", udp, 1, true},
			{"10.0.0.3", "10.0.0.2", tcp, 8080, false},
			{"10.0.0.4", "10.0.0.3", tcp, 5432, true}, // db is not selected
		},
	}, {
		name: "pod and namespace selector in one peer both must match; a pod selector alone means the policy's namespace",
		policies: []*networkingv1.NetworkPolicy{policy("a", map[string]string{"app": "db"}, ingressOnly,
			[]networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
				{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "b"}},
					PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
				{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
			}}}, nil)},
		conns: []conn{
			{"10.0.1.2", "10.0.0.3", tcp, 5432, true},  // b/other: web in team b
			{"10.0.0.4", "10.0.0.3", tcp, 5432, false}, // b/client: not web
			{"10.0.0.2", "10.0.0.3", tcp, 5432, true},  // a/web
			{"10.0.1.3", "10.0.0.3", tcp, 5432, true},  // a/web2, on the other node
		},
	}, {
		name: "ipBlock with except",
		policies: []*networkingv1.NetworkPolicy{policy("a", map[string]string{"app": "web"}, ingressOnly,
			[]networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
				IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/16", Except: []string{"10.0.1.0/24"}}}}}}, nil)},
		conns: []conn{
			{"10.0.0.4", "10.0.0.2", tcp, 8080, true},
			{"10.0.1.2", "10.0.0.2", tcp, 8080, false},
			{"172.16.0.1", "10.0.0.2", tcp, 8080, false},
		},
	}, {
		name:     "egress deny: nothing leaves, but the pod still takes connections",
		policies: []*networkingv1.NetworkPolicy{policy("b", map[string]string{"app": "client"}, egressOnly, nil, nil)},
		conns: []conn{
			{"10.0.0.4", "10.0.0.2", tcp, 8080, false},
			{"10.0.0.4", "8.8.8.8", udp, 53, false},
			{"10.0.0.2", "10.0.0.4", tcp, 80, true},
		},
	}, {
		name: "egress to an ipBlock on UDP 53 only",
		policies: []*networkingv1.NetworkPolicy{policy("b", map[string]string{"app": "client"}, egressOnly, nil,
			[]networkingv1.NetworkPolicyEgressRule{{
				To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.96.0.0/12"}}},
				Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(53), &udp)},
			}})},
		conns: []conn{
			{"10.0.0.4", "10.96.0.10", udp, 53, true},
			{"10.0.0.4", "10.96.0.10", tcp, 53, false},
			{"10.0.0.4", "10.0.0.2", tcp, 8080, false},
		},
	}, {
		name: "a named ingress port is the target pod's own",
		policies: []*networkingv1.NetworkPolicy{policy("a", nil, ingressOnly,
			[]networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromString("http"), nil)}}}, nil)},
		conns: []conn{
			{"10.0.0.4", "10.0.0.2", tcp, 8080, true},
			{"10.0.0.4", "10.0.0.2", tcp, 8081, false},
			{"10.0.0.4", "10.0.0.2", udp, 8080, false},
			{"10.0.0.4", "10.0.0.3", tcp, 5432, false}, // db has no port named http
		},
	}, {
		name: "a named egress port is each destination pod's own",
		policies: []*networkingv1.NetworkPolicy{policy("b", map[string]string{"app": "client"}, egressOnly, nil,
			[]networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromString("http"), nil)}}})},
		conns: []conn{
			{"10.0.0.4", "10.0.0.2", tcp, 8080, true},
			{"10.0.0.4", "10.0.1.3", tcp, 8081, true},
			{"10.0.0.4", "10.0.1.2", tcp, 9090, true},
			{"10.0.0.4", "10.0.0.2", tcp, 8081, false}, // web's http is 8080
			{"10.0.0.4", "10.0.0.3", tcp, 5432, false},
		},
	}, {
		name: "a port range and a protocol without port",
		policies: []*networkingv1.NetworkPolicy{policy("a", map[string]string{"app": "web"}, ingressOnly,
			[]networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
				{Port: ptr(intstr.FromInt32(8000)), EndPort: ptr(int32(8100))},
				{Protocol: &udp},
			}}}, nil)},
		conns: []conn{
			{"10.0.0.4", "10.0.0.2", tcp, 8000, true},
			{"10.0.0.4", "10.0.0.2", tcp, 8100, true},
			{"10.0.0.4", "10.0.0.2", tcp, 8101, false},
			{"10.0.0.4", "10.0.0.2", udp, 1, true},
		},
	}, {
		name: "policies add up: either one's rule admits",
		policies: []*networkingv1.NetworkPolicy{
			policy("a", map[string]string{"app": "web"}, ingressOnly, []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}}}}}, nil),
			policy("a", nil, ingressOnly, []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}},
				Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(8080), &tcp)}}}, nil),
		},
		conns: []conn{
			{"10.0.0.3", "10.0.0.2", tcp, 1, true},       // the first policy
			{"10.0.1.2", "10.0.0.2", tcp, 8080, true},    // the second
			{"10.0.1.2", "10.0.0.2", tcp, 1, false},      // neither
			{"172.16.0.1", "10.0.0.2", tcp, 8080, false}, // not a pod: no namespace selects it
		},
	}, {
		name: "a peer selector that selects nothing admits nothing",
		policies: []*networkingv1.NetworkPolicy{policy("a", map[string]string{"app": "web"}, ingressOnly,
			[]networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
				PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "nobody"}}}}}}, nil)},
		conns: []conn{{"10.0.0.3", "10.0.0.2", tcp, 8080, false}},
	}, {
		name: "a host-network pod and a finished pod are no peers",
		policies: []*networkingv1.NetworkPolicy{policy("a", map[string]string{"app": "db"}, ingressOnly,
			[]networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
				NamespaceSelector: &metav1.LabelSelector{}, PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}}}, nil)},
		conns: []conn{
			{"192.168.0.1", "10.0.0.3", tcp, 5432, false},
			{"10.0.0.9", "10.0.0.3", tcp, 5432, false},
			{"10.0.0.2", "10.0.0.3", tcp, 5432, true},
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			rs := Compile("n1", pods, nss, tc.policies)
			for _, p := range rs.Pods {
				if p.Name == "web2" || p.Name == "other" || p.Name == "host" {
					t.Errorf("pod %s/%s of another node (or on the host network) has rules on n1", p.Namespace, p.Name)
				}
			}
			for _, c := range tc.conns {
				// a pod of n2 is n2's to police: judge only what n1 enforces
				if got := allowed(rs, c.src, c.dst, c.proto, c.port); got != c.want {
					t.Errorf("%s -> %s %s/%d: allowed %v, want %v", c.src, c.dst, c.proto, c.port, got, c.want)
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestCompileIsDeterministic(t *testing.T) {
	pods, nss := cluster()
	allow := func(name string, p int32) *networkingv1.NetworkPolicy {
		np := policy("a", nil, ingressOnly, []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}},
			Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(p), nil)}}}, nil)
		np.Name = name
		return np
	}
	// two policies for the same pods: the order of their rules must not
	// follow the order they are listed in
	pols := []*networkingv1.NetworkPolicy{allow("p", 80), allow("q", 443),
		policy("b", nil, egressOnly, nil, []networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromString("http"), nil)}}})}
	render := func() string { return renderString(Compile("n1", pods, nss, pols)) }
	want := render()
	slices.Reverse(pods)
	slices.Reverse(pols)
	if got := render(); got != want {
		t.Fatalf("the same cluster listed in another order renders other rules:\n%s\nvs\n%s", got, want)
	}
}
