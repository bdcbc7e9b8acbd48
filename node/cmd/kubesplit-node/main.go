// Command kubesplit-node is the node agent: kubelet, containerd, kube-proxy,
// the pod overlay and the reverse tunnel to the gateway, joined with a token.
//
//	kubesplit-node run   --gateway URL --token TOKEN   supervise the agent (a node container's entrypoint)
//	kubesplit-node agent --gateway URL --token TOKEN   the agent itself (under systemd or the supervisor)
package main

import (
	"os"

	"github.com/kubesplit/kubesplit/node/internal/agent"
)

func main() {
	os.Exit(agent.Main(os.Args[1:], os.Stdout, os.Stderr))
}
