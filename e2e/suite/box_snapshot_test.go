package suite

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubesplit/kubesplit/testcluster"
)

// boxSnapshot: on the box, `kubesplit snapshot save` takes a snapshot with
// the datastore's own image while the box runs, `list` shows it, and
// `restore` (the apiserver and datastore manifests parked, restored, put
// back) returns exactly its objects; afterwards the box's kubelet sees new
// pods (its watch was told to list again) and writes go on.
func boxSnapshot(t *testing.T, c *testcluster.Cluster) {
	ctx := context.Background()
	cs := c.Client()
	ks := func(args ...string) string {
		t.Helper()
		out, err := c.Exec(ctx, testcluster.Box, append([]string{"kubesplit", "snapshot"}, args...)...)
		if err != nil {
			t.Fatalf("kubesplit snapshot %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	cms := cs.CoreV1().ConfigMaps("default")
	mk := func(name string) {
		t.Helper()
		if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mk("box-snap-before")
	ks("save", "box.db")
	if out := ks("list"); !strings.Contains(out, "box.db") {
		t.Fatalf("snapshot list does not show box.db:\n%s", out)
	}
	mk("box-snap-after")
	start := time.Now()
	t.Log(ks("restore", "box.db"))
	t.Logf("restore on the box: %s", time.Since(start).Round(100*time.Millisecond))
	waitFor(t, "the API after restore", 2*time.Minute, func(ctx context.Context) (bool, error) {
		_, err := cms.Get(ctx, "box-snap-before", metav1.GetOptions{})
		return err == nil, err
	})
	if _, err := cms.Get(ctx, "box-snap-after", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("box-snap-after after restoring a snapshot taken before it: %v, want not found", err)
	}
	mk("box-snap-after-restore")
	var out string
	var err error
	for range 5 { // the scheduler and kubelet relist within moments
		if out, err = runPod(t, cs, "after-restore", testcluster.Box, "echo", "ran after restore"); err == nil {
			break
		}
		time.Sleep(3 * time.Second)
	}
	if err != nil || !strings.Contains(out, "ran after restore") {
		t.Fatalf("a pod on the box after restore: %q, %v", out, err)
	}
}
