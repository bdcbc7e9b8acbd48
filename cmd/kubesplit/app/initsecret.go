package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubesplit/kubesplit/pkg/bootstrap"
	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/pkisecret"
)

// initSecret is `init --secret NS/NAME`.
func initSecret(cmd *cobra.Command, secret, kubeconfig string, o bootstrap.Options) error {
	ns, name, ok := strings.Cut(secret, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("--secret %q: want NAMESPACE/NAME", secret)
	}
	cfg, err := clusterConfig(kubeconfig)
	if err != nil {
		return fmt.Errorf("--secret: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	rep, changed, err := syncSecret(cmd.Context(), cs, ns, name, o)
	if err != nil {
		return err
	}
	for _, f := range rep.Renewed {
		fmt.Fprintf(cmd.OutOrStdout(), "renewed %s (less than %s left)\n", f, o.Renewal.Before)
	}
	state := "unchanged"
	if changed {
		state = "written"
	}
	fmt.Fprintf(cmd.OutOrStdout(), "Secret %s/%s %s: %d files created, %d renewed, %d kept\n",
		ns, name, state, len(rep.Created), len(rep.Renewed), len(rep.Kept))
	return nil
}

// clusterConfig is the in-cluster config, else the kubeconfig given or $KUBECONFIG.
func clusterConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		if cfg, err := rest.InClusterConfig(); err == nil {
			return cfg, nil
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
}

// syncSecret pulls the Secret into a scratch directory, runs init there and
// writes the result back, starting over if someone else wrote the Secret
// meanwhile. changed says whether the Secret was created or updated.
func syncSecret(ctx context.Context, cs kubernetes.Interface, ns, name string, o bootstrap.Options) (*bootstrap.Report, bool, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	for attempt := 0; ; attempt++ {
		rep, changed, err := syncSecretOnce(ctx, cs, ns, name, o)
		if errors.Is(err, pkisecret.ErrChanged) && attempt < 5 {
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("Secret %s/%s: %w", ns, name, err)
		}
		return rep, changed, nil
	}
}

func syncSecretOnce(ctx context.Context, cs kubernetes.Interface, ns, name string, o bootstrap.Options) (*bootstrap.Report, bool, error) {
	snap, err := pkisecret.Get(ctx, cs, ns, name)
	if err != nil {
		return nil, false, err
	}
	dir, err := os.MkdirTemp("", "kubesplit-init-")
	if err != nil {
		return nil, false, err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, false, err
	}
	if err := snap.WriteDir(dir); err != nil {
		return nil, false, err
	}
	o.DataDir = layout.Dir(dir)
	rep, err := bootstrap.Run(o)
	if err != nil {
		return nil, false, err
	}
	files, err := pkisecret.ReadDir(dir)
	if err != nil {
		return nil, false, err
	}
	changed, err := pkisecret.Put(ctx, cs, ns, name, map[string]string{"app.kubernetes.io/managed-by": "kubesplit"}, snap, files)
	return rep, changed, err
}
