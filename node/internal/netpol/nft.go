package netpol

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	"sigs.k8s.io/knftables"
)

// Table is the nftables table (family inet) the rules live in, in the node's
// network namespace. It is the agent's alone: every sync replaces it whole,
// in one transaction, so no packet ever sees half a ruleset.
const Table = "kubesplit-netpol"

// Render writes rs as one transaction that replaces the table:
//
//	chain forward (hook forward, priority filter, policy accept)
//	  ct state established,related accept        replies and ongoing connections
//	  ip saddr vmap { POD-IP : jump egress_NS/NAME, ... }
//	  ip daddr vmap { POD-IP : jump ingress_NS/NAME, ... }
//	chain egress_NS/NAME: one rule per allowance, "... return", then "counter drop"
//	chain ingress_NS/NAME: one rule per allowance, "... accept", then "counter drop"
//
// The forward hook sees pod traffic after kube-proxy's DNAT (a Service's
// address is already its endpoint's) and before its SNAT; pods on one node
// talk across the bridge, which the agent makes pass through these hooks
// (net.bridge.bridge-nf-call-iptables). Traffic the node itself sends to its
// pods (kubelet probes, the tunnel's webhook and proxy connections) goes
// through the output hook instead: a node always reaches its own pods, as
// the NetworkPolicy API allows. A pod both egress- and ingress-isolated on
// the same node is checked twice: its egress chain returns, then the
// destination's ingress chain decides.
func Render(tx *knftables.Transaction, rs Ruleset) {
	// add + delete + add: the table exists, then is gone, then is empty,
	// whether or not it existed before
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("kubesplit NetworkPolicy enforcement (the node agent rewrites it whole)")})
	tx.Add(&knftables.Chain{
		Name:     "forward",
		Type:     knftables.PtrTo(knftables.FilterType),
		Hook:     knftables.PtrTo(knftables.ForwardHook),
		Priority: knftables.PtrTo(knftables.FilterPriority),
	})
	tx.Add(&knftables.Rule{Chain: "forward", Rule: "ct state established,related accept"})

	type jump struct{ ip, chain string }
	var egress, ingress [2][]jump // [0] IPv4, [1] IPv6
	for _, p := range rs.Pods {
		for _, dir := range []string{"egress", "ingress"} {
			if dir == "egress" && !p.EgressIsolated || dir == "ingress" && !p.IngressIsolated {
				continue
			}
			chain := chainName(dir, p.Namespace, p.Name)
			tx.Add(&knftables.Chain{Name: chain})
			allows, verdict, peerField := p.Ingress, "accept", "saddr"
			if dir == "egress" {
				allows, verdict, peerField = p.Egress, "return", "daddr"
			}
			for _, ip := range p.IPs {
				fam := family(ip)
				j := jump{ip.String(), chain}
				if dir == "egress" {
					egress[fam] = append(egress[fam], j)
				} else {
					ingress[fam] = append(ingress[fam], j)
				}
			}
			for _, m := range ruleMatches(allows, p.IPs, peerField) {
				tx.Add(&knftables.Rule{Chain: chain, Rule: knftables.Concat(m, verdict)})
			}
			tx.Add(&knftables.Rule{Chain: chain, Rule: "counter drop"})
		}
	}
	// the jumps: verdict maps of pod address to chain, egress first (a
	// packet leaving an isolated pod must be allowed out before the
	// destination's ingress is asked)
	for _, dir := range []struct {
		name, field string
		jumps       [2][]jump
	}{{"egress", "saddr", egress}, {"ingress", "daddr", ingress}} {
		for fam, jumps := range dir.jumps {
			if len(jumps) == 0 {
				continue
			}
			m := dir.name + "-" + [2]string{"v4", "v6"}[fam]
			tx.Add(&knftables.Map{Name: m, Type: [2]string{"ipv4_addr", "ipv6_addr"}[fam] + " : verdict"})
			for _, j := range jumps {
				tx.Add(&knftables.Element{Map: m, Key: []string{j.ip}, Value: []string{"jump " + j.chain}})
			}
			tx.Add(&knftables.Rule{Chain: "forward", Rule: knftables.Concat(ipKeyword[fam], dir.field, "vmap", "@", m)})
		}
	}
}

var ipKeyword = [2]string{"ip", "ip6"}

