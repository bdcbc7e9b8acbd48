package netpol

import (
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Ruleset is what one node enforces: for each of its pods that a policy
// isolates, the traffic allowed to it (ingress) or from it (egress). A pod
// no policy selects in a direction is not isolated in it: everything passes.
// Replies of allowed connections always pass (the dataplane's conntrack).
type Ruleset struct {
	Pods []PodRules // sorted by namespace and name
}

// PodRules are one local pod's allowances.
type PodRules struct {
	Namespace, Name string
	IPs             []netip.Addr
	// IngressIsolated: some policy selects the pod for ingress, so only
	// what Ingress allows reaches it. Likewise for egress.
	IngressIsolated, EgressIsolated bool
	Ingress, Egress                 []Allow
}

// Allow lets traffic through whose peer (the source for ingress, the
// destination for egress) is in Peers and whose destination port is one of
// Ports (any port of any protocol when Ports is empty).
type Allow struct {
	Peers Peers
	Ports []Port
}

// Peers are addresses: every address (Any), the addresses of selected pods,
// or CIDR blocks with exceptions.
type Peers struct {
	Any    bool
	IPs    []netip.Addr
	Blocks []Block
}

// Block is an ipBlock: CIDR minus the Except ranges.
type Block struct {
	CIDR   netip.Prefix
	Except []netip.Prefix
}

// Port is a protocol and a range of destination ports; From 0 means every
// port of the protocol.
type Port struct {
	Protocol v1.Protocol
	From, To uint16
}

// Compile turns the cluster's policies into the rules of node's pods. pods
// are all the cluster's pods (the peers of the rules), namespaces all its
// namespaces (for namespace selectors). The result is deterministic, so
// that an unchanged cluster renders unchanged rules.
func Compile(node string, pods []*v1.Pod, namespaces []*v1.Namespace, policies []*networkingv1.NetworkPolicy) Ruleset {
	nsLabels := make(map[string]labels.Set, len(namespaces))
	for _, ns := range namespaces {
		nsLabels[ns.Name] = ns.Labels
	}
	var peers []*v1.Pod
	for _, p := range pods {
		if hasAddress(p) {
			peers = append(peers, p)
		}
	}
	// in a fixed order (listers return their items in map order): the
	// allowances of a pod follow its policies' names
	policies = slices.Clone(policies)
	slices.SortFunc(policies, func(a, b *networkingv1.NetworkPolicy) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	c := compiler{pods: peers, nsLabels: nsLabels}
	var rs Ruleset
	for _, p := range peers {
		if p.Spec.NodeName != node {
			continue
		}
		pr := PodRules{Namespace: p.Namespace, Name: p.Name, IPs: podIPs(p)}
		for _, np := range policies {
			if np.Namespace != p.Namespace || !matches(&np.Spec.PodSelector, p.Labels) {
				continue
			}
			ingress, egress := policyTypes(np)
			if ingress {
				pr.IngressIsolated = true
				for i := range np.Spec.Ingress {
					pr.Ingress = append(pr.Ingress, c.ingress(np, &np.Spec.Ingress[i], p)...)
				}
			}
			if egress {
				pr.EgressIsolated = true
				for i := range np.Spec.Egress {
					pr.Egress = append(pr.Egress, c.egress(np, &np.Spec.Egress[i])...)
				}
			}
		}
		if pr.IngressIsolated || pr.EgressIsolated {
			rs.Pods = append(rs.Pods, pr)
		}
	}
	slices.SortFunc(rs.Pods, func(a, b PodRules) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return rs
}

// hasAddress: pods that own addresses on the pod network. Host-network pods
// share their node's addresses, which policies do not govern; finished pods
// have given theirs back.
func hasAddress(p *v1.Pod) bool {
	return !p.Spec.HostNetwork && len(p.Status.PodIPs) > 0 &&
		p.Status.Phase != v1.PodSucceeded && p.Status.Phase != v1.PodFailed
}

func podIPs(p *v1.Pod) []netip.Addr {
	var ips []netip.Addr
	for _, ip := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			ips = append(ips, a.Unmap())
		}
	}
	return ips
}

// policyTypes: an empty policyTypes (the apiserver fills it in, but older
// objects may lack it) means Ingress, plus Egress when there are egress rules.
func policyTypes(np *networkingv1.NetworkPolicy) (ingress, egress bool) {
	if len(np.Spec.PolicyTypes) == 0 {
		return true, len(np.Spec.Egress) > 0
	}
	for _, t := range np.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			ingress = true
		case networkingv1.PolicyTypeEgress:
			egress = true
		}
	}
	return ingress, egress
}

// matches: a nil selector selects nothing, an empty one everything.
func matches(sel *metav1.LabelSelector, l map[string]string) bool {
	if sel == nil {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false // the apiserver validates selectors: never select on a bad one
	}
	return s.Matches(labels.Set(l))
}

type compiler struct {
	pods     []*v1.Pod
	nsLabels map[string]labels.Set
}

