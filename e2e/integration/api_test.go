package integration

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/e2e/hostcluster"
)

// TestAPI runs the same API scenario on every datastore backend.
func TestAPI(t *testing.T) {
	needLong(t)
	backends := map[string]string{"sqlite": "sqlite", "etcd": "etcd"}
	if dsn := os.Getenv("KUBESPLIT_TEST_POSTGRES_DSN"); dsn != "" {
		backends["postgres"] = dsn + "_" + randSuffix() + "?sslmode=disable" // a fresh database per run
	} else if os.Getenv("CI") != "" {
		t.Error("KUBESPLIT_TEST_POSTGRES_DSN is not set: `make test` starts PostgreSQL (hack/postgres.sh) and sets it")
	} else {
		t.Log("postgres backend not covered: KUBESPLIT_TEST_POSTGRES_DSN unset (make test sets it)")
	}
	if dsn := os.Getenv("KUBESPLIT_TEST_MYSQL_DSN"); dsn != "" {
		backends["mysql"] = dsn + "_" + randSuffix()
	} else if os.Getenv("CI") != "" {
		t.Error("KUBESPLIT_TEST_MYSQL_DSN is not set: `make test` starts MariaDB (hack/mysql.sh) and sets it")
	} else {
		t.Log("mysql backend not covered: KUBESPLIT_TEST_MYSQL_DSN unset (make test sets it)")
	}
	for name, backend := range backends {
		t.Run(name, func(t *testing.T) {
			c := hostcluster.Start(t, hostcluster.Options{Backend: backend})
			t.Run("crud", func(t *testing.T) { testCRUD(t, c) })
			t.Run("watch-order", func(t *testing.T) { testWatchOrder(t, c) })
			t.Run("deployment-pending", func(t *testing.T) { testDeploymentPending(t, c) })
			if name == "sqlite" {
				t.Run("stops-on-sigterm-with-watches-open", func(t *testing.T) { testGracefulStop(t, c) })
			}
		})
	}
}

func testCRUD(t *testing.T, c *hostcluster.Cluster) {
	ctx := context.Background()
	ns := newNamespace(t, c.Client)
	cms := c.Client.CoreV1().ConfigMaps(ns)
	created, err := cms.Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "crud", Labels: map[string]string{"app": "crud"}},
		Data:       map[string]string{"k": "v1"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	got, err := cms.Get(ctx, "crud", metav1.GetOptions{})
	if err != nil || got.Data["k"] != "v1" {
		t.Fatalf("get: %v %v", got.Data, err)
	}
	list, err := cms.List(ctx, metav1.ListOptions{LabelSelector: "app=crud"})
	if err != nil || len(list.Items) != 1 || list.Items[0].Name != "crud" {
		t.Fatalf("list: %v %v", list, err)
	}
	got.Data["k"] = "v2"
	updated, err := cms.Update(ctx, got, metav1.UpdateOptions{})
	if err != nil || updated.Data["k"] != "v2" {
		t.Fatalf("update: %v", err)
	}
	// An update carrying the first, now stale, resourceVersion must conflict.
	stale := created.DeepCopy()
	stale.Data["k"] = "lost"
	_, err = cms.Update(ctx, stale, metav1.UpdateOptions{})
	if !apierrors.IsConflict(err) {
		t.Fatalf("stale update: got %v, want 409 Conflict", err)
	}
	if got, _ := cms.Get(ctx, "crud", metav1.GetOptions{}); got.Data["k"] != "v2" {
		t.Fatalf("stale update changed the object: %v", got.Data)
	}
	if err := cms.Delete(ctx, "crud", metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := cms.Get(ctx, "crud", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("get after delete: got %v, want NotFound", err)
	}
}

func testWatchOrder(t *testing.T, c *hostcluster.Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := newNamespace(t, c.Client)
	cms := c.Client.CoreV1().ConfigMaps(ns)
	w, err := cms.Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	type ev struct {
		typ  watch.EventType
		name string
		val  string
	}
	var want []ev
	for i := range 5 {
		name := fmt.Sprintf("w%d", i)
		cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"v": "0"}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, ev{watch.Added, name, "0"})
		cm.Data["v"] = "1"
		if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		want = append(want, ev{watch.Modified, name, "1"})
		if i%2 == 0 {
			if err := cms.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			want = append(want, ev{watch.Deleted, name, "1"})
		}
	}
	for i, wv := range want {
		select {
		case e, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("watch closed after %d of %d events", i, len(want))
			}
			cm, isCM := e.Object.(*corev1.ConfigMap)
			if !isCM {
				t.Fatalf("event %d: %v %T", i, e.Type, e.Object)
			}
			gotEv := ev{e.Type, cm.Name, cm.Data["v"]}
			if gotEv != wv {
				t.Fatalf("event %d: got %+v, want %+v", i, gotEv, wv)
			}
		case <-ctx.Done():
			t.Fatalf("timed out after %d of %d events", i, len(want))
		}
	}
}

