package app

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubesplit/kubesplit/pkg/pkisecret"
	"github.com/kubesplit/kubesplit/pkg/skew"
	"github.com/kubesplit/kubesplit/pkg/version"
	"github.com/kubesplit/kubesplit/roles"
)

// Init containers of the chart's pre-upgrade Job: current-ROLE and new-ROLE
// run the role's running and next image with --version.
const (
	currentPrefix = "current-"
	newPrefix     = "new-"
)

func upgradeCheckCommand() *cobra.Command {
	var secret, pod, server string
	var hold []string
	cmd := &cobra.Command{
		Use:   "upgrade-check --secret NAMESPACE/NAME --pod NAME [--hold ROLE,...]",
		Short: "In the Helm chart's pre-upgrade hook: refuse an upgrade the version-skew policy forbids",
		Long: `upgrade-check runs in the hosted-control-plane chart's pre-upgrade Job (deploy/helm).
The Job's init containers ran each role's running and next image with --version
(containers current-ROLE and new-ROLE); upgrade-check reads what they printed from
the pod's logs, asks the hosted cluster for its kubelets' versions (with the admin
kubeconfig from the PKI Secret, at --server) and applies the version-skew policy to
the control plane as it would be after the upgrade. It exits non-zero with the
reason when the policy forbids it; Helm prints the hook's log and changes nothing.
When the upgrade is allowed, the roles named by --hold (the chart names them when
the upgrade changes several) are paused and marked ` + HeldAnnotation + `, so that
Helm's apply rolls none of them: the post-upgrade Job's upgrade-rollout resumes
them one at a time.`,
		Example: `  # in the chart's pre-upgrade Job (POD_NAME from the downward API)
  kubesplit upgrade-check --secret cp1/kubesplit-pki --pod $POD_NAME --server https://apiserver:6443`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			host, ns, name, err := upgradeJobClient(secret, pod)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctxOf(cmd), 2*time.Minute)
			defer cancel()
			current, next, err := podVersions(ctx, host, ns, pod)
			if err != nil {
				return err
			}
			kubelets, err := hostedKubelets(ctx, host, ns, name, server)
			if err != nil {
				// a broken control plane must still be upgradable (the fix may be the upgrade)
				fmt.Fprintf(cmd.OutOrStdout(), "warning: the kubelets' versions are unknown (%v); checking the roles alone\n", err)
			}
			if err := checkUpgrade(cmd, current, next, kubelets); err != nil {
				return err
			}
			return holdRoles(ctx, host, ns, hold, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&secret, "secret", "", "NAMESPACE/NAME of the PKI Secret (its admin kubeconfig reaches the hosted cluster)")
	f.StringVar(&pod, "pod", os.Getenv("POD_NAME"), "this pod's name (its init containers' logs hold the versions)")
	f.StringVar(&server, "server", "https://apiserver:6443", "the hosted apiserver's URL from where this runs (default: the chart's Service)")
	f.StringSliceVar(&hold, "hold", nil, "roles (Deployments in the Secret's namespace) to pause for the post-upgrade rollout once the upgrade is allowed")
	return cmd
}

// upgradeJobClient is what the chart's upgrade Jobs start with: their
// flags checked and a client of the host cluster (the pod's service
// account); ns and name are the PKI Secret's.
func upgradeJobClient(secret, pod string) (host kubernetes.Interface, ns, name string, err error) {
	ns, name, ok := strings.Cut(secret, "/")
	if !ok || ns == "" || name == "" || pod == "" {
		return nil, "", "", errors.New("--secret NAMESPACE/NAME and --pod NAME are required")
	}
	cfg, err := clusterConfig("")
	if err != nil {
		return nil, "", "", err
	}
	host, err = kubernetes.NewForConfig(cfg)
	return host, ns, name, err
}

// checkUpgrade applies the skew policy and reports.
func checkUpgrade(cmd *cobra.Command, current, next, kubelets map[string]string) error {
	changes := map[string]string{}
	for role, v := range next {
		if current[role] != v {
			changes[role] = v
		}
	}
	out := cmd.OutOrStdout()
	if err := skew.After(changes, current, kubelets); err != nil {
		return fmt.Errorf("upgrade refused: %w", err) // printed by main, into the hook's log
	}
	for _, r := range slices.Sorted(maps.Keys(next)) {
		fmt.Fprintf(out, "%s: %s -> %s\n", r, orUnknown(current[r]), next[r])
	}
	fmt.Fprintf(out, "upgrade allowed (%d kubelets checked)\n", len(kubelets))
	return nil
}

func orUnknown(s string) string {
	if s == "" {
		return "(not running)"
	}
	return s
}

// podVersions reads the Kubernetes versions the pod's current-ROLE and
// new-ROLE init containers printed.
func podVersions(ctx context.Context, cs kubernetes.Interface, ns, name string) (current, next map[string]string, err error) {
	p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("reading pod %s/%s: %w", ns, name, err)
	}
	current, next = map[string]string{}, map[string]string{}
	for _, c := range p.Spec.InitContainers {
		target := current
		role, ok := strings.CutPrefix(c.Name, currentPrefix)
		if !ok {
			if role, ok = strings.CutPrefix(c.Name, newPrefix); !ok {
				continue
			}
			target = next
		}
		if !roles.Valid(role) {
			return nil, nil, fmt.Errorf("init container %s: %q is not a role", c.Name, role)
		}
		b, err := cs.CoreV1().Pods(ns).GetLogs(name, &corev1.PodLogOptions{Container: c.Name}).DoRaw(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("the output of %s (%s --version): %w", c.Name, c.Image, err)
		}
		got, _, k8s, err := version.ParseInfo(lastLine(string(b)))
		if err != nil {
			return nil, nil, fmt.Errorf("%s (%s --version): %w", c.Name, c.Image, err)
		}
		if got != role {
			return nil, nil, fmt.Errorf("%s is a kubesplit %s image, not %s", c.Image, got, role)
		}
		target[role] = k8s
	}
	if len(next) == 0 {
		return nil, nil, fmt.Errorf("pod %s/%s has no %sROLE init containers", ns, name, newPrefix)
	}
	return current, next, nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// hostedKubelets lists the hosted cluster's kubelet versions by node.
func hostedKubelets(ctx context.Context, host kubernetes.Interface, ns, name, server string) (map[string]string, error) {
	cs, err := hostedClient(ctx, host, ns, name, server)
	if err != nil {
		return nil, err
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, n := range nodes.Items {
		out[n.Name] = n.Status.NodeInfo.KubeletVersion
	}
	return out, nil
}

// hostedClient is a client of the hosted cluster with the admin kubeconfig
// from the PKI Secret ns/name, at server (from where the Job runs).
func hostedClient(ctx context.Context, host kubernetes.Interface, ns, name, server string) (kubernetes.Interface, error) {
	snap, err := pkisecret.Get(ctx, host, ns, name)
	if err != nil {
		return nil, err
	}
	admin := snap.Files["admin.kubeconfig"]
	if len(admin) == 0 {
		return nil, fmt.Errorf("Secret %s/%s has no admin.kubeconfig", ns, name)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(admin)
	if err != nil {
		return nil, err
	}
	if server != "" {
		cfg.Host = server
	}
	cfg = rest.CopyConfig(cfg)
	cfg.Timeout = 15 * time.Second
	return kubernetes.NewForConfig(cfg)
}
