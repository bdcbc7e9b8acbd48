package svcproxy

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/knftables"

	"github.com/kubesplit/kubesplit/node/internal/svcproxy/datapath"
)

const node = "n1"

type svcOpt func(*corev1.Service)

func service(name, clusterIP string, ports []corev1.ServicePort, opts ...svcOpt) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: clusterIP,
			ClusterIPs: []string{clusterIP}, Ports: ports},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func tcpPort(name string, port int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Protocol: corev1.ProtocolTCP, Port: port}
}

type ep struct {
	ip, node           string
	ready, terminating bool
}

func slice(svc, name string, ports map[string]int32, proto corev1.Protocol, eps ...ep) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for n, p := range ports {
		s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: ptr.To(n), Port: ptr.To(p), Protocol: ptr.To(proto)})
	}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses: []string{e.ip}, NodeName: ptr.To(e.node),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(e.ready), Serving: ptr.To(e.ready || e.terminating),
				Terminating: ptr.To(e.terminating)},
		})
	}
	return s
}

func fe(addr string, port uint16, proto uint8) datapath.Frontend {
	return datapath.Frontend{Addr: netip.MustParseAddr(addr), Port: port, Proto: proto}
}

func bes(s ...string) []datapath.Backend {
	var out []datapath.Backend
	for _, x := range s {
		out = append(out, netip.MustParseAddrPort(x))
	}
	return out
}

