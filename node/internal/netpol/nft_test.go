package netpol

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/knftables"
)

func renderString(rs Ruleset) string {
	tx := knftables.NewFake(knftables.InetFamily, Table).NewTransaction()
	Render(tx, rs)
	return tx.String()
}

// every kind of rule Render writes
func sampleRuleset() Ruleset {
	pods, nss := cluster()
	return Compile("n1", pods, nss, []*networkingv1.NetworkPolicy{
		policy("a", map[string]string{"app": "web"}, ingressOnly, []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{
				{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "b"}}},
				{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/16", Except: []string{"10.0.1.0/24", "10.0.2.0/24"}}},
			},
			Ports: []networkingv1.NetworkPolicyPort{
				port(intstr.FromString("http"), nil),
				{Port: ptr(intstr.FromInt32(9000)), EndPort: ptr(int32(9100))},
				{Protocol: &udp},
			},
		}}, nil),
		policy("b", nil, egressOnly, nil, []networkingv1.NetworkPolicyEgressRule{
			{Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromString("http"), nil)}},
			{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.96.0.10/32"}}},
				Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(53), &udp), port(intstr.FromInt32(53), &tcp)}},
		}),
		policy("a", map[string]string{"app": "db"}, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}, nil, nil),
	})
}

func TestRender(t *testing.T) {
	fake := knftables.NewFake(knftables.InetFamily, Table)
	tx := fake.NewTransaction()
	Render(tx, sampleRuleset())
	if err := fake.Run(context.Background(), tx); err != nil {
		t.Fatalf("the fake refuses the transaction: %v\n%s", err, tx)
	}
	dump := fake.Dump()
	for _, want := range []string{
		"add chain inet kubesplit-netpol forward { type filter hook forward priority 0 ; }",
		"add rule inet kubesplit-netpol forward ct state established,related accept",
		"add rule inet kubesplit-netpol forward ip saddr vmap @egress-v4",
		"add rule inet kubesplit-netpol forward ip daddr vmap @ingress-v4",
		"add element inet kubesplit-netpol egress-v4 { 10.0.0.3 : jump egress_a/db }",
		"add element inet kubesplit-netpol egress-v4 { 10.0.0.4 : jump egress_b/client }",
		"add element inet kubesplit-netpol ingress-v4 { 10.0.0.2 : jump ingress_a/web }",
		"add element inet kubesplit-netpol ingress-v4 { 10.0.0.3 : jump ingress_a/db }",
		// namespace b's pods, on both nodes, to web's http (8080), 9000-9100, any UDP port
		"add rule inet kubesplit-netpol ingress_a/web ip saddr { 10.0.0.4, 10.0.1.2 } meta l4proto tcp th dport { 8080, 9000-9100 } accept",
		"add rule inet kubesplit-netpol ingress_a/web ip saddr { 10.0.0.4, 10.0.1.2 } meta l4proto udp accept",
		"add rule inet kubesplit-netpol ingress_a/web ip saddr 10.0.0.0/16 ip saddr != { 10.0.1.0/24, 10.0.2.0/24 } meta l4proto tcp th dport { 8080, 9000-9100 } accept",
		"add rule inet kubesplit-netpol ingress_a/web counter drop",
		// client's egress: each pod's own http, and DNS
		"add rule inet kubesplit-netpol egress_b/client ip daddr { 10.0.0.2 } meta l4proto tcp th dport { 8080 } return",
		"add rule inet kubesplit-netpol egress_b/client ip daddr { 10.0.1.3 } meta l4proto tcp th dport { 8081 } return",
		"add rule inet kubesplit-netpol egress_b/client ip daddr { 10.0.1.2 } meta l4proto tcp th dport { 9090 } return",
		"add rule inet kubesplit-netpol egress_b/client ip daddr 10.96.0.10/32 meta l4proto udp th dport { 53 } return",
		"add rule inet kubesplit-netpol egress_b/client ip daddr 10.96.0.10/32 meta l4proto tcp th dport { 53 } return",
		"add rule inet kubesplit-netpol egress_b/client counter drop",
		// db: isolated both ways, nothing allowed
		"add chain inet kubesplit-netpol ingress_a/db",
		"add rule inet kubesplit-netpol ingress_a/db counter drop",
	} {
		if !strings.Contains(dump, want+"\n") {
			t.Errorf("missing %q in\n%s", want, dump)
		}
	}
}

