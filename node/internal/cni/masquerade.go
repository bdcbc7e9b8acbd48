package cni

import (
	"fmt"
	"os/exec"
	"strings"
)

// Chain is the nat chain holding the pod masquerade rules.
const Chain = "KUBESPLIT-POSTROUTING"

// ensureMasquerade masquerades pod traffic leaving the cluster network and
// lets pod traffic through the FORWARD chain. It calls the iptables binary,
// as kube-proxy does, so both share one backend (legacy or nft).
func ensureMasquerade(clusterCIDR string) error {
	steps := [][]string{
		{"-t", "nat", "-N", Chain},
		{"-t", "nat", "-F", Chain},
		{"-t", "nat", "-A", Chain, "-s", clusterCIDR, "-d", clusterCIDR, "-j", "RETURN"},
		{"-t", "nat", "-A", Chain, "-s", clusterCIDR, "!", "-d", "224.0.0.0/4", "-j", "MASQUERADE", "--random-fully"},
	}
	for i, args := range steps {
		out, err := exec.Command("iptables", append([]string{"-w"}, args...)...).CombinedOutput()
		if err != nil && !(i == 0 && strings.Contains(string(out), "exists")) {
			return fmt.Errorf("iptables %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	for _, rule := range [][]string{
		{"-t", "nat", "POSTROUTING", "-m", "comment", "--comment", "kubesplit pod masquerade", "-j", Chain},
		{"-t", "filter", "FORWARD", "-s", clusterCIDR, "-m", "comment", "--comment", "kubesplit pods", "-j", "ACCEPT"},
		{"-t", "filter", "FORWARD", "-d", clusterCIDR, "-m", "comment", "--comment", "kubesplit pods", "-j", "ACCEPT"},
	} {
		table, chain, spec := rule[:2], rule[2], rule[3:]
		check := append(append(append([]string{"-w"}, table...), "-C", chain), spec...)
		if exec.Command("iptables", check...).Run() == nil {
			continue
		}
		add := append(append(append([]string{"-w"}, table...), "-A", chain), spec...)
		if out, err := exec.Command("iptables", add...).CombinedOutput(); err != nil {
			return fmt.Errorf("iptables %s: %v: %s", strings.Join(add, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}
