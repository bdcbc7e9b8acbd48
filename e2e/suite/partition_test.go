package suite

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubesplit/kubesplit/testcluster"
)

// TestPartitionedNodeIsReplacedAndRejoins cuts a node off the gateway: it
// goes NotReady, gets the unreachable taint, its pods are replaced on the
// other node once their toleration runs out, and after healing it rejoins
// by itself (Ready, untainted, runs pods and serves logs through its tunnel
// again) with no manual step.
func TestPartitionedNodeIsReplacedAndRejoins(t *testing.T) {
	c := run(t, testcluster.WithNodes(2))
	ctx := context.Background()
	cs := c.Client()
	deployWeb(t, cs, 2, 2)
	var victim string
	for _, p := range webPods(t, cs) {
		victim = p.node
	}
	survivor := c.Nodes()[0]
	if survivor == victim {
		survivor = c.Nodes()[1]
	}

	cut := time.Now()
	if err := c.Partition(ctx, victim); err != nil {
		t.Fatal(err)
	}
	waitFor(t, victim+" NotReady", 2*time.Minute, func(ctx context.Context) (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, victim, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return readyStatus(n) != corev1.ConditionTrue && hasTaint(n, corev1.TaintNodeUnreachable), nil
	})
	t.Logf("%s NotReady and tainted unreachable %.0fs after the cut", victim, time.Since(cut).Seconds())
	waitFor(t, "web pods replaced on "+survivor, 2*time.Minute, func(ctx context.Context) (bool, error) {
		pods := webPods(t, cs)
		ready := 0
		for _, p := range pods {
			if p.node == victim {
				return false, fmt.Errorf("a live web pod is still on %s", victim)
			}
			ready++
		}
		return ready == 2, fmt.Errorf("%d web pods", ready)
	})
	waitWebReady(t, cs, 2)
	t.Logf("web pods replaced %.0fs after the cut", time.Since(cut).Seconds())

	healed := time.Now()
	if err := c.Heal(ctx, victim); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitNodeReady(ctx, victim, healed); err != nil {
		t.Fatal(err)
	}
	waitFor(t, victim+" untainted", time.Minute, func(ctx context.Context) (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, victim, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return !hasTaint(n, corev1.TaintNodeUnreachable) && !hasTaint(n, corev1.TaintNodeNotReady), errors.New("still tainted")
	})
	// the evicted pods' deletion completes once their kubelet hears of it
	waitFor(t, "the evicted pods gone from "+victim, time.Minute, func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web", FieldSelector: "spec.nodeName=" + victim})
		if err != nil {
			return false, err
		}
		return len(pods.Items) == 0, fmt.Errorf("%d pods left", len(pods.Items))
	})
	t.Logf("%s Ready again %.1fs after healing", victim, time.Since(healed).Seconds())
	// it runs pods again, and their logs come through its new tunnel
	out, err := runPod(t, cs, "after-heal", victim, "echo", "back", "again")
	if err != nil || !strings.Contains(out, "back again") {
		t.Fatalf("pod on the healed node: %q %v", out, err)
	}
	if !slices.Contains(c.Nodes(), victim) {
		t.Fatal("the healed node is no longer a member")
	}
}

func readyStatus(n *corev1.Node) corev1.ConditionStatus {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status
		}
	}
	return corev1.ConditionUnknown
}

func hasTaint(n *corev1.Node, key string) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == key {
			return true
		}
	}
	return false
}