func TestCompile(t *testing.T) {
	ready := func(ip, node string) ep { return ep{ip: ip, node: node, ready: true} }
	cases := []struct {
		name   string
		svcs   []*corev1.Service
		slices []*discoveryv1.EndpointSlice
		want   datapath.Table
		ports  []NodePort
	}{{
		name: "clusterIP: ready endpoints of every slice, sorted; the port by name",
		svcs: []*corev1.Service{service("web", "10.43.0.5", []corev1.ServicePort{tcpPort("http", 80), tcpPort("metrics", 9090)})},
		slices: []*discoveryv1.EndpointSlice{
			slice("web", "web-a", map[string]int32{"http": 8080, "metrics": 9100}, corev1.ProtocolTCP, ready("10.42.1.9", "n2"), ep{ip: "10.42.1.10", node: "n2"}),
			slice("web", "web-b", map[string]int32{"http": 8080, "metrics": 9100}, corev1.ProtocolTCP, ready("10.42.0.3", node)),
		},
		want: datapath.Table{
			fe("10.43.0.5", 80, datapath.TCP):   {Backends: bes("10.42.0.3:8080", "10.42.1.9:8080")},
			fe("10.43.0.5", 9090, datapath.TCP): {Backends: bes("10.42.0.3:9100", "10.42.1.9:9100")},
		},
	}, {
		name: "no endpoints: a frontend without backends (refused), headless and ExternalName skipped",
		svcs: []*corev1.Service{
			service("empty", "10.43.0.6", []corev1.ServicePort{tcpPort("", 80)}),
			service("headless", corev1.ClusterIPNone, []corev1.ServicePort{tcpPort("", 80)}),
			{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "ext"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.invalid"}},
		},
		slices: []*discoveryv1.EndpointSlice{slice("headless", "h", map[string]int32{"": 80}, corev1.ProtocolTCP, ready("10.42.0.4", node))},
		want:   datapath.Table{fe("10.43.0.6", 80, datapath.TCP): {}},
	}, {
		name: "terminating endpoints serve only when none is ready",
		svcs: []*corev1.Service{
			service("rolling", "10.43.0.7", []corev1.ServicePort{tcpPort("", 80)}),
			service("draining", "10.43.0.8", []corev1.ServicePort{tcpPort("", 80)}),
		},
		slices: []*discoveryv1.EndpointSlice{
			slice("rolling", "r", map[string]int32{"": 80}, corev1.ProtocolTCP, ready("10.42.0.5", node), ep{ip: "10.42.0.6", node: node, terminating: true}),
			slice("draining", "d", map[string]int32{"": 80}, corev1.ProtocolTCP, ep{ip: "10.42.0.7", node: node, terminating: true}),
		},
		want: datapath.Table{
			fe("10.43.0.7", 80, datapath.TCP): {Backends: bes("10.42.0.5:80")},
			fe("10.43.0.8", 80, datapath.TCP): {Backends: bes("10.42.0.7:80")},
		},
	}, {
		name: "internalTrafficPolicy Local: this node's endpoints only (none: refused)",
		svcs: []*corev1.Service{
			service("local", "10.43.0.9", []corev1.ServicePort{tcpPort("", 80)}, func(s *corev1.Service) {
				s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
			}),
			service("elsewhere", "10.43.0.10", []corev1.ServicePort{tcpPort("", 80)}, func(s *corev1.Service) {
				s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
			}),
		},
		slices: []*discoveryv1.EndpointSlice{
			slice("local", "l", map[string]int32{"": 80}, corev1.ProtocolTCP, ready("10.42.0.8", node), ready("10.42.1.8", "n2")),
			slice("elsewhere", "e", map[string]int32{"": 80}, corev1.ProtocolTCP, ready("10.42.1.9", "n2")),
		},
		want: datapath.Table{
			fe("10.43.0.9", 80, datapath.TCP):  {Backends: bes("10.42.0.8:80")},
			fe("10.43.0.10", 80, datapath.TCP): {},
		},
	}, {
		name: "ClientIP affinity (default and set timeout), UDP, SCTP and IPv6 skipped, external IPs",
		svcs: []*corev1.Service{
			service("dns", "10.43.0.10", []corev1.ServicePort{{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53}, {Name: "sctp", Protocol: corev1.ProtocolSCTP, Port: 99}},
				func(s *corev1.Service) {
					s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
					s.Spec.ClusterIPs = append(s.Spec.ClusterIPs, "fd00::10")
				}),
			service("sticky", "10.43.0.11", []corev1.ServicePort{tcpPort("", 80)}, func(s *corev1.Service) {
				s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
				s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](60)}}
				s.Spec.ExternalIPs = []string{"192.0.2.7"}
			}),
		},
		slices: []*discoveryv1.EndpointSlice{
			slice("dns", "d", map[string]int32{"dns": 5353, "sctp": 99}, corev1.ProtocolUDP, ready("10.42.0.2", node)),
			slice("sticky", "s", map[string]int32{"": 8080}, corev1.ProtocolTCP, ready("10.42.0.3", node)),
		},
		want: datapath.Table{
			fe("10.43.0.10", 53, datapath.UDP): {Backends: bes("10.42.0.2:5353"), Affinity: 3 * time.Hour},
			fe("10.43.0.11", 80, datapath.TCP): {Backends: bes("10.42.0.3:8080"), Affinity: time.Minute},
			fe("192.0.2.7", 80, datapath.TCP):  {Backends: bes("10.42.0.3:8080"), Affinity: time.Minute},
		},
	}, {
		name: "LoadBalancer: VIP-mode ingress translated, Proxy-mode (ServiceLB) left alone; NodePorts for the packet path",
		svcs: []*corev1.Service{
			service("lb", "10.43.0.12", []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, NodePort: 30080}}, func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeLoadBalancer
				s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{
					{IP: "172.18.0.5", IPMode: ptr.To(corev1.LoadBalancerIPModeProxy)},
					{IP: "198.51.100.1"},
				}
			}),
			service("np-local", "10.43.0.13", []corev1.ServicePort{{Protocol: corev1.ProtocolUDP, Port: 53, NodePort: 30053}}, func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeNodePort
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			}),
		},
		slices: []*discoveryv1.EndpointSlice{
			slice("lb", "lb", map[string]int32{"http": 8080}, corev1.ProtocolTCP, ready("10.42.0.4", node), ready("10.42.1.4", "n2")),
			slice("np-local", "npl", map[string]int32{"": 53}, corev1.ProtocolUDP, ready("10.42.0.5", node), ready("10.42.1.5", "n2")),
		},
		want: datapath.Table{
			fe("10.43.0.12", 80, datapath.TCP):   {Backends: bes("10.42.0.4:8080", "10.42.1.4:8080")},
			fe("198.51.100.1", 80, datapath.TCP): {Backends: bes("10.42.0.4:8080", "10.42.1.4:8080")},
			fe("10.43.0.13", 53, datapath.UDP):   {Backends: bes("10.42.0.5:53", "10.42.1.5:53")},
		},
		ports: []NodePort{
			{Port: 30080, Proto: datapath.TCP, Backends: bes("10.42.0.4:8080", "10.42.1.4:8080"), Service: "ns/lb:http"},
			{Port: 30053, Proto: datapath.UDP, Backends: bes("10.42.0.5:53"), Local: true, Service: "ns/np-local:UDP/53"},
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := Compile(node, c.svcs, c.slices)
			if !reflect.DeepEqual(st.Sockets, c.want) {
				t.Errorf("sockets:\n got %v\nwant %v", st.Sockets, c.want)
			}
			if !reflect.DeepEqual(st.NodePorts, c.ports) {
				t.Errorf("node ports:\n got %+v\nwant %+v", st.NodePorts, c.ports)
			}
		})
	}
}

