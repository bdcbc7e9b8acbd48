package servicelb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"

	"github.com/kubesplit/kubesplit/pkg/component"
	"github.com/kubesplit/kubesplit/services/controllers/internal/leading"
)

// Options configure ServiceLB.
type Options struct {
	Kubeconfig string
	// Image is the forwarder's (kubesplit/servicelb:TAG).
	Image string
	// Disabled (--disable servicelb) removes what ServiceLB made instead.
	Disabled bool
	// Lease times the election among controllers replicas.
	Lease component.Lease
}

// Run runs ServiceLB until ctx ends: on the replica that holds the
// kube-system/kubesplit-servicelb Lease (of its own: kube-controller-manager's
// lease is internal to it, and the addons part runs on every replica, which
// suits idempotent applies but not a controller that creates and deletes),
// re-entering the election whenever the lease is lost. Disabled, it
// removes every DaemonSet it made and the status it wrote, then returns.
func Run(ctx context.Context, o Options, log *slog.Logger) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	if err != nil {
		return err
	}
	cfg.UserAgent = "kubesplit-servicelb"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	if o.Disabled {
		for ctx.Err() == nil {
			err := Cleanup(ctx, client, log)
			if err == nil {
				return nil
			}
			log.Warn("removing ServiceLB's forwarders (--disable servicelb); retrying", "err", err)
			sleep(ctx, 2*time.Second)
		}
		return ctx.Err()
	}
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubesplit-servicelb"})
	return leading.Run(ctx, client, Namespace, LeaseName, o.Lease, log, func(ctx context.Context) {
		c, err := New(client, o.Image, recorder, log)
		if err == nil {
			err = c.Run(ctx, 2)
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			log.Error("ServiceLB stopped", "err", err)
		}
	})
}

// Cleanup removes every forwarder DaemonSet and, from each Service that
// still exists, the status ServiceLB wrote.
func Cleanup(ctx context.Context, client kubernetes.Interface, log *slog.Logger) error {
	dss, err := client.AppsV1().DaemonSets(Namespace).List(ctx, metav1.ListOptions{LabelSelector: managedByLabel + "=" + managedBy})
	if err != nil {
		return err
	}
	for _, ds := range dss.Items {
		if key, ok := serviceKey(ds.Labels); ok {
			svc, err := client.CoreV1().Services(ds.Labels[namespaceLabel]).Get(ctx, ds.Labels[serviceLabel], metav1.GetOptions{})
			switch {
			case err == nil:
				if err := clearStatus(ctx, client, svc); err != nil {
					return fmt.Errorf("clearing the status of Service %s: %w", key, err)
				}
			case err != nil && !apierrors.IsNotFound(err):
				return err
			}
		}
		if err := client.AppsV1().DaemonSets(Namespace).Delete(ctx, ds.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		log.Info("ServiceLB disabled: forwarders removed and status cleared", "daemonset", ds.Name)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
