package suite

import (
	"context"
	"fmt"
	"maps"
	"os/exec"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubesplit/kubesplit/testcluster"
)

// boxUpgrade: `kubesplit upgrade` on the box moves each role in turn to
// another image while a Deployment runs: the API answers after each step,
// every earlier write is there, the pods are the same containers. An
// upgrade the skew policy forbids is refused and changes nothing; an image
// that cannot start is rolled back by itself.
func boxUpgrade(t *testing.T, c *testcluster.Cluster) {
	ctx := context.Background()
	cs := c.Client()
	deployWeb(t, cs, 2, 300)
	defer func() {
		_ = cs.AppsV1().Deployments("default").Delete(ctx, "web", metav1.DeleteOptions{})
		_ = cs.CoreV1().Services("default").Delete(ctx, "web", metav1.DeleteOptions{})
	}()
	before := webPods(t, cs)
	ks := func(args ...string) (string, error) {
		return c.Exec(ctx, testcluster.Box, append([]string{"kubesplit"}, args...)...)
	}
	manifest := func(role string) string {
		t.Helper()
		out, err := c.Exec(ctx, testcluster.Box, "cat", "/var/lib/kubesplit-node/manifests/"+role+".yaml")
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	build := func(role, to, dockerfileTail string) {
		t.Helper()
		from := "kubesplit/" + role + ":" + tag()
		docker(t, fmt.Sprintf("FROM %s\n%s\n", from, dockerfileTail), "build", "-q", "-t", to, "-")
		t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", to).Run() })
	}

	// refused by the skew policy: a scheduler that says it is v1.37
	skewed := "kubesplit-e2e/scheduler:skewed"
	build("scheduler", skewed, "LABEL io.kubesplit.kubernetes-version=v1.37.0")
	// cannot start: a flag the scheduler does not know
	broken := "kubesplit-e2e/scheduler:broken"
	build("scheduler", broken, `ENTRYPOINT ["/usr/local/bin/scheduler", "--no-such-flag"]`)
	var next []string
	for _, role := range testcluster.Roles() {
		to := "kubesplit-e2e/" + role + ":box-upgrade"
		build(role, to, "LABEL io.kubesplit.e2e.upgraded=true")
		next = append(next, to)
	}
	if err := c.LoadImages(ctx, append(next, skewed, broken)...); err != nil {
		t.Fatal(err)
	}

	was := manifest("scheduler")
	out, err := ks("upgrade", "scheduler", "--image", skewed)
	if err == nil || !strings.Contains(out, "v1.37.0 is newer than apiserver v1.36.3") || !strings.Contains(out, "nothing was changed") {
		t.Errorf("a scheduler newer than the apiserver: want a refusal, got %v: %s", err, out)
	}
	if manifest("scheduler") != was {
		t.Errorf("a refused upgrade changed the manifest")
	}
	out, err = ks("upgrade", "scheduler", "--image", next[2], "--dry-run")
	if err != nil || !strings.Contains(out, "-    image: kubesplit/scheduler:"+tag()) || !strings.Contains(out, "+    image: "+next[2]) {
		t.Errorf("--dry-run: want the image line's diff, got %v: %s", err, out)
	}
	if manifest("scheduler") != was {
		t.Errorf("--dry-run changed the manifest")
	}

	// datastore, apiserver, scheduler, controllers, gateway: each on its own
	for i, role := range testcluster.Roles() {
		writeConfigMaps(t, cs, "box-before-"+role, 3)
		start := time.Now()
		out, err := ks("upgrade", role, "--image", next[i], "--timeout", "3m")
		if err != nil {
			t.Fatalf("kubesplit upgrade %s: %v\n%s", role, err, out)
		}
		t.Logf("upgrade %s took %s:\n%s", role, time.Since(start).Round(100*time.Millisecond), out)
		if (role == testcluster.Datastore || role == testcluster.APIServer) && !strings.Contains(out, "datastore snapshot: /var/lib/kubesplit/snapshots/") {
			t.Errorf("no datastore snapshot before the %s upgrade:\n%s", role, out)
		}
		// the datastore is swapped with the apiserver stopped (no API call hangs on it)
		if role == testcluster.Datastore && !strings.Contains(out, "apiserver healthy again") {
			t.Errorf("the datastore upgrade did not stop and start the apiserver:\n%s", out)
		}
		waitFor(t, "the API after upgrading "+role, 2*time.Minute, func(ctx context.Context) (bool, error) {
			_, err := cs.Discovery().ServerVersion()
			return err == nil, err
		})
		waitFor(t, "mirror pod of "+role+" on "+next[i], 2*time.Minute, func(ctx context.Context) (bool, error) {
			p, err := cs.CoreV1().Pods(metav1.NamespaceSystem).Get(ctx, testcluster.MirrorPod(role), metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			return p.Spec.Containers[0].Image == next[i], fmt.Errorf("image %s", p.Spec.Containers[0].Image)
		})
		for _, r := range testcluster.Roles()[:i+1] {
			if n := countConfigMaps(t, cs, "box-before-"+r); n != 3 {
				t.Fatalf("after upgrading %s: %d of 3 writes made before upgrading %s", role, n, r)
			}
		}
		if now := webPods(t, cs); !maps.Equal(now, before) {
			t.Fatalf("after upgrading %s the web pods changed:\nbefore %v\nnow    %v", role, before, now)
		}
	}

	// an image that cannot start: rolled back, the scheduler healthy on its image
	out, err = ks("upgrade", "scheduler", "--image", broken, "--timeout", "30s")
	if err == nil || !strings.Contains(out, "the previous manifest is back") || !strings.Contains(out, "healthy again") {
		t.Errorf("a scheduler that cannot start: want a rollback, got %v:\n%s", err, out)
	}
	if !strings.Contains(manifest("scheduler"), "image: "+next[2]) {
		t.Errorf("after the rollback the manifest is:\n%s", manifest("scheduler"))
	}
	out, err = ks("status")
	if err != nil {
		t.Fatalf("kubesplit status: %v\n%s", err, out)
	}
	t.Logf("kubesplit status on the box:\n%s", out)
	for _, role := range testcluster.Roles() {
		if !strings.Contains(out, role) || strings.Count(out, " ready ") < len(testcluster.Roles()) {
			t.Errorf("kubesplit status: want every role ready:\n%s", out)
			break
		}
	}
}
