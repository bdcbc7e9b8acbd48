package suite

import (
	"context"
	"fmt"
	"maps"
	"os/exec"
	"testing"

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
