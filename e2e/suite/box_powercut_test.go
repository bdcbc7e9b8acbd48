package suite

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/testcluster"
)

// boxPowerCut: SIGKILL of the box's container (every process at once,
// nothing flushed or handed back) while a writer creates ConfigMaps; after
// it starts again every acknowledged write is there, the roles are healthy,
// the box is Ready and the pods run again.
func boxPowerCut(t *testing.T, c *testcluster.Cluster) {
	ctx := context.Background()
	cs := c.Client()
	labels := map[string]string{"app": "cut"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "cut"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				TerminationGracePeriodSeconds: ptr.To[int64](1),
				TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: corev1.LabelHostname,
					WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: &metav1.LabelSelector{MatchLabels: labels}}},
				Containers: []corev1.Container{{Name: "c", Image: testapp(), ImagePullPolicy: corev1.PullNever,
					Command: []string{"/testapp", "serve", ":8080"}}}}}},
	}
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cs.AppsV1().Deployments("default").Delete(ctx, "cut", metav1.DeleteOptions{}) }()
	cutReady := func(what string) {
		waitFor(t, "deployment cut ready "+what, 4*time.Minute, func(ctx context.Context) (bool, error) {
			d, err := cs.AppsV1().Deployments("default").Get(ctx, "cut", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			return d.Status.ReadyReplicas == 2 && d.Status.ObservedGeneration == d.Generation, fmt.Errorf("%d ready", d.Status.ReadyReplicas)
		})
	}
	cutReady("before the cut")

	// the writer: every Create that returned is an acknowledged write
	var mu sync.Mutex
	var acked []string
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name := fmt.Sprintf("cut-%d", i)
			wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			_, err := cs.CoreV1().ConfigMaps("default").Create(wctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name,
				Labels: map[string]string{"e2e": "cut"}}}, metav1.CreateOptions{})
			cancel()
			if err == nil {
				mu.Lock()
				acked = append(acked, name)
				mu.Unlock()
			}
		}
	}()
	time.Sleep(3 * time.Second)
	if err := c.Kill(ctx, testcluster.Box); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	close(stop)
	<-done
	mu.Lock()
	n := len(acked)
	mu.Unlock()
	if n == 0 {
		t.Fatal("the writer got no write acknowledged before the cut")
	}
	start := time.Now()
	if err := c.Start(ctx, testcluster.Box); err != nil {
		t.Fatalf("the box after the power cut: %v", err)
	}
	t.Logf("box Ready again %s after its start; %d writes acknowledged before the cut", time.Since(start).Round(time.Second), n)
	for _, name := range acked {
		if _, err := cs.CoreV1().ConfigMaps("default").Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Errorf("acknowledged write %s lost: %v", name, err)
		}
	}
	for _, r := range testcluster.Roles() {
		waitPodReady(t, cs, metav1.NamespaceSystem, testcluster.MirrorPod(r))
	}
	cutReady("after the cut")
	t.Logf("control plane and workloads back %s after the box started", time.Since(start).Round(time.Second))
}
