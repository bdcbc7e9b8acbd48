// Package netpol enforces the cluster's NetworkPolicies on one node: it
// watches policies, namespaces and pods, compiles the rules of the node's
// own pods (compile.go) and loads them into an nftables table of the node's
// network namespace (nft.go).
//
// Why our own and not a ready implementation: sigs.k8s.io/kube-network-policies
// (what kind ships) decides each new connection in userspace through an
// nftables `queue` statement, which needs the kernel's nft_queue
// (CONFIG_NFT_QUEUE); kernels without it, like this project's CI hosts,
// cannot run it at all. kube-router (what k3s embeds) is served here only in
// an old release with known security flaws. Compiling policies into plain
// nftables rules keeps every verdict in the kernel (no per-connection trip
// to userspace, and no traffic stalls while the agent restarts), needs only
// nf_tables and conntrack, and uses sigs.k8s.io/knftables, the library
// kube-proxy's nftables mode is built on (already linked into the agent).
package netpol

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
	"sigs.k8s.io/knftables"

	"github.com/kubesplit/kubesplit/node/internal/syncloop"
)

// Controller keeps the node's table in line with the cluster's policies.
type Controller struct {
	Client   kubernetes.Interface
	NodeName string
	Log      *slog.Logger
	// MinInterval is the least time between two syncs: a burst of changes
	// (a Deployment's pods starting) becomes one rewrite. Default 100ms.
	MinInterval time.Duration
}

// metrics, on the agent's metrics endpoint (kube-proxy's, :10249/metrics,
// which serves the legacy registry)
var (
	syncSeconds = metrics.NewHistogram(&metrics.HistogramOpts{
		Subsystem: "kubesplit_network_policy", Name: "sync_duration_seconds",
		Help:    "Time to compile the NetworkPolicies of the node's pods and load them into nftables.",
		Buckets: metrics.ExponentialBuckets(0.001, 2, 15), StabilityLevel: metrics.ALPHA,
	})
	isolatedPods = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Subsystem: "kubesplit_network_policy", Name: "isolated_pods",
		Help: "The node's pods that a NetworkPolicy isolates, by direction.", StabilityLevel: metrics.ALPHA,
	}, []string{"direction"})
	ruleCount = metrics.NewGauge(&metrics.GaugeOpts{
		Subsystem: "kubesplit_network_policy", Name: "rules",
		Help: "nftables rules in the node's NetworkPolicy table.", StabilityLevel: metrics.ALPHA,
	})
	syncErrors = metrics.NewCounter(&metrics.CounterOpts{
		Subsystem: "kubesplit_network_policy", Name: "sync_errors_total",
		Help: "Syncs that failed to load the rules (retried).", StabilityLevel: metrics.ALPHA,
	})
)

func init() {
	legacyregistry.MustRegister(syncSeconds, isolatedPods, ruleCount, syncErrors)
}

// NewTable opens the node's table through the nft binary, checking that the
// kernel and nft can hold it. Its error says what is missing.
func NewTable() (knftables.Interface, error) {
	nft, err := knftables.New(knftables.InetFamily, Table)
	if err != nil {
		return nil, fmt.Errorf("NetworkPolicy enforcement needs nftables (the nft binary, 1.0.1 or later, and a kernel with nf_tables): %w; "+
			"or run the agent with --disable network-policy", err)
	}
	return nft, nil
}

// Remove deletes the table, if there is one: with enforcement disabled no
// rule of an earlier run may stay behind.
func Remove(ctx context.Context) error {
	nft, err := knftables.New(knftables.InetFamily, Table)
	if err != nil {
		return nil // no nftables: nothing can be left either
	}
	tx := nft.NewTransaction()
	tx.Add(&knftables.Table{})
	tx.Delete(&knftables.Table{})
	return nft.Run(ctx, tx)
}

// Run syncs until ctx ends. It returns an error only when it cannot start.
func (c *Controller) Run(ctx context.Context, nft knftables.Interface) error {
	factory := informers.NewSharedInformerFactory(c.Client, 0)
	pods := factory.Core().V1().Pods()
	// a node keeps every pod of the cluster (peers of its rules) but needs
	// only their names, labels, node, addresses and ports: drop the rest
	if err := pods.Informer().SetTransform(slimPod); err != nil {
		return err
	}
	namespaces := factory.Core().V1().Namespaces()
	policies := factory.Networking().V1().NetworkPolicies()

	loop := syncloop.New(c.MinInterval)
	for _, inf := range []cache.SharedIndexInformer{pods.Informer(), namespaces.Informer(), policies.Informer()} {
		if _, err := inf.AddEventHandler(loop.Handler()); err != nil {
			return err
		}
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("network policy: the %v informer did not sync", typ)
		}
	}
	c.Log.Info("enforcing NetworkPolicies", "table", "inet "+Table)

	var applied string
	loop.Run(ctx, func(ctx context.Context) error {
		start := time.Now()
		rs := Compile(c.NodeName, list[*v1.Pod](pods.Lister().List(labels.Everything())),
			list[*v1.Namespace](namespaces.Lister().List(labels.Everything())),
			list[*networkingv1.NetworkPolicy](policies.Lister().List(labels.Everything())))
		tx := nft.NewTransaction()
		Render(tx, rs)
		text := tx.String()
		if text == applied {
			return nil
		}
		if err := nft.Run(ctx, tx); err != nil {
			return err
		}
		applied = text
		syncSeconds.Observe(time.Since(start).Seconds())
		ruleCount.Set(float64(tx.NumOperations()))
		var in, eg int
		for _, p := range rs.Pods {
			if p.IngressIsolated {
				in++
			}
			if p.EgressIsolated {
				eg++
			}
		}
		isolatedPods.WithLabelValues("ingress").Set(float64(in))
		isolatedPods.WithLabelValues("egress").Set(float64(eg))
		c.Log.Debug("NetworkPolicy rules loaded", "isolatedPods", len(rs.Pods), "took", time.Since(start).Round(time.Microsecond))
		return nil
	}, func(err error, retryIn time.Duration) {
		syncErrors.Inc()
		c.Log.Error("loading the NetworkPolicy rules failed; retrying", "in", retryIn, "err", err)
	})
	return nil
}

func list[T any, S ~[]T](s S, err error) []T { return s }

// slimPod keeps what the rules need of a pod.
func slimPod(obj any) (any, error) {
	p, ok := obj.(*v1.Pod)
	if !ok {
		return obj, nil // a tombstone
	}
	slim := &v1.Pod{}
	slim.Name, slim.Namespace, slim.UID = p.Name, p.Namespace, p.UID
	slim.Labels, slim.ResourceVersion = p.Labels, p.ResourceVersion
	slim.Spec.NodeName, slim.Spec.HostNetwork = p.Spec.NodeName, p.Spec.HostNetwork
	for _, ctr := range p.Spec.Containers {
		if len(ctr.Ports) > 0 {
			slim.Spec.Containers = append(slim.Spec.Containers, v1.Container{Name: ctr.Name, Ports: ctr.Ports})
		}
	}
	slim.Status.Phase, slim.Status.PodIPs = p.Status.Phase, p.Status.PodIPs
	return slim, nil
}