// selectPeers resolves a rule's peers. ok is false when the rule names
// peers and none exists: the rule then allows nothing. selected are the
// pods among the peers (for named ports of egress rules).
func (c *compiler) selectPeers(np *networkingv1.NetworkPolicy, list []networkingv1.NetworkPolicyPeer) (peers Peers, selected []*v1.Pod, ok bool) {
	if len(list) == 0 {
		return Peers{Any: true}, c.pods, true
	}
	seen := map[*v1.Pod]bool{}
	for _, peer := range list {
		if b := peer.IPBlock; b != nil {
			cidr, err := netip.ParsePrefix(b.CIDR)
			if err != nil {
				continue
			}
			blk := Block{CIDR: cidr.Masked()}
			for _, e := range b.Except {
				if ex, err := netip.ParsePrefix(e); err == nil {
					blk.Except = append(blk.Except, ex.Masked())
				}
			}
			peers.Blocks = append(peers.Blocks, blk)
			continue
		}
		if peer.PodSelector == nil && peer.NamespaceSelector == nil {
			continue // the apiserver refuses this; nothing to select
		}
		for _, p := range c.pods {
			if seen[p] || !c.peerMatches(np, peer, p) {
				continue
			}
			seen[p] = true
			selected = append(selected, p)
			peers.IPs = append(peers.IPs, podIPs(p)...)
		}
	}
	slices.SortFunc(peers.IPs, func(a, b netip.Addr) int { return a.Compare(b) })
	peers.IPs = slices.Compact(peers.IPs)
	return peers, selected, len(peers.IPs) > 0 || len(peers.Blocks) > 0
}

// peerMatches: a peer with only a pod selector picks pods of the policy's
// namespace; with a namespace selector, pods of the namespaces it selects
// (all of their pods when it has no pod selector).
func (c *compiler) peerMatches(np *networkingv1.NetworkPolicy, peer networkingv1.NetworkPolicyPeer, p *v1.Pod) bool {
	if peer.NamespaceSelector == nil {
		if p.Namespace != np.Namespace {
			return false
		}
	} else if !matches(peer.NamespaceSelector, c.nsLabels[p.Namespace]) {
		return false
	}
	return peer.PodSelector == nil || matches(peer.PodSelector, p.Labels)
}

// ingress compiles one ingress rule of np for the pod target: named ports
// are target's own container ports.
func (c *compiler) ingress(np *networkingv1.NetworkPolicy, r *networkingv1.NetworkPolicyIngressRule, target *v1.Pod) []Allow {
	peers, _, ok := c.selectPeers(np, r.From)
	if !ok {
		return nil
	}
	if len(r.Ports) == 0 {
		return []Allow{{Peers: peers}}
	}
	var ports []Port
	for _, p := range r.Ports {
		if port, ok := resolve(p, target); ok {
			ports = append(ports, port)
		}
	}
	if len(ports) == 0 {
		return nil // only named ports, and the pod has none of them
	}
	return []Allow{{Peers: peers, Ports: sortPorts(ports)}}
}

// egress compiles one egress rule. A named port is each destination pod's
// own: the rule's pods are grouped by the number the name has in them.
func (c *compiler) egress(np *networkingv1.NetworkPolicy, r *networkingv1.NetworkPolicyEgressRule) []Allow {
	peers, selected, ok := c.selectPeers(np, r.To)
	if !ok {
		return nil
	}
	if len(r.Ports) == 0 {
		return []Allow{{Peers: peers}}
	}
	var numeric []Port
	byPort := map[Port][]netip.Addr{}
	for _, p := range r.Ports {
		if p.Port == nil || p.Port.Type == intstr.Int {
			if port, ok := resolve(p, nil); ok {
				numeric = append(numeric, port)
			}
			continue
		}
		for _, pod := range selected {
			if port, ok := resolve(p, pod); ok {
				byPort[port] = append(byPort[port], podIPs(pod)...)
			}
		}
	}
	var allows []Allow
	if len(numeric) > 0 {
		allows = append(allows, Allow{Peers: peers, Ports: sortPorts(numeric)})
	}
	named := make([]Port, 0, len(byPort))
	for port := range byPort {
		named = append(named, port)
	}
	for _, port := range sortPorts(named) {
		ips := byPort[port]
		slices.SortFunc(ips, func(a, b netip.Addr) int { return a.Compare(b) })
		allows = append(allows, Allow{Peers: Peers{IPs: slices.Compact(ips)}, Ports: []Port{port}})
	}
	return allows
}

// resolve turns a policy port into a Port; a named port is looked up among
// pod's container ports (with the same protocol) and is false when pod has
// no such port (or is nil).
func resolve(p networkingv1.NetworkPolicyPort, pod *v1.Pod) (Port, bool) {
	proto := v1.ProtocolTCP
	if p.Protocol != nil {
		proto = *p.Protocol
	}
	if p.Port == nil {
		return Port{Protocol: proto}, true
	}
	if p.Port.Type == intstr.Int {
		from := uint16(p.Port.IntVal)
		to := from
		if p.EndPort != nil && *p.EndPort > p.Port.IntVal {
			to = uint16(*p.EndPort)
		}
		return Port{Protocol: proto, From: from, To: to}, true
	}
	if pod == nil {
		return Port{}, false
	}
	for _, ctr := range pod.Spec.Containers {
		for _, cp := range ctr.Ports {
			cpProto := cp.Protocol
			if cpProto == "" {
				cpProto = v1.ProtocolTCP
			}
			if cp.Name == p.Port.StrVal && cpProto == proto {
				n := uint16(cp.ContainerPort)
				return Port{Protocol: proto, From: n, To: n}, true
			}
		}
	}
	return Port{}, false
}

func sortPorts(ports []Port) []Port {
	slices.SortFunc(ports, func(a, b Port) int {
		if c := strings.Compare(string(a.Protocol), string(b.Protocol)); c != 0 {
			return c
		}
		if a.From != b.From {
			return int(a.From) - int(b.From)
		}
		return int(a.To) - int(b.To)
	})
	return slices.Compact(ports)
}
