package suite

import (
	"context"
	"strings"
	"testing"

	"github.com/kubesplit/kubesplit/testcluster"
)

// TestVersionSkewGuard starts roles that claim versions the skew policy
// forbids against the cluster's v1.36 apiserver: each refuses to run with
// a message naming both versions, and the cluster is unharmed.
func TestVersionSkewGuard(t *testing.T) {
	c := run(t, testcluster.WithoutDNSWait())
	ctx := context.Background()
	image := "kubesplit/scheduler:" + tag()

	err := c.UpgradeRole(ctx, testcluster.Scheduler, image, "--fake-kubernetes-version=v1.37.0")
	if err == nil || !strings.Contains(err.Error(), "v1.37.0") || !strings.Contains(err.Error(), "v1.36.3") {
		t.Fatalf("a scheduler newer than the apiserver: want a refusal naming v1.37.0 and v1.36.3, got %v", err)
	}
	t.Logf("refused: %v", firstLine(err))
	if err := c.UpgradeRole(ctx, testcluster.Scheduler, image); err != nil {
		t.Fatalf("the scheduler back at the cluster's version: %v", err)
	}

	for _, v := range []string{"v1.32.0", "v1.37.0"} {
		name, err := c.AddNode(ctx, "--fake-kubernetes-version="+v)
		if err == nil || !strings.Contains(err.Error(), v) || !strings.Contains(err.Error(), "v1.36.3") {
			t.Fatalf("a kubelet %s: want a refusal naming %s and v1.36.3, got %v", v, v, err)
		}
		t.Logf("kubelet %s refused: %v", v, firstLine(err))
		if err := c.RemoveNode(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	// kubelets up to three minors older are allowed
	if _, err := c.AddNode(ctx, "--fake-kubernetes-version=v1.33.0"); err != nil {
		t.Fatalf("a kubelet three minors older: %v", err)
	}
}

// firstLine is the refusal itself, without the log tail.
func firstLine(err error) string {
	s := err.Error()
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, "v1.36.3") {
			return strings.TrimSpace(l)
		}
	}
	return s
}
