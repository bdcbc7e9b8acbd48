package main

import (
	"slices"
	"testing"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
)

// main() has not run in the test binary, so dnsserver.Directives still
// holds CoreDNS's own list: ours must be a subsequence of it.
func TestDirectivesInCanonicalOrder(t *testing.T) {
	t.Parallel()
	upstream := dnsserver.Directives
	i := 0
	for _, d := range directives {
		j := slices.Index(upstream[i:], d)
		if j < 0 {
			t.Fatalf("directive %q is missing from CoreDNS's list or out of its order %v", d, upstream)
		}
		i += j + 1
	}
}

// Every directive needs its plugin imported. (The imports also register a
// few plugins they depend on, such as transfer and metadata; without a
// directive a Corefile cannot use them.)
func TestPluginsRegistered(t *testing.T) {
	t.Parallel()
	registered := caddy.ListPlugins()["others"]
	for _, d := range directives {
		if !slices.Contains(registered, "dns."+d) {
			t.Errorf("directive %q has no registered plugin: import its package in plugins.go", d)
		}
	}
}
