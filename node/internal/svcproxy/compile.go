// Package svcproxy is the node's eBPF Service proxy (--service-proxy=ebpf):
// it watches Services and EndpointSlices and keeps two datapaths in step.
//
//   - Sockets of the node's pods: the cgroup programs of package datapath
//     translate a Service address to a backend at connect()/sendmsg() time
//     (ClusterIPs and external IPs, TCP and UDP, ClientIP affinity,
//     internalTrafficPolicy: Local, refusal when there is no endpoint).
//   - Packets from elsewhere to a NodePort: an nftables table (nodeport.go)
//     that DNATs them to a backend, masquerading unless
//     externalTrafficPolicy is Local. A socket program never sees those
//     packets (no local socket connects), so this part stays packet-level.
//
// LoadBalancer addresses are ServiceLB's: its forwarders listen on the
// nodes' addresses and dial the ClusterIP, which the socket programs
// translate like any other client's. Status entries with ipMode Proxy are
// left alone, as kube-proxy does.
package svcproxy

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/kubesplit/kubesplit/node/internal/svcproxy/datapath"
)

// NodePort is one NodePort of a Service as the packet path serves it.
type NodePort struct {
	Port     uint16
	Proto    uint8
	Backends []datapath.Backend
	// Local: externalTrafficPolicy Local (this node's endpoints only, the
	// client's address kept); otherwise masqueraded.
	Local   bool
	Service string // namespace/name:port, for comments and debugging
}

// State is everything the node's datapaths hold.
type State struct {
	Sockets   datapath.Table
	NodePorts []NodePort // sorted by protocol, port
}

// defaultAffinity is the API's default sessionAffinityConfig timeout.
const defaultAffinity = 10800 * time.Second

// Compile turns Services and EndpointSlices into the node's State. Pure and
// deterministic: backends are sorted, so that an unchanged cluster gives an
// equal State and the datapaths are not touched.
func Compile(node string, services []*corev1.Service, endpointSlices []*discoveryv1.EndpointSlice) State {
	bySvc := map[string][]*discoveryv1.EndpointSlice{}
	for _, s := range endpointSlices {
		if key := ServiceKeyOf(s); key != "" {
			bySvc[key] = append(bySvc[key], s)
		}
	}
	st := State{Sockets: datapath.Table{}}
	for _, svc := range services {
		sockets, ports := CompileService(node, svc, bySvc[svc.Namespace+"/"+svc.Name])
		maps.Copy(st.Sockets, sockets)
		st.NodePorts = append(st.NodePorts, ports...)
	}
	SortNodePorts(st.NodePorts)
	return st
}

// ServiceKeyOf is the namespace/name of the Service an EndpointSlice
// belongs to, or "" for a slice the proxy ignores (not IPv4, no owner).
func ServiceKeyOf(s *discoveryv1.EndpointSlice) string {
	name := s.Labels[discoveryv1.LabelServiceName]
	if s.AddressType != discoveryv1.AddressTypeIPv4 || name == "" {
		return ""
	}
	return s.Namespace + "/" + name
}

// SortNodePorts orders NodePorts by protocol and port.
func SortNodePorts(nps []NodePort) {
	slices.SortFunc(nps, func(a, b NodePort) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Port, b.Port))
	})
}