func testDeploymentPending(t *testing.T, c *hostcluster.Cluster) {
	ctx := context.Background()
	ns := newNamespace(t, c.Client)
	labels := map[string]string{"app": "web"}
	_, err := c.Client.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](3),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "kubesplit/pause:test"}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, "a ReplicaSet owned by the Deployment", func(ctx context.Context) (bool, error) {
		rss, err := c.Client.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil || len(rss.Items) != 1 {
			return false, err
		}
		owners := rss.Items[0].OwnerReferences
		return len(owners) == 1 && owners[0].Kind == "Deployment" && owners[0].Name == "web", nil
	})
	// With no nodes the scheduler must have looked at every pod and marked it unschedulable.
	waitFor(t, 90*time.Second, "3 Pending pods marked Unschedulable by the scheduler", func(ctx context.Context) (bool, error) {
		pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil || len(pods.Items) != 3 {
			return false, err
		}
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodPending {
				return false, fmt.Errorf("pod %s is %s with no nodes", p.Name, p.Status.Phase)
			}
			unschedulable := false
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodScheduled && cond.Status == corev1.ConditionFalse && cond.Reason == corev1.PodReasonUnschedulable {
					unschedulable = true
				}
			}
			if !unschedulable {
				return false, nil
			}
		}
		return true, nil
	})
}

// testGracefulStop: SIGTERM stops the apiserver by itself, open watches
// included (they end, and their clients watch again), well inside the
// grace period of every wiring (30 s in Kubernetes, 10 s in Docker), not by
// the SIGKILL that follows it; started again, it serves as before.
func testGracefulStop(t *testing.T, c *hostcluster.Cluster) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := newNamespace(t, c.Client)
	// (a selector nothing matches: no event but the watch's end is expected)
	w, err := c.Client.CoreV1().ConfigMaps(ns).Watch(ctx, metav1.ListOptions{LabelSelector: "matches=nothing"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	p := c.Proc("apiserver")
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	select {
	case <-p.Done():
		t.Logf("the apiserver exited %v after SIGTERM", time.Since(start).Round(10*time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Errorf("the apiserver still runs 10 s after SIGTERM with a watch open")
		_ = p.Kill()
		<-p.Done()
	}
	if err := p.Err(); err != nil {
		t.Errorf("the apiserver's exit after SIGTERM: %v", err)
	}
	// (the server may say why it ends the watch: an Error event, then the end)
	for ended := false; !ended; {
		select {
		case ev, open := <-w.ResultChan():
			if ended = !open; open && ev.Type != watch.Error {
				t.Errorf("the watch delivered a %s event instead of ending", ev.Type)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the watch stayed open after the apiserver stopped")
		}
	}
	c.Restart("apiserver")
	if _, err := c.Client.CoreV1().ConfigMaps(ns).Create(context.Background(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "after-restart"}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("a write after the restart: %v", err)
	}
}
