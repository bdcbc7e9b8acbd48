package example

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/e2e-framework/klient/k8s"
	"sigs.k8s.io/e2e-framework/klient/wait"
	"sigs.k8s.io/e2e-framework/klient/wait/conditions"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/envfuncs"
	"sigs.k8s.io/e2e-framework/pkg/features"
	"sigs.k8s.io/e2e-framework/pkg/utils"
	"sigs.k8s.io/e2e-framework/support"
)

func nodeReady(o k8s.Object) bool {
	for _, c := range o.(*corev1.Node).Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// TestNodeLifecycle drives the provider's node operations the way a suite
// written for k3d does: e2e-framework's PerformNodeLifecycleOperation, by
// the cluster's name.
func TestNodeLifecycle(t *testing.T) {
	// kubesplit names its nodes (node-N): AddNode writes the name into
	// node.Name; the name asked for stays usable for the provider's operations
	node := &support.Node{Name: "extra-worker", Cluster: clusterName}
	f := features.New("node lifecycle through the provider").
		WithLabel("provider", "kubesplit").
		Assess("AddNode: a new node joins and is Ready", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			if err := utils.PerformNodeLifecycleOperation(ctx, support.AddNode, node); err != nil {
				t.Fatal(err)
			}
			t.Logf("added node %s", node.Name)
			err := wait.For(conditions.New(cfg.Client().Resources()).ResourceMatch(
				&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node.Name}}, nodeReady), wait.WithTimeout(2*time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			return ctx
		}).
		Assess("ListNode: the roles and both nodes, running", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			p, _ := envfuncs.GetClusterFromContext(ctx, clusterName)
			nodes, err := p.(support.E2EClusterProviderWithLifeCycle).ListNode(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var workers []string
			for _, n := range nodes {
				if n.State != "running" || n.IP == nil {
					t.Errorf("%s (%s) is %q, address %v", n.Name, n.Role, n.State, n.IP)
				}
				if n.Role == "worker" {
					workers = append(workers, n.Name)
				}
			}
			if len(nodes) != 7 || !slices.Contains(workers, node.Name) {
				t.Fatalf("ListNode: %+v", nodes)
			}
			return ctx
		}).
		Assess("StopNode and StartNode, by the name asked for", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			alias := &support.Node{Name: "extra-worker", Cluster: clusterName}
			if err := utils.PerformNodeLifecycleOperation(ctx, support.StopNode, alias); err != nil {
				t.Fatal(err)
			}
			// StartNode returns once the node is Ready with a fresh heartbeat
			if err := utils.PerformNodeLifecycleOperation(ctx, support.StartNode, alias); err != nil {
				t.Fatal(err)
			}
			return ctx
		}).
		Assess("ExportLogs: one file per role and node", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			dir := t.TempDir()
			p, _ := envfuncs.GetClusterFromContext(ctx, clusterName)
			if err := p.ExportLogs(ctx, dir); err != nil {
				t.Fatal(err)
			}
			for _, n := range []string{"datastore", "apiserver", "scheduler", "controllers", "tunnel-gateway", "node-1", node.Name} {
				fi, err := os.Stat(filepath.Join(dir, n+".log"))
				if err != nil {
					t.Error(err)
				} else if fi.Size() == 0 {
					t.Errorf("%s.log is empty", n)
				}
			}
			return ctx
		}).
		Assess("RemoveNode: container and Node object gone", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			if err := utils.PerformNodeLifecycleOperation(ctx, support.RemoveNode, node); err != nil {
				t.Fatal(err)
			}
			err := wait.For(conditions.New(cfg.Client().Resources()).ResourceDeleted(
				&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node.Name}}), wait.WithTimeout(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}
