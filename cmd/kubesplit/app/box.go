package app

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubesplit/kubesplit/pkg/box"
	"github.com/kubesplit/kubesplit/pkg/layout"
)

// boxFlags are where a control-plane box keeps its manifests and data.
func boxFlags(cmd *cobra.Command, b *box.Box) {
	f := cmd.Flags()
	f.StringVar(&b.Manifests, "manifests-dir", b.Manifests, "the box's static-pod manifests (the node agent's data dir /manifests)")
	f.StringVar((*string)(&b.DataDir), "data-dir", string(b.DataDir), "the box's cluster data directory")
	f.StringVar(&b.Ctr, "ctr", b.Ctr, "containerd's CLI")
	f.StringVar(&b.Socket, "containerd-socket", b.Socket, "the node agent's containerd")
}

// apiClient is a client with a short timeout, or nil when kubeconfig is unreadable.
func apiClient(kubeconfig string, timeout time.Duration) (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.Timeout = timeout
	return kubernetes.NewForConfig(cfg)
}

func upgradeCommand() *cobra.Command {
	b := box.Default()
	u := box.Upgrade{Timeout: 3 * time.Minute}
	cmd := &cobra.Command{
		Use:   "upgrade ROLE --image IMAGE",
		Short: "On a control-plane box: move one role to another image, checked, snapshotted and rolled back if it is not healthy",
		Long: `upgrade changes one role's static-pod manifest on this box. First it checks the
image is on the box, is that role's, and that the version-skew policy allows it
next to the running roles and the cluster's kubelets; before a datastore or
apiserver change it saves a datastore snapshot into the data directory's
snapshots/. It writes the new manifest atomically (the previous one is kept
beside the manifest directory), then waits for the role's own health on the box
(not the API, which is down while the apiserver changes). If the role is not
healthy within --timeout, the previous manifest is put back. Workloads and the
other roles are not touched.`,
		Example: `  kubesplit upgrade scheduler --image kubesplit/scheduler:v0.2.0
  kubesplit upgrade apiserver --image kubesplit/apiserver:v0.2.0 --dry-run`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if u.Image == "" {
				return fmt.Errorf("--image is required (e.g. --image kubesplit/%s:v0.2.0)", args[0])
			}
			u.Role, u.Out = args[0], cmd.OutOrStdout()
			if api, err := apiClient(b.DataDir.Kubeconfig(layout.Admin), 5*time.Second); err == nil {
				ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
				nodes, err := api.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
				cancel()
				if err == nil {
					u.Kubelets = map[string]string{}
					for _, n := range nodes.Items {
						u.Kubelets[n.Name] = n.Status.NodeInfo.KubeletVersion
					}
				} else {
					fmt.Fprintf(cmd.ErrOrStderr(), "the API does not answer (%v): only this box's kubelet is checked for version skew\n", err)
				}
			}
			return b.Upgrade(cmd.Context(), u)
		},
	}
	cmd.Flags().StringVar(&u.Image, "image", "", "the role's new image (in the box's containerd)")
	cmd.Flags().BoolVar(&u.DryRun, "dry-run", false, "print the manifest's diff and the checks' verdict; change nothing")
	cmd.Flags().DurationVar(&u.Timeout, "timeout", u.Timeout, "how long the role has to become healthy on its new image before the previous manifest is put back")
	boxFlags(cmd, &b)
	return cmd
}

func statusCommand() *cobra.Command {
	b := box.Default()
	var kubeconfig string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Each control-plane role's image, version, health and restarts",
		Long: `status with --kubeconfig asks a cluster's API (the roles' mirror pods on a box,
the apiserver and the leader leases elsewhere). Without it, on a control-plane box,
it asks the box itself: manifests, images, each role's local health, and the
restarts from the API when it answers.`,
		Example: `  kubesplit status                                 # on a box
  kubesplit status --kubeconfig admin.kubeconfig`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			if kubeconfig != "" {
				api, err := apiClient(kubeconfig, 10*time.Second)
				if err != nil {
					return fmt.Errorf("--kubeconfig: %w", err)
				}
				rows, err := box.Cluster(ctx, api)
				if err != nil {
					return err
				}
				return box.Print(cmd.OutOrStdout(), rows)
			}
			if _, err := os.Stat(b.Manifests); err != nil {
				return fmt.Errorf("%s: not a control-plane box; give --kubeconfig to ask a cluster", b.Manifests)
			}
			api, _ := apiClient(b.DataDir.Kubeconfig(layout.Admin), 5*time.Second)
			rows, err := b.Local(ctx, api)
			if err != nil {
				return err
			}
			return box.Print(cmd.OutOrStdout(), rows)
		},
	}
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "ask this cluster's API (default: this box)")
	boxFlags(cmd, &b)
	return cmd
}
