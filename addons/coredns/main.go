// Command coredns is kubesplit's cluster DNS: CoreDNS built from its Go
// module with only the plugins a Kubernetes cluster DNS uses.
//
// This main exists because CoreDNS's own main package links every in-tree
// plugin, and with them cloud DNS SDKs (route53, azure, clouddns), etcd,
// dnstap, geoip and more: code and dependencies a cluster DNS never runs.
// Here plugins.go picks the plugins; the rest is what CoreDNS's main does.
package main

import (
	"fmt"
	"os"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
)

// kubesplitVersion is set by hack/build.sh (-X main.kubesplitVersion=...).
var kubesplitVersion = "dev"

func main() {
	if err := dnsserver.SetDirectives(directives); err != nil {
		fmt.Fprintf(os.Stderr, "coredns: setting the plugin list: %v\n", err)
		os.Exit(1)
	}
	// -version prints "CoreDNS-<version>" and "<os>/<arch>, <go>, <GitCommit>".
	coremain.GitCommit = "kubesplit " + kubesplitVersion + " build"
	coremain.Run()
}
