package servicelb

import (
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/pkg/servicelb"
)

func parsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	return p.Masked(), err
}

// eligible says whether a node may serve: with optIn only nodes labelled
// NodeLabel=true, otherwise every node not labelled NodeLabel=false.
func eligible(n *corev1.Node, optIn bool) bool {
	if optIn {
		return n.Labels[NodeLabel] == "true"
	}
	return n.Labels[NodeLabel] != "false"
}

// anyOptIn says whether some node opted in.
func anyOptIn(nodes []*corev1.Node) bool {
	return slices.ContainsFunc(nodes, func(n *corev1.Node) bool { return n.Labels[NodeLabel] == "true" })
}

// nodeAddresses are the addresses a node serves on: its ExternalIPs when it
// has any, else its InternalIPs.
func nodeAddresses(n *corev1.Node) []string {
	var ext, in []string
	for _, a := range n.Status.Addresses {
		switch a.Type {
		case corev1.NodeExternalIP:
			ext = append(ext, a.Address)
		case corev1.NodeInternalIP:
			in = append(in, a.Address)
		}
	}
	if len(ext) > 0 {
		return ext
	}
	return in
}

func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// localEndpoints are, per node, the Service's ready endpoints on it, by
// the forwarder's listen port (for externalTrafficPolicy Local).
func localEndpoints(ports []forwarded, slicesOf []*discoveryv1.EndpointSlice) map[string]servicelb.Endpoints {
	out := map[string]servicelb.Endpoints{}
	for _, s := range slicesOf {
		if s.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		for _, ep := range s.Endpoints {
			if ep.NodeName == nil || (ep.Conditions.Ready != nil && !*ep.Conditions.Ready) {
				continue
			}
			for _, fp := range ports {
				port, ok := slicePort(s, fp.svc)
				if !ok {
					continue
				}
				for _, a := range ep.Addresses {
					addr, err := netip.ParseAddr(a)
					if err != nil {
						continue
					}
					if out[*ep.NodeName] == nil {
						out[*ep.NodeName] = servicelb.Endpoints{}
					}
					out[*ep.NodeName][fp.lb.Listen] = append(out[*ep.NodeName][fp.lb.Listen], netip.AddrPortFrom(addr, port))
				}
			}
		}
	}
	return out
}

// slicePort is the endpoints' port number for a Service port: the slice's
// port of the same name and protocol.
func slicePort(s *discoveryv1.EndpointSlice, sp corev1.ServicePort) (uint16, bool) {
	for _, p := range s.Ports {
		name, proto := "", corev1.ProtocolTCP
		if p.Name != nil {
			name = *p.Name
		}
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		if name == sp.Name && proto == sp.Protocol && p.Port != nil {
			return uint16(*p.Port), true
		}
	}
	return 0, false
}

// ingress is the Service's status.loadBalancer.ingress: the addresses of
// the eligible nodes that run a ready forwarder and, when Local, have a
// ready endpoint, sorted; ipMode Proxy tells kube-proxy not to capture
// them (they are the nodes' own addresses: the forwarders serve them).
func ingress(svc *corev1.Service, pods []*corev1.Pod, nodes map[string]*corev1.Node, optIn bool,
	endpoints map[string]servicelb.Endpoints) []corev1.LoadBalancerIngress {
	var addrs []string
	for _, p := range pods {
		n := nodes[p.Spec.NodeName]
		if n == nil || !podReady(p) || !eligible(n, optIn) || (local(svc) && !endpoints[n.Name].Any()) {
			continue
		}
		addrs = append(addrs, nodeAddresses(n)...)
	}
	slices.SortFunc(addrs, func(a, b string) int {
		x, errX := netip.ParseAddr(a)
		y, errY := netip.ParseAddr(b)
		if errX != nil || errY != nil {
			return strings.Compare(a, b)
		}
		return x.Compare(y)
	})
	addrs = slices.Compact(addrs)
	var out []corev1.LoadBalancerIngress
	for _, a := range addrs {
		out = append(out, corev1.LoadBalancerIngress{IP: a, IPMode: ptr.To(corev1.LoadBalancerIPModeProxy)})
	}
	return out
}

// unschedulable is why a forwarder pod is pending (the scheduler's
// message), with the node it is for, or "" when it is not stuck.
func unschedulable(p *corev1.Pod) (node, why string) {
	if p.Spec.NodeName != "" || p.DeletionTimestamp != nil {
		return "", ""
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return daemonPodNode(p), c.Message
		}
	}
	return "", ""
}

// daemonPodNode is the node a DaemonSet pod is made for (the DaemonSet
// controller pins it with a metadata.name node affinity).
func daemonPodNode(p *corev1.Pod) string {
	a := p.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return ""
	}
	for _, t := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		for _, f := range t.MatchFields {
			if f.Key == "metadata.name" && len(f.Values) == 1 {
				return f.Values[0]
			}
		}
	}
	return ""
}
