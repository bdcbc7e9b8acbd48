package main

import (
	// Each import registers its plugin with Caddy for the directive of the
	// same name below (TestPluginsRegistered).
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/file"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/k8s_external"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics" // the "prometheus" directive
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

// directives are the plugins of a cluster DNS Corefile (what kubeadm and k3s
// deploy, plus file for custom zones and bind for listening on one address,
// as a node-local DNS or a test does), in CoreDNS's execution order: the
// order of its plugin.cfg (core/dnsserver/zdirectives.go), which a Corefile
// cannot change (TestDirectivesInCanonicalOrder).
var directives = []string{
	"reload",
	"bind",
	"ready",
	"health",
	"prometheus",
	"errors",
	"log",
	"loadbalance",
	"cache",
	"hosts",
	"k8s_external",
	"kubernetes",
	"file",
	"loop",
	"forward",
}
