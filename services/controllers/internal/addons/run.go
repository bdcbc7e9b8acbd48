package addons

import (
	"context"
	"log/slog"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Run applies the bootstrap RBAC (retrying until the apiserver takes it)
// and then runs the serving-certificate approver, until ctx ends.
func Run(ctx context.Context, kubeconfig string, log *slog.Logger) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	cfg.UserAgent = "kubesplit-addons"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	for {
		err := ApplyRBAC(ctx, client)
		if err == nil {
			log.Info("bootstrap RBAC applied")
			break
		}
		log.Warn("applying bootstrap RBAC; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(2 * time.Second):
		}
	}
	return (&ServingApprover{Client: client, Log: log}).Run(ctx)
}
