package suite

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"k8s.io/client-go/kubernetes"

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

	hooked := hookOnNode(t, cs, victim)

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
	// the webhook's only pod is on the cut-off node: each webhook fails the way its failurePolicy says
	waitFor(t, "the Fail webhook to refuse", time.Minute, func(ctx context.Context) (bool, error) {
		_, err := hooked("fail", "cut")
		return err != nil, errors.New("still admitted")
	})
	if labels, err := hooked("ignore", "cut"); err != nil || labels["e2e-mutated"] != "" {
		t.Fatalf("the Ignore webhook with its pod cut off: %v %v", labels, err)
	}
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
	waitFor(t, "the webhook back after healing", time.Minute, func(ctx context.Context) (bool, error) {
		labels, err := hooked("fail", "healed")
		return err == nil && labels["e2e-mutated"] == "true", err
	})
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

// hookOnNode runs the e2e mutating webhook with one pod, on node, which
// stays there when the node is cut off; it registers it twice, with
// failurePolicy Fail for namespace e2e-part-fail and Ignore for
// e2e-part-ignore. The function returned creates a ConfigMap in one of them
// ("fail" or "ignore") and returns its labels.
func hookOnNode(t *testing.T, cs kubernetes.Interface, node string) func(policy, name string) (map[string]string, error) {
	t.Helper()
	ctx := context.Background()
	caPEM, mount := hookTLS(t, cs)
	stay := int64(3600)
	pods := onePodPerNode(t, cs, hooksNS, "hooks", hookCommand, 8443, func(s *corev1.PodSpec) {
		mount(s)
		s.NodeSelector = map[string]string{corev1.LabelHostname: node}
		s.Tolerations = []corev1.Toleration{
			{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &stay},
			{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &stay}}
	}, 1)
	if _, ok := pods[node]; !ok {
		t.Fatalf("the webhook pod is not on %s: %v", node, pods)
	}
	for _, p := range []admissionv1.FailurePolicyType{admissionv1.Fail, admissionv1.Ignore} {
		sel := strings.ToLower(string(p))
		if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mutatingHook("e2e-part-"+sel, "part-"+sel, caPEM, p), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "e2e-part-" + sel,
			Labels: map[string]string{"e2e-webhooks": "part-" + sel}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	create := func(policy, name string) (map[string]string, error) {
		n++
		cm, err := cs.CoreV1().ConfigMaps("e2e-part-"+policy).Create(context.Background(),
			&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", name, n)}}, metav1.CreateOptions{})
		if err != nil {
			return nil, err
		}
		return cm.Labels, nil
	}
	waitFor(t, "both webhooks acting", time.Minute, func(ctx context.Context) (bool, error) {
		a, err1 := create("fail", "before")
		b, err2 := create("ignore", "before")
		return err1 == nil && err2 == nil && a["e2e-mutated"] == "true" && b["e2e-mutated"] == "true", errors.Join(err1, err2)
	})
	return create
}
