// Package leading runs a part of the controllers service on one replica at
// a time: the one holding the part's own Lease (kube-controller-manager's
// lease is internal to it).
package leading

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/kubesplit/kubesplit/pkg/component"
)

// Run calls work with a context that ends when the lease namespace/name is
// lost, entering the election again each time, until ctx ends.
func Run(ctx context.Context, client kubernetes.Interface, namespace, name string, lease component.Lease, log *slog.Logger, work func(ctx context.Context)) error {
	host, _ := os.Hostname()
	identity := host + "_" + rand.String(8)
	lock := &resourcelock.LeaseLock{LeaseMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Client: client.CoordinationV1(), LockConfig: resourcelock.ResourceLockConfig{Identity: identity}}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: lock, Name: name, ReleaseOnCancel: true,
			LeaseDuration: lease.Duration, RenewDeadline: lease.RenewDeadline, RetryPeriod: lease.RetryPeriod,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					log.Info("leading", "lease", namespace+"/"+name, "identity", identity)
					work(ctx)
				},
				OnStoppedLeading: func() { log.Info("not leading", "lease", namespace+"/"+name) },
			},
		})
		if err != nil {
			return fmt.Errorf("leader election: %w", err)
		}
		le.Run(ctx)
	}
	return nil
}
