package suite

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubesplit/kubesplit/roles"
	"github.com/kubesplit/kubesplit/testcluster"
)

// hostedNamespace holds the hosted control plane the scenario installs.
const hostedNamespace = "hosted"

// hostedControlPlane: the Helm chart (deploy/helm) installs a kubesplit
// control plane on this cluster, the host, with the real helm CLI: the init
// Job keeps its PKI in a Secret, ServiceLB gives the gateway's public
// Service an address, and a node container outside the host cluster joins
// the hosted control plane through that address with the token from the
// Secret. On it a Deployment is served by DNS name, and logs and exec go
// through the hosted gateway's tunnel. Then the release is uninstalled
// and installed again: the kept Secret and PVC bring the same cluster back
// (same CA, same objects).
func hostedControlPlane(t *testing.T, c *testcluster.Cluster) {
	ctx := context.Background()
	helm := helmCLI(t)
	var images []string
	for _, r := range append(roles.Names(), "kubesplit") {
		images = append(images, "kubesplit/"+r+":"+tag())
	}
	if err := c.LoadImages(ctx, images...); err != nil {
		t.Fatal(err)
	}
	hostKC := filepath.Join(t.TempDir(), "host.kubeconfig")
	if err := c.WriteKubeconfig(hostKC); err != nil {
		t.Fatal(err)
	}
	host := c.Client()
	install := func() {
		t.Helper()
		start := time.Now()
		helmRun(t, helm, "install", "hosted", "../../deploy/helm", "--kubeconfig", hostKC, "-n", hostedNamespace,
			"--create-namespace", "--set", "image.tag="+tag(), "--wait", "--timeout", "6m")
		t.Logf("helm install --wait: %.1fs", time.Since(start).Seconds())
	}
	install()
	t.Cleanup(func() {
		helmRun(t, helm, "uninstall", "hosted", "--kubeconfig", hostKC, "-n", hostedNamespace, "--wait")
		_ = host.CoreV1().Namespaces().Delete(context.Background(), hostedNamespace, metav1.DeleteOptions{})
	})

	sec, err := host.CoreV1().Secrets(hostedNamespace).Get(ctx, "kubesplit-pki", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	addr, token, admin := string(sec.Data["config__public-address"]), string(sec.Data["config__node-token"]), sec.Data["admin.kubeconfig"]
	if net.ParseIP(addr) == nil || token == "" || len(admin) == 0 {
		t.Fatalf("Secret kubesplit-pki: public address %q, token set %v, admin kubeconfig %d bytes", addr, token != "", len(admin))
	}
	// the public address is the gateway Service's ServiceLB address: a host node's
	gw, err := host.CoreV1().Services(hostedNamespace).Get(ctx, "tunnel-gateway-public", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(gw.Status.LoadBalancer.Ingress, func(in corev1.LoadBalancerIngress) bool { return in.IP == addr }) {
		t.Fatalf("public address %s is not among the gateway Service's %v", addr, gw.Status.LoadBalancer.Ingress)
	}
	adminKC := filepath.Join(t.TempDir(), "admin.kubeconfig")
	if err := os.WriteFile(adminKC, admin, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(admin)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://"+net.JoinHostPort(addr, "6443") {
		t.Errorf("admin kubeconfig server %s, want the public address", cfg.Host)
	}
	hosted, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}

	node, err := c.JoinNode(ctx, "https://"+net.JoinHostPort(addr, "8132"), token)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.RemoveNode(context.Background(), node) })
	waitFor(t, "node "+node+" Ready in the hosted cluster", 3*time.Minute, func(ctx context.Context) (bool, error) {
		n, err := hosted.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				return cond.Status == corev1.ConditionTrue, fmt.Errorf("Ready %s: %s", cond.Status, cond.Message)
			}
		}
		return false, fmt.Errorf("no Ready condition")
	})
	// the node is the hosted cluster's, not the host's
	if _, err := host.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err == nil {
		t.Fatalf("node %s registered with the host cluster", node)
	}
	waitFor(t, "CoreDNS in the hosted cluster", 3*time.Minute, func(ctx context.Context) (bool, error) {
		d, err := hosted.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return d.Status.AvailableReplicas > 0, fmt.Errorf("%d available", d.Status.AvailableReplicas)
	})
	deployWeb(t, hosted, 1, 30)
	if got := fetchWeb(t, hosted, "hosted-client", node); !strings.HasPrefix(got, "web-") {
		t.Fatalf("web by DNS name in the hosted cluster: %q", got)
	}
	// logs and exec: the hosted apiserver reaches the node's kubelet only
	// through the hosted gateway's tunnel
	pods := webPods(t, hosted)
	var web string
	for name := range pods {
		web = name
	}
	if out, ok := kubectlWith(t, adminKC, "exec", web, "--", "/testapp", "echo", "hosted-exec"); ok && !strings.Contains(out, "hosted-exec") {
		t.Errorf("kubectl exec in the hosted cluster: %q", out)
	}
	if out, ok := kubectlWith(t, adminKC, "logs", web); ok && out == "" {
		t.Errorf("kubectl logs in the hosted cluster: empty")
	}

	// uninstall keeps the Secret and the datastore's PVC; a new install is the same cluster
	caBefore := string(sec.Data["pki__ca.crt"])
	helmRun(t, helm, "uninstall", "hosted", "--kubeconfig", hostKC, "-n", hostedNamespace, "--wait")
	if _, err := host.CoreV1().Secrets(hostedNamespace).Get(ctx, "kubesplit-pki", metav1.GetOptions{}); err != nil {
		t.Fatalf("helm uninstall removed the PKI Secret: %v", err)
	}
	install()
	again, err := host.CoreV1().Secrets(hostedNamespace).Get(ctx, "kubesplit-pki", metav1.GetOptions{})
	if err != nil || string(again.Data["pki__ca.crt"]) != caBefore {
		t.Fatalf("reinstall changed the cluster CA (%v)", err)
	}
	waitFor(t, "the web Deployment back in the reinstalled control plane", 2*time.Minute, func(ctx context.Context) (bool, error) {
		d, err := hosted.AppsV1().Deployments("default").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return d.Status.ReadyReplicas == 1, fmt.Errorf("%d ready", d.Status.ReadyReplicas)
	})
}

// helmCLI is bin/helm, which hack/helm.sh builds from the Helm module the
// controllers link (hack/test.sh suite runs it first).
func helmCLI(t *testing.T) string {
	t.Helper()
	bin, err := filepath.Abs("../../bin/helm")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("no bin/helm: run hack/helm.sh first (%v)", err)
	}
	return bin
}

func helmRun(t *testing.T, helm string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, helm, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
