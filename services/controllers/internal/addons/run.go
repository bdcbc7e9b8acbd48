package addons

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubesplit/kubesplit/pkg/jointoken"
	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/pki"
	"github.com/kubesplit/kubesplit/pkg/tokenstore"
)

// Options configure the controllers' own part.
type Options struct {
	Kubeconfig string
	// ManifestsDir is applied and kept in sync by the deployer; the bundled
	// addons are written into it, except Disabled ones.
	ManifestsDir string
	Disabled     []string
	Bundled      BundledParams
	// NodeTokenFile, if it exists, holds the default join token (init
	// --node-token); its bootstrap-token Secret is created when missing.
	NodeTokenFile string
	// ClusterCA signs the serving certificates ServingCertAnnotation asks
	// for; its certificate is the bundled APIServices' caBundle.
	ClusterCA layout.Pair
}

// Run applies the bootstrap RBAC (retrying until the apiserver takes it),
// then runs the kubelet serving-certificate approver, the addons' serving
// certificates and the addon deployer until ctx ends.
func Run(ctx context.Context, o Options, log *slog.Logger) error {
	ca, err := pki.LoadKeyPair(o.ClusterCA.Cert, o.ClusterCA.Key)
	if err != nil {
		return fmt.Errorf("the cluster CA, for addons' serving certificates: %w", err)
	}
	o.Bundled.ClusterCA = pki.CertPEM(ca.Cert)
	cfg, err := clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	if err != nil {
		return err
	}
	cfg.UserAgent = "kubesplit-addons"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	if err := WriteBundled(o.ManifestsDir, o.Bundled, o.Disabled); err != nil {
		return err
	}
	retry(ctx, log, "applying bootstrap RBAC", func() error { return ApplyRBAC(ctx, client) })
	log.Info("bootstrap RBAC applied")
	if o.NodeTokenFile != "" {
		retry(ctx, log, "storing the default node token", func() error { return ensureNodeToken(ctx, client, o.NodeTokenFile) })
	}
	go func() {
		certs := &ServingCerts{Client: client, CA: ca, Domain: o.Bundled.ClusterDomain, Log: log.With("part", "serving-certs")}
		if err := certs.Run(ctx); err != nil {
			log.Error("addons' serving certificates stopped", "err", err)
		}
	}()
	go func() {
		_ = NewDeployer(o.ManifestsDir, client, dyn, log.With("part", "deployer")).Run(ctx, 10*time.Second)
	}()
	return (&ServingApprover{Client: client, Log: log}).Run(ctx)
}

func retry(ctx context.Context, log *slog.Logger, what string, f func() error) {
	for ctx.Err() == nil {
		err := f()
		if err == nil {
			return
		}
		log.Warn(what+"; retrying", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
}

// ensureNodeToken stores the default join token if its Secret is missing.
// The file's secret never reaches a log line or an error message.
func ensureNodeToken(ctx context.Context, client kubernetes.Interface, path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	tok, err := jointoken.Parse(string(b))
	if err != nil {
		return err
	}
	err = tokenstore.Store(ctx, client, tok, 0, "default node token (kubesplit init --node-token)")
	if apierrors.IsAlreadyExists(err) { // (it unwraps)
		return nil
	}
	return err
}
