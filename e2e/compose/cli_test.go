package compose

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// kubesplit runs the CLI the way a user on this machine does.
func (c *cluster) kubesplit(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.root, "bin", "kubesplit"), args...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (c *cluster) mustKubesplit(t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.kubesplit(args...)
	if err != nil {
		t.Fatalf("kubesplit %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// userKubeconfig: `kubesplit kubeconfig` gives the admin's kubeconfig for
// the host; with --user and --group, one whose certificate the cluster
// signed, which RBAC treats as that user in that group.
func userKubeconfig(t *testing.T, c *cluster) {
	dir := t.TempDir()
	admin := filepath.Join(dir, "admin.kubeconfig")
	c.mustKubesplit(t, "kubeconfig", "--cluster", project, "-o", admin)
	as := func(kubeconfig string, args ...string) (string, error) {
		out, err := exec.Command(filepath.Join(c.root, "bin", "kubectl"), append([]string{"--kubeconfig", kubeconfig}, args...)...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := as(admin, "get", "nodes", "-o", "name"); err != nil || strings.Count(out, "node/") != 2 {
		t.Fatalf("kubectl get nodes with the admin kubeconfig: %v\n%s", err, out)
	}
	if out, _ := as(admin, "config", "view", "-o", "jsonpath={.clusters[0].cluster.server}"); out != "https://127.0.0.1:"+apiPort {
		t.Errorf("admin kubeconfig server %q, want the published port %s", out, apiPort)
	}

	if out, err := c.kubectl("create", "clusterrolebinding", "e2e-viewers", "--clusterrole", "view", "--group", "viewers"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = c.kubectl("delete", "clusterrolebinding", "e2e-viewers") })
	dev := filepath.Join(dir, "dev.kubeconfig")
	c.mustKubesplit(t, "kubeconfig", "--cluster", project, "--user", "dev", "--group", "viewers", "--validity", "24h", "-o", dev)
	who, err := as(dev, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}")
	if err != nil || !strings.HasPrefix(who, "dev ") || !strings.Contains(who, `"viewers"`) {
		t.Fatalf("kubectl auth whoami as dev: %q, %v; want user dev in group viewers", who, err)
	}
	if out, err := as(dev, "get", "pods", "-A", "-o", "name"); err != nil || !strings.Contains(out, "pod/") {
		t.Errorf("dev (group viewers, bound to view) cannot list pods: %v\n%s", err, out)
	}
	if out, err := as(dev, "create", "configmap", "by-dev"); err == nil || !strings.Contains(out, `User "dev" cannot create`) {
		t.Errorf("dev created a ConfigMap, or was refused for another reason: %v\n%s", err, out)
	}
	if out, _ := c.kubectl("get", "csr", "-o", "name"); strings.Contains(out, "kubesplit-kubeconfig-") {
		t.Errorf("the signing request was left behind: %s", out)
	}
}

// snapshotRoundTrip: a snapshot saved on the running cluster is restored
// (by name, then from the copy on the host) to exactly its state, and the
// cluster goes on working: nodes Ready, a new pod scheduled and served.
func snapshotRoundTrip(t *testing.T, c *cluster, nodes []string) {
	ctx := context.Background()
	cms := c.client.CoreV1().ConfigMaps("default")
	mk := func(name string) {
		t.Helper()
		if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	exists := func(name string) bool {
		t.Helper()
		var err error
		for range 30 { // the apiserver may still be coming back
			if _, err = cms.Get(ctx, name, metav1.GetOptions{}); err == nil || apierrors.IsNotFound(err) {
				return err == nil
			}
			time.Sleep(2 * time.Second)
		}
		t.Fatalf("reading ConfigMap %s: %v", name, err)
		return false
	}
	mk("snap-before")
	copyOnHost := filepath.Join(t.TempDir(), "e2e.db")
	c.mustKubesplit(t, "snapshot", "save", "--cluster", project, "e2e.db", "--output", copyOnHost)
	if out := c.mustKubesplit(t, "snapshot", "list", "--cluster", project); !strings.Contains(out, "e2e.db") {
		t.Fatalf("snapshot list does not show e2e.db:\n%s", out)
	}
	if out, err := c.kubesplit("snapshot", "save", "--cluster", project, "e2e.db"); err == nil || !strings.Contains(out, "already exists") {
		t.Errorf("a second save under the same name: %v\n%s", err, out)
	}
	mk("snap-after-1")
	start := time.Now()
	t.Log(c.mustKubesplit(t, "snapshot", "restore", "--cluster", project, "e2e.db"))
	t.Logf("restore by name: %s", time.Since(start).Round(100*time.Millisecond))
	if !exists("snap-before") || exists("snap-after-1") {
		t.Fatal("after restore: want snap-before and not snap-after-1")
	}
	mk("snap-after-2")
	t.Log(c.mustKubesplit(t, "snapshot", "restore", "--cluster", project, copyOnHost))
	if !exists("snap-before") || exists("snap-after-2") {
		t.Fatal("after restore from the host's copy: want snap-before and not snap-after-2")
	}
	// writes go on, and the kubelets and controllers saw the restore (their
	// watches were told to list again): nodes Ready, a new pod runs and the
	// web Service answers it
	mk("snap-after-restore")
	waitFor(t, "nodes Ready after restore", 2*time.Minute, func(ctx context.Context) (bool, error) {
		list, err := c.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		ready := 0
		for _, n := range list.Items {
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		return ready == len(nodes), nil
	})
	serveThroughService(t, c, "client-after-restore", nodes[0])
}
