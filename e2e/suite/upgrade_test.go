package suite

import (
	"context"
	"fmt"
	"maps"
	"os/exec"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubesplit/kubesplit/testcluster"
)

// TestUpgradeOneRoleAtATime replaces each role's container with another
// image (a newer build of the same role: the role image plus a layer, under
// another tag), one role at a time, in the order an operator upgrades
// (scheduler, controllers, apiserver, gateway, datastore), while a
// Deployment runs: its pods never restart, the API answers after every
// step, acknowledged writes are all there, and the upgraded control plane
// still schedules, serves and tunnels.
func TestUpgradeOneRoleAtATime(t *testing.T) {
	c := run(t, testcluster.WithNodes(2))
	ctx := context.Background()
	cs := c.Client()
	deployWeb(t, cs, 2, 300)
	before := webPods(t, cs)
	// a webhook (failurePolicy Fail) served from the nodes stays in the
	// path of ConfigMap creates in e2e-upgrade through every upgrade
	caPEM, mount := hookTLS(t, cs)
	onePodPerNode(t, cs, hooksNS, "hooks", hookCommand, 8443, mount)
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mutatingHook("e2e-upgrade", "upgrade", caPEM, admissionv1.Fail), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "e2e-upgrade",
		Labels: map[string]string{"e2e-webhooks": "upgrade"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	hooked := 0
	webhookActs := func(after string) {
		t.Helper()
		waitFor(t, "the webhook acting after "+after, time.Minute, func(ctx context.Context) (bool, error) {
			hooked++
			cm, err := cs.CoreV1().ConfigMaps("e2e-upgrade").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("hooked-%d", hooked)}}, metav1.CreateOptions{})
			if err != nil {
				return false, err
			}
			return cm.Labels["e2e-mutated"] == "true", fmt.Errorf("labels %v", cm.Labels)
		})
	}
	webhookActs("start")

	order := []string{testcluster.Scheduler, testcluster.Controllers, testcluster.APIServer, testcluster.TunnelGateway, testcluster.Datastore}
	for i, role := range order {
		from := "kubesplit/" + role + ":" + tag()
		to := "kubesplit-e2e/" + role + ":upgrade"
		docker(t, fmt.Sprintf("FROM %s\nLABEL io.kubesplit.e2e.upgraded-from=%q\n", from, from), "build", "-q", "-t", to, "-")
		t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", to).Run() })

		writeConfigMaps(t, cs, fmt.Sprintf("before-%s", role), 3)
		if err := c.UpgradeRole(ctx, role, to); err != nil {
			t.Fatalf("upgrading %s: %v", role, err)
		}
		in, err := c.Container(role).Inspect(ctx)
		if err != nil || in.Config.Image != to {
			t.Fatalf("%s runs %v after the upgrade, want %s (%v)", role, in.Config.Image, to, err)
		}
		// the API answers, nothing acknowledged is lost, pods are untouched
		for _, r := range order[:i+1] {
			if n := countConfigMaps(t, cs, "before-"+r); n != 3 {
				t.Fatalf("after upgrading %s: %d of 3 writes made before upgrading %s", role, n, r)
			}
		}
		if now := webPods(t, cs); !maps.Equal(now, before) {
			t.Fatalf("after upgrading %s the web pods changed:\nbefore %v\nnow    %v", role, before, now)
		}
		webhookActs("upgrading " + role)
	}
	for name, p := range before {
		if p.restarts != 0 {
			t.Errorf("pod %s restarted %d times", name, p.restarts)
		}
	}

	// the upgraded control plane still works: a new replica is scheduled and
	// started (scheduler, controllers), the Service serves by DNS name, and
	// logs come through the upgraded gateway
	scale, err := cs.AppsV1().Deployments("default").GetScale(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	scale.Spec.Replicas = 3
	if _, err := cs.AppsV1().Deployments("default").UpdateScale(ctx, "web", scale, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitWebReady(t, cs, 3)
	fetchWeb(t, cs, "after-upgrade", c.Nodes()[1])
}