// CompileService is one Service's frontends and NodePorts, from its
// EndpointSlices (those ServiceKeyOf gives its key).
func CompileService(node string, svc *corev1.Service, eps []*discoveryv1.EndpointSlice) (datapath.Table, []NodePort) {
	if svc.Spec.Type == corev1.ServiceTypeExternalName || svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return nil, nil
	}
	key := svc.Namespace + "/" + svc.Name
	var addrs []netip.Addr
	for _, s := range append(append([]string{}, svc.Spec.ClusterIPs...), svc.Spec.ExternalIPs...) {
		if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
			addrs = append(addrs, a)
		}
	}
	if len(svc.Spec.ClusterIPs) == 0 {
		if a, err := netip.ParseAddr(svc.Spec.ClusterIP); err == nil && a.Is4() {
			addrs = append(addrs, a)
		}
	}
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if ing.IPMode != nil && *ing.IPMode == corev1.LoadBalancerIPModeProxy {
			continue
		}
		if a, err := netip.ParseAddr(ing.IP); err == nil && a.Is4() {
			addrs = append(addrs, a)
		}
	}
	var affinity time.Duration
	if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		affinity = defaultAffinity
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			affinity = time.Duration(*c.ClientIP.TimeoutSeconds) * time.Second
		}
	}
	internalLocal := svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
	externalLocal := svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal &&
		(svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer)
	sockets := datapath.Table{}
	var ports []NodePort
	for _, p := range svc.Spec.Ports {
		proto, ok := protoNumber(p.Protocol)
		if !ok {
			continue
		}
		all := endpointsFor(eps, p, node, false)
		backends := all
		if internalLocal {
			backends = endpointsFor(eps, p, node, true)
		}
		for _, a := range addrs {
			sockets[datapath.Frontend{Addr: a, Port: uint16(p.Port), Proto: proto}] =
				datapath.Service{Backends: backends, Affinity: affinity}
		}
		if p.NodePort != 0 {
			np := NodePort{Port: uint16(p.NodePort), Proto: proto, Backends: all, Local: externalLocal,
				Service: key + ":" + portName(p)}
			if externalLocal {
				np.Backends = endpointsFor(eps, p, node, true)
			}
			ports = append(ports, np)
		}
	}
	return sockets, ports
}

func portName(p corev1.ServicePort) string {
	if p.Name != "" {
		return p.Name
	}
	return string(p.Protocol) + "/" + strconv.Itoa(int(p.Port))
}

func protoNumber(p corev1.Protocol) (uint8, bool) {
	switch p {
	case corev1.ProtocolTCP, "":
		return datapath.TCP, true
	case corev1.ProtocolUDP:
		return datapath.UDP, true
	}
	return 0, false // SCTP: not translated (nor is it by kube-proxy without the module)
}

// endpointsFor is the backends of Service port p, as kube-proxy picks them:
// the ready endpoints; when there is none, the serving terminating ones (so
// that a rolling update's last old pod still answers); local restricts
// them to this node's.
func endpointsFor(eps []*discoveryv1.EndpointSlice, p corev1.ServicePort, node string, local bool) []datapath.Backend {
	var ready, terminating []datapath.Backend
	seen := map[datapath.Backend]bool{}
	for _, s := range eps {
		var port int32
		found := false
		for _, sp := range s.Ports {
			name := ""
			if sp.Name != nil {
				name = *sp.Name
			}
			proto := corev1.ProtocolTCP
			if sp.Protocol != nil {
				proto = *sp.Protocol
			}
			if name == p.Name && proto == p.Protocol && sp.Port != nil {
				port, found = *sp.Port, true
				break
			}
		}
		if !found {
			continue
		}
		for _, ep := range s.Endpoints {
			if local && (ep.NodeName == nil || *ep.NodeName != node) {
				continue
			}
			isReady := ep.Conditions.Ready == nil || *ep.Conditions.Ready
			serving := ep.Conditions.Serving == nil || *ep.Conditions.Serving
			term := ep.Conditions.Terminating != nil && *ep.Conditions.Terminating
			for _, a := range ep.Addresses {
				ip, err := netip.ParseAddr(a)
				if err != nil || !ip.Is4() {
					continue
				}
				b := netip.AddrPortFrom(ip, uint16(port))
				if seen[b] {
					continue
				}
				switch {
				case isReady:
					seen[b] = true
					ready = append(ready, b)
				case serving && term:
					seen[b] = true
					terminating = append(terminating, b)
				}
			}
		}
	}
	out := ready
	if len(out) == 0 {
		out = terminating
	}
	slices.SortFunc(out, func(a, b datapath.Backend) int { return a.Compare(b) })
	return out
}