// merged: allowances with the same peers share a rule, ports overlapping
// or adjacent become one range
func mergedRuleset() Ruleset {
	tcpPort := func(from, to uint16) Port { return Port{Protocol: v1.ProtocolTCP, From: from, To: to} }
	x := Peers{IPs: []netip.Addr{mustAddr("10.0.0.4")}}
	return Ruleset{Pods: []PodRules{{Namespace: "a", Name: "web", IPs: []netip.Addr{mustAddr("10.0.0.2")}, IngressIsolated: true,
		Ingress: []Allow{
			{Peers: Peers{Any: true}, Ports: []Port{tcpPort(80, 80)}},
			{Peers: Peers{Any: true}, Ports: []Port{tcpPort(85, 90), tcpPort(80, 86)}},
			{Peers: Peers{Any: true}, Ports: []Port{tcpPort(91, 91), tcpPort(443, 443), {Protocol: v1.ProtocolUDP, From: 53, To: 53}}},
			{Peers: x, Ports: []Port{tcpPort(1, 1)}},
			{Peers: x},
		}}}}
}

func TestRenderMergesPorts(t *testing.T) {
	fake := knftables.NewFake(knftables.InetFamily, Table)
	tx := fake.NewTransaction()
	Render(tx, mergedRuleset())
	if err := fake.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	rules, err := fake.ListRules(context.Background(), "ingress_a/web")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rules {
		got = append(got, r.Rule)
	}
	want := []string{
		"meta nfproto ipv4 meta l4proto tcp th dport { 80-91, 443 } accept",
		"meta nfproto ipv4 meta l4proto udp th dport { 53 } accept",
		"ip saddr { 10.0.0.4 } accept",
		"counter drop",
	}
	if !slices.Equal(got, want) {
		t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestRenderNothingIsolated(t *testing.T) {
	fake := knftables.NewFake(knftables.InetFamily, Table)
	tx := fake.NewTransaction()
	Render(tx, Ruleset{})
	if err := fake.Run(context.Background(), tx); err != nil {
		t.Fatal(err)
	}
	if rules, _ := fake.ListRules(context.Background(), "forward"); len(rules) != 1 {
		t.Errorf("with no isolated pod the table should hold the conntrack rule alone; it holds %d rules:\n%s", len(rules), fake.Dump())
	}
}

// TestRenderKernelAccepts has nft and the kernel check the rules (nft
// --check: nothing is loaded). It needs root and the nft binary, which `make
// deps` installs; it is skipped elsewhere.
func TestRenderKernelAccepts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (nft --check talks to the kernel)")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("no nft binary (make deps installs it)")
	}
	nft, err := NewTable()
	if err != nil {
		t.Fatal(err)
	}
	for name, rs := range map[string]Ruleset{"sample": sampleRuleset(), "empty": {}, "merged": mergedRuleset(), "ipv6": {Pods: []PodRules{{
		Namespace: "a", Name: "v6", IPs: []netipAddr{mustAddr("fd00::2"), mustAddr("10.0.0.2")}, IngressIsolated: true,
		Ingress: []Allow{
			{Peers: Peers{Blocks: []Block{{CIDR: mustPrefix("fd00::/64"), Except: []netipPrefix{mustPrefix("fd00::/96")}}}}},
			{Peers: Peers{Any: true}, Ports: []Port{{Protocol: v1.ProtocolSCTP, From: 9, To: 9}}},
		},
	}}}} {
		tx := nft.NewTransaction()
		Render(tx, rs)
		if err := nft.Check(context.Background(), tx); err != nil {
			t.Errorf("%s: nft --check refuses the rules: %v\n%s", name, err, tx)
		}
	}
}

type (
	netipAddr   = netip.Addr
	netipPrefix = netip.Prefix
)

var (
	mustAddr   = netip.MustParseAddr
	mustPrefix = netip.MustParsePrefix
)
