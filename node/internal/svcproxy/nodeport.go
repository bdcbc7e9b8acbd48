package svcproxy

import (
	"context"
	"fmt"
	"strings"

	"sigs.k8s.io/knftables"
)

// NodePortTable is the nftables table (family ip) of the NodePort packet
// path, in the node's network namespace; the agent replaces it whole on
// every change.
const NodePortTable = "kubesplit-nodeports"

// masqMark marks NodePort packets to masquerade (kube-proxy's bit; kube-proxy
// does not run beside this proxy).
const masqMark = "0x4000"

// RenderNodePorts writes nps as one transaction replacing the table:
//
//	chain prerouting (nat, dstnat)  fib daddr type local jump nodeports
//	chain output (nat, dstnat)      ip daddr != 127.0.0.0/8 fib daddr type local jump nodeports
//	chain nodeports                 meta l4proto . th dport vmap { tcp . 30080 : goto np_tcp_30080, ... }
//	chain np_tcp_30080              [mark for masquerade] numgen random mod N vmap { 0 : goto np_tcp_30080_0, ... }
//	chain np_tcp_30080_0            meta l4proto tcp dnat to 10.42.1.5:8080
//	chain postrouting (nat, srcnat) meta mark & 0x4000 == 0x4000 masquerade
//
// A NodePort without a backend (or, with externalTrafficPolicy Local,
// without one on this node) gets no entry: its packets reach the node's own
// closed port and are refused.
func RenderNodePorts(tx *knftables.Transaction, nps []NodePort) {
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	tx.Add(&knftables.Table{Comment: knftables.PtrTo("kubesplit NodePorts (the node agent's eBPF Service proxy rewrites it whole)")})
	tx.Add(&knftables.Chain{Name: "nodeports"}) // before the jumps to it
	for _, h := range []struct {
		name string
		hook knftables.BaseChainHook
		prio knftables.BaseChainPriority
		rule string
	}{
		{"prerouting", knftables.PreroutingHook, knftables.DNATPriority, "fib daddr type local jump nodeports"},
		{"output", knftables.OutputHook, knftables.DNATPriority, "ip daddr != 127.0.0.0/8 fib daddr type local jump nodeports"},
		{"postrouting", knftables.PostroutingHook, knftables.SNATPriority, "meta mark & " + masqMark + " == " + masqMark + " masquerade"},
	} {
		tx.Add(&knftables.Chain{Name: h.name, Type: knftables.PtrTo(knftables.NATType), Hook: &h.hook, Priority: &h.prio})
		tx.Add(&knftables.Rule{Chain: h.name, Rule: h.rule})
	}
	var vmap []string
	for _, np := range nps {
		if len(np.Backends) == 0 {
			continue
		}
		proto := "tcp"
		if np.Proto == 17 {
			proto = "udp"
		}
		chain := fmt.Sprintf("np_%s_%d", proto, np.Port)
		vmap = append(vmap, fmt.Sprintf("%s . %d : goto %s", proto, np.Port, chain))
		tx.Add(&knftables.Chain{Name: chain, Comment: knftables.PtrTo(np.Service)})
		if !np.Local {
			tx.Add(&knftables.Rule{Chain: chain, Rule: "meta mark set meta mark | " + masqMark})
		}
		var pick []string
		for i, b := range np.Backends {
			ep := fmt.Sprintf("%s_%d", chain, i)
			tx.Add(&knftables.Chain{Name: ep})
			tx.Add(&knftables.Rule{Chain: ep, Rule: "meta l4proto " + proto + " dnat to " + b.String()})
			pick = append(pick, fmt.Sprintf("%d : goto %s", i, ep))
		}
		tx.Add(&knftables.Rule{Chain: chain, Rule: fmt.Sprintf("numgen random mod %d vmap { %s }", len(np.Backends), strings.Join(pick, " , "))})
	}
	// (" , " between elements: knftables' fake, used in the unit tests,
	// finds the chains a rule jumps to by whole words)
	if len(vmap) > 0 {
		tx.Add(&knftables.Rule{Chain: "nodeports", Rule: "meta l4proto . th dport vmap { " + strings.Join(vmap, " , ") + " }"})
	}
}

// NewNodePortTable opens the NodePort table through the nft binary.
func NewNodePortTable() (knftables.Interface, error) {
	nft, err := knftables.New(knftables.IPv4Family, NodePortTable)
	if err != nil {
		return nil, fmt.Errorf("--service-proxy=ebpf serves NodePorts with nftables (the nft binary, 1.0.1 or later, and a kernel with nf_tables): %w", err)
	}
	return nft, nil
}

// RemoveNodePorts deletes the table, if there is one.
func RemoveNodePorts(ctx context.Context) error {
	nft, err := knftables.New(knftables.IPv4Family, NodePortTable)
	if err != nil {
		return nil
	}
	tx := nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	return nft.Run(ctx, tx)
}