func family(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

// chainName is DIR_NAMESPACE/POD: readable in `nft list table`, and a
// valid nft identifier (namespace and pod names are DNS names). Names
// within the kernel's 256-byte limit.
func chainName(dir, ns, name string) string {
	return dir + "_" + ns + "/" + name
}

// ruleMatches renders a pod's allowances as the match parts of nft rules
// (the caller appends the verdict), for the address families of the pod's
// own addresses. Allowances with the same peers become one rule per
// protocol whose ports are one set (a lookup, however many policies add
// ports), or one rule without ports when any of them admits every port. No
// rule at all means nothing is admitted.
func ruleMatches(allows []Allow, podIPs []netip.Addr, field string) []string {
	var fams []int
	for _, ip := range podIPs {
		if f := family(ip); !slices.Contains(fams, f) {
			fams = append(fams, f)
		}
	}
	type group struct {
		anyPort bool
		ports   []Port
	}
	var order []string // peer clauses, first seen first
	groups := map[string]*group{}
	for _, a := range allows {
		for _, peer := range peerClauses(a.Peers, fams, field) {
			g := groups[peer]
			if g == nil {
				g = &group{}
				groups[peer] = g
				order = append(order, peer)
			}
			g.anyPort = g.anyPort || len(a.Ports) == 0
			g.ports = append(g.ports, a.Ports...)
		}
	}
	var out []string
	for _, peer := range order {
		g := groups[peer]
		if g.anyPort {
			out = append(out, peer)
			continue
		}
		for _, port := range portMatches(g.ports) {
			out = append(out, peer+" "+port)
		}
	}
	return out
}

// peerClauses: the address matches of peers, one per kind (pod addresses
// as one set, each CIDR block with its exceptions), per address family.
func peerClauses(p Peers, fams []int, field string) []string {
	var out []string
	for _, fam := range fams {
		kw := ipKeyword[fam]
		if p.Any {
			out = append(out, "meta nfproto "+[2]string{"ipv4", "ipv6"}[fam])
			continue
		}
		var ips []string
		for _, ip := range p.IPs {
			if family(ip) == fam {
				ips = append(ips, ip.String())
			}
		}
		if len(ips) > 0 {
			out = append(out, fmt.Sprintf("%s %s { %s }", kw, field, strings.Join(ips, ", ")))
		}
		for _, b := range p.Blocks {
			if family(b.CIDR.Addr()) != fam {
				continue
			}
			part := fmt.Sprintf("%s %s %s", kw, field, b.CIDR)
			var except []string
			for _, e := range b.Except {
				if family(e.Addr()) == fam {
					except = append(except, e.String())
				}
			}
			if len(except) > 0 {
				part += fmt.Sprintf(" %s %s != { %s }", kw, field, strings.Join(except, ", "))
			}
			out = append(out, part)
		}
	}
	return out
}

// portMatches: one match per protocol, its ports as one anonymous set of
// numbers and ranges, overlapping ones merged (nft refuses overlapping
// intervals in a set), or no port match when the protocol is admitted whole.
func portMatches(ports []Port) []string {
	ports = sortPorts(slices.Clone(ports))
	var out []string
	for i := 0; i < len(ports); {
		proto := ports[i].Protocol
		var ranges [][2]uint16
		whole := false
		for ; i < len(ports) && ports[i].Protocol == proto; i++ {
			p := ports[i]
			if p.From == 0 {
				whole = true
				continue
			}
			to := max(p.To, p.From)
			if n := len(ranges); n > 0 && uint32(p.From) <= uint32(ranges[n-1][1])+1 {
				ranges[n-1][1] = max(ranges[n-1][1], to)
				continue
			}
			ranges = append(ranges, [2]uint16{p.From, to})
		}
		m := "meta l4proto " + l4proto(proto)
		if !whole {
			elems := make([]string, len(ranges))
			for j, r := range ranges {
				if r[0] == r[1] {
					elems[j] = fmt.Sprintf("%d", r[0])
				} else {
					elems[j] = fmt.Sprintf("%d-%d", r[0], r[1])
				}
			}
			m += " th dport { " + strings.Join(elems, ", ") + " }"
		}
		out = append(out, m)
	}
	return out
}

func l4proto(p v1.Protocol) string {
	return strings.ToLower(string(p)) // tcp, udp, sctp
}