func samplePorts() []NodePort {
	return []NodePort{
		{Port: 30080, Proto: datapath.TCP, Backends: bes("10.42.0.4:8080", "10.42.1.4:8080"), Service: "ns/lb:http"},
		{Port: 30053, Proto: datapath.UDP, Backends: bes("10.42.0.5:53"), Local: true, Service: "ns/dns:UDP/53"},
		{Port: 30099, Proto: datapath.TCP, Service: "ns/none:TCP/80"},
	}
}

func TestRenderNodePorts(t *testing.T) {
	nft := knftables.NewFake(knftables.IPv4Family, NodePortTable)
	tx := nft.NewTransaction()
	RenderNodePorts(tx, samplePorts())
	if err := nft.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	dump := nft.Dump()
	for _, want := range []string{
		"add rule ip kubesplit-nodeports nodeports meta l4proto . th dport vmap { tcp . 30080 : goto np_tcp_30080 , udp . 30053 : goto np_udp_30053 }",
		"add rule ip kubesplit-nodeports np_tcp_30080 meta mark set meta mark | 0x4000",
		"add rule ip kubesplit-nodeports np_tcp_30080 numgen random mod 2 vmap { 0 : goto np_tcp_30080_0 , 1 : goto np_tcp_30080_1 }",
		"add rule ip kubesplit-nodeports np_tcp_30080_1 meta l4proto tcp dnat to 10.42.1.4:8080",
		"add rule ip kubesplit-nodeports np_udp_30053_0 meta l4proto udp dnat to 10.42.0.5:53",
		"add rule ip kubesplit-nodeports postrouting meta mark & 0x4000 == 0x4000 masquerade",
	} {
		if !strings.Contains(dump, want+"\n") {
			t.Errorf("missing %q in\n%s", want, dump)
		}
	}
	for _, unwanted := range []string{"np_udp_30053 meta mark set", "30099"} {
		if strings.Contains(dump, unwanted) {
			t.Errorf("unexpected %q (Local: no masquerade; no backend: no entry) in\n%s", unwanted, dump)
		}
	}
}

// TestRenderNodePortsKernelAccepts has the kernel check the table (needs
// root and nft, which CI has).
func TestRenderNodePortsKernelAccepts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (nft --check talks to the kernel)")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("no nft binary (make deps installs it)")
	}
	nft, err := NewNodePortTable()
	if err != nil {
		t.Fatal(err)
	}
	for name, nps := range map[string][]NodePort{"sample": samplePorts(), "empty": nil} {
		tx := nft.NewTransaction()
		RenderNodePorts(tx, nps)
		if err := nft.Check(context.Background(), tx); err != nil {
			t.Errorf("%s: nft --check refuses the table: %v\n%s", name, err, tx)
		}
	}
}
