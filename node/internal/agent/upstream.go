package agent

import (
	"context"

	"github.com/spf13/cobra"
	logsapi "k8s.io/component-base/logs/api/v1"
	_ "k8s.io/component-base/logs/json/register"          // kubelet's --logging-format=json
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as upstream's main registers them
	_ "k8s.io/component-base/metrics/prometheus/version"
	kubeproxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

// upstream kubelet and kube-proxy run in the agent's process (as k3s does):
// one Go runtime and one copy of the shared Kubernetes packages instead of two.
func kubeletCommand(ctx context.Context) *cobra.Command {
	cmd := kubelet.NewKubeletCommand(ctx)
	cmd.SilenceUsage = true
	return cmd
}

func kubeProxyCommand() *cobra.Command {
	cmd := kubeproxy.NewProxyCommand()
	cmd.SilenceUsage = true
	return cmd
}

func init() {
	// Both upstream commands apply their logging configuration; in one
	// process the second must be accepted as long as it is the same.
	logsapi.ReapplyHandling = logsapi.ReapplyHandlingIgnoreUnchanged
}
