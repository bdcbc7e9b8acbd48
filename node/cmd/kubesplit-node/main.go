// Command kubesplit-node is the node agent: kubelet, containerd, kube-proxy,
// the pod overlay and the reverse tunnel to the gateway, joined with a token.
//
//	kubesplit-node agent --gateway URL --token TOKEN
//
// It runs under systemd on a host, or under kubesplit-node-supervisor in a node container.
package main

import (
	"os"

	"github.com/kubesplit/kubesplit/node/internal/agent"
)

func main() {
	os.Exit(agent.Main(os.Args[1:], os.Stdout, os.Stderr))
}
