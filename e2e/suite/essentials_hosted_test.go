package suite

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/e2e/suite/internal/hosted"
	"github.com/kubesplit/kubesplit/testcluster"
)

// hostedControlPlane: the Helm chart (deploy/helm) installs kubesplit
// control planes on this cluster, the host, with the real helm CLI, once
// per datastore mode, all three at once (each release has public ports or
// an SNI name of its own, as tenants sharing a host would). Each time the init Job keeps the PKI in a Secret,
// ServiceLB gives the gateway's public Service an address, and a node
// container outside the host cluster joins the hosted control plane through
// that address with the token from the Secret; on it a Deployment is served
// by DNS name, and logs and exec go through the hosted gateway's tunnel.
//
//   - sqlite: `helm upgrade` of one role changes that role's Deployment
//     alone and keeps the workload's containers; uninstall and install
//     again bring the same cluster back (kept Secret and PVC).
//   - etcd (3 members): one member's pod and one apiserver's pod are
//     deleted under a writer: no acknowledged write is lost and the API
//     keeps answering.
//   - external: PostgreSQL in a pod of the host, its DSN in a Secret.
func hostedControlPlane(t *testing.T, c *testcluster.Cluster) {
	ctx := context.Background()
	// the second tag is the same images: `helm upgrade` to it changes a Deployment;
	// and PostgreSQL, for the external datastore
	images := append(hosted.Images(tag()), hosted.Images(upgradeTag(t))...)
	images = append(images, "kubesplit/postgres:"+tag())
	if err := c.LoadImages(ctx, images...); err != nil {
		t.Fatal(err)
	}
	h := &hostHelm{helm: helmCLI(t), c: c, kubeconfig: filepath.Join(t.TempDir(), "host.kubeconfig")}
	if err := c.WriteKubeconfig(h.kubeconfig); err != nil {
		t.Fatal(err)
	}
	// (concurrent: mostly waiting on rollouts, one after the other they
	// took about 10 of CI's minutes)
	t.Run("sqlite", func(t *testing.T) { t.Parallel(); hostedSQLite(t, h) })
	t.Run("etcd", func(t *testing.T) { t.Parallel(); hostedEtcd(t, h) })
	t.Run("external", func(t *testing.T) { t.Parallel(); hostedExternal(t, h) })
}

// upgradeTag is another tag of the same images: hack/images.sh tags each
// TAG and TAG-k8sKUBERNETES_VERSION (hack/versions.env).
func upgradeTag(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../hack/versions.env")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "KUBERNETES_VERSION="); ok {
			return tag() + "-k8s" + strings.TrimPrefix(strings.TrimSpace(v), "v")
		}
	}
	t.Fatal("hack/versions.env sets no KUBERNETES_VERSION")
	return ""
}

type hostHelm struct {
	helm, kubeconfig string
	c                *testcluster.Cluster
}

func (h *hostHelm) run(t *testing.T, args ...string) string {
	t.Helper()
	return helmRun(t, h.helm, append(args, "--kubeconfig", h.kubeconfig)...)
}

// hostedCluster is one installed release and its cluster.
type hostedCluster struct {
	ns, adminKC, node string
	addr              string // the public address
	client            kubernetes.Interface
}

// exposure is how a release is reached: its own public Service's ports
// (ServiceLB serves them on the host's node addresses), or a name behind
// the host's Traefik, shared with other releases (gateway.sni).
type exposure struct {
	nodesPort, apiPort int
	// sniHost is the release's name at routerIP:443 (Traefik's address);
	// nothing resolves it here, so the test and its node map it to routerIP
	sniHost, routerIP string
}

// install installs release "cp" into ns and checks what every mode must
// give: the Secret, the public address, the admin kubeconfig, a node that
// joins, DNS, logs and exec.
// Each release gets public ports or a name of its own, so one need not be
// gone before the next.
func (h *hostHelm) install(t *testing.T, ns string, ex exposure, set ...string) *hostedCluster {
	t.Helper()
	ctx := context.Background()
	host := h.c.Client()
	if ex.sniHost != "" {
		set = append(set, "gateway.sni.host="+ex.sniHost)
	} else {
		set = append(set, fmt.Sprintf("gateway.service.ports.nodes=%d", ex.nodesPort), fmt.Sprintf("gateway.service.ports.api=%d", ex.apiPort))
	}
	h.installOnly(t, ns, set...)
	t.Cleanup(func() {
		if t.Failed() {
			dumpRoleLogs(t, host, ns, "tunnel-gateway", "apiserver")
		}
		helmRun(t, h.helm, "uninstall", "cp", "-n", ns, "--kubeconfig", h.kubeconfig)
		_ = host.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	rel, err := hosted.Read(ctx, host, ns)
	if err != nil {
		t.Fatal(err)
	}
	addr := rel.Address
	gw, err := host.CoreV1().Services(ns).Get(ctx, "tunnel-gateway-public", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantServer := "https://" + net.JoinHostPort(addr, strconv.Itoa(ex.apiPort))
	if ex.sniHost != "" {
		// no load balancer of its own: the router reaches it inside the host
		if addr != ex.sniHost || gw.Spec.Type != corev1.ServiceTypeClusterIP || len(gw.Spec.Ports) != 1 {
			t.Fatalf("behind the shared router: public address %q, gateway Service %s with %d ports", addr, gw.Spec.Type, len(gw.Spec.Ports))
		}
		wantServer = "https://" + ex.sniHost + ":443"
	} else if !slices.ContainsFunc(gw.Status.LoadBalancer.Ingress, func(in corev1.LoadBalancerIngress) bool { return in.IP == addr }) {
		// the public address is the gateway Service's ServiceLB address: a host node's
		t.Fatalf("public address %s is not among the gateway Service's %v", addr, gw.Status.LoadBalancer.Ingress)
	}
	cfg, _, err := rel.Client()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != wantServer {
		t.Errorf("admin kubeconfig server %s, want %s", cfg.Host, wantServer)
	}
	hc := &hostedCluster{ns: ns, addr: addr, adminKC: filepath.Join(t.TempDir(), "admin.kubeconfig")}
	admin := rel.Admin
	if ex.sniHost != "" {
		if want := "kubernetes." + ex.sniHost; cfg.TLSClientConfig.ServerName != want {
			t.Errorf("admin kubeconfig tls-server-name %q, want %q", cfg.TLSClientConfig.ServerName, want)
		}
		// what a resolver would answer for the name: the router's address
		admin = []byte(strings.Replace(string(admin), "server: "+wantServer, "server: https://"+ex.routerIP+":443", 1))
	}
	if err := os.WriteFile(hc.adminKC, admin, 0o600); err != nil {
		t.Fatal(err)
	}
	kcfg, err := clientcmd.RESTConfigFromKubeConfig(admin)
	if err != nil {
		t.Fatal(err)
	}
	if hc.client, err = kubernetes.NewForConfig(kcfg); err != nil {
		t.Fatal(err)
	}

	if ex.sniHost != "" {
		hc.node, err = h.c.JoinNodeResolving(ctx, "https://"+ex.sniHost+":443", rel.Token, map[string]string{ex.sniHost: ex.routerIP})
	} else {
		hc.node, err = rel.Join(ctx, h.c, ex.nodesPort)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.c.RemoveNode(context.Background(), hc.node) })
	waitFor(t, "node "+hc.node+" Ready in the hosted cluster", 3*time.Minute, func(ctx context.Context) (bool, error) {
		return hosted.NodeReady(ctx, hc.client, hc.node)
	})
	// the node is the hosted cluster's, not the host's
	if _, err := host.CoreV1().Nodes().Get(ctx, hc.node, metav1.GetOptions{}); err == nil {
		t.Fatalf("node %s registered with the host cluster", hc.node)
	}
	// (CoreDNS's readiness needs its API watch: pods on the node reach the
	// kubernetes Service's endpoint, which is node-local behind the router)
	waitFor(t, "CoreDNS in the hosted cluster", 3*time.Minute, func(ctx context.Context) (bool, error) {
		d, err := hc.client.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return d.Status.AvailableReplicas > 0, fmt.Errorf("%d available", d.Status.AvailableReplicas)
	})
	deployWeb(t, hc.client, 1, 30)
	if got := fetchWeb(t, hc.client, "hosted-client", hc.node); !strings.HasPrefix(got, "web-") {
		t.Fatalf("web by DNS name in the hosted cluster: %q", got)
	}
	// logs and exec: the hosted apiserver reaches the node's kubelet only
	// through the hosted gateway's tunnel
	var web string
	for name := range webPods(t, hc.client) {
		web = name
	}
	if out, ok := kubectlWith(t, hc.adminKC, "exec", web, "--", "/testapp", "echo", "hosted-exec"); ok && !strings.Contains(out, "hosted-exec") {
		t.Errorf("kubectl exec in the hosted cluster: %q", out)
	}
	if out, ok := kubectlWith(t, hc.adminKC, "logs", web); ok && out == "" {
		t.Errorf("kubectl logs in the hosted cluster: empty")
	}
	return hc
}

func (h *hostHelm) installOnly(t *testing.T, ns string, set ...string) {
	t.Helper()
	start := time.Now()
	if err := (hosted.Helm{Bin: h.helm, Kubeconfig: h.kubeconfig}).Install(context.Background(), ns, tag(), true, set...); err != nil {
		t.Fatal(err)
	}
	t.Logf("helm install %s --wait: %.1fs", strings.Join(set, " "), time.Since(start).Seconds())
}

func hostedSQLite(t *testing.T, h *hostHelm) {
	ctx := context.Background()
	host := h.c.Client()
	const ns = "hosted-sqlite"
	hc := h.install(t, ns, exposure{nodesPort: 8132, apiPort: 6443}, "backup.enabled=true")
	configMap(t, hc.client, "in-snapshot", true)
	snap := backupNow(t, host, ns)
	configMap(t, hc.client, "in-snapshot", false)
	configMap(t, hc.client, "after-snapshot", true)

	// helm upgrade of one role: only its Deployment changes; the workload's
	// containers and every object stay
	gens := generations(t, host, ns)
	before := webPods(t, hc.client)
	h.run(t, "upgrade", "cp", "../../deploy/helm", "-n", ns, "--reuse-values", "--set", "scheduler.image.tag="+upgradeTag(t), "--wait", "--timeout", "5m")
	for d, g := range gens {
		dep, err := host.AppsV1().Deployments(ns).Get(ctx, d, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		changed := dep.Generation != g
		if changed != (d == "scheduler") {
			t.Errorf("after upgrading the scheduler, Deployment %s changed: %v (generation %d → %d)", d, changed, g, dep.Generation)
		}
		if d == "scheduler" && !strings.HasSuffix(dep.Spec.Template.Spec.Containers[0].Image, ":"+upgradeTag(t)) {
			t.Errorf("scheduler image %s", dep.Spec.Template.Spec.Containers[0].Image)
		}
	}
	if after := webPods(t, hc.client); !maps.Equal(before, after) {
		t.Errorf("the workload's pods changed across a role upgrade: %v → %v", before, after)
	}

	// an upgrade the version-skew policy forbids (a scheduler newer than the
	// apiserver) is refused by the pre-upgrade check, with its reason, and
	// changes nothing
	gen := func(name string) int64 {
		dep, err := host.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return dep.Generation
	}
	schedGen := gen("scheduler")
	out, err := helmTry(h.helm, "upgrade", "cp", "../../deploy/helm", "-n", ns, "--reuse-values", "--kubeconfig", h.kubeconfig,
		"--set", "scheduler.extraArgs={--fake-kubernetes-version=v1.38.0}", "--wait", "--timeout", "3m")
	if err == nil || !strings.Contains(out, "upgrade refused") || !strings.Contains(out, "v1.38.0") || !strings.Contains(out, "newer than apiserver") {
		t.Errorf("a scheduler newer than the apiserver: want the upgrade refused with the reason, got %v:\n%s", err, out)
	} else {
		t.Logf("refused: %s", firstLineWith(out, "upgrade refused"))
	}
	if g := gen("scheduler"); g != schedGen {
		t.Errorf("the refused upgrade changed the scheduler's Deployment (generation %d → %d)", schedGen, g)
	}

	// restore from the chart: the datastore's state goes back to the
	// snapshot (what was deleted since is back, what was created since is
	// gone) and the cluster goes on from there; later restarts of the
	// datastore do not restore again
	h.run(t, "upgrade", "cp", "../../deploy/helm", "-n", ns, "--reuse-values", "--set", "backup.restoreFrom="+snap, "--wait", "--timeout", "5m")
	waitFor(t, "the snapshot's state served by the hosted apiservers", 2*time.Minute, func(ctx context.Context) (bool, error) {
		_, errIn := hc.client.CoreV1().ConfigMaps("default").Get(ctx, "in-snapshot", metav1.GetOptions{})
		_, errAfter := hc.client.CoreV1().ConfigMaps("default").Get(ctx, "after-snapshot", metav1.GetOptions{})
		return errIn == nil && apierrors.IsNotFound(errAfter), fmt.Errorf("in-snapshot: %v; after-snapshot: %v", errIn, errAfter)
	})
	configMap(t, hc.client, "after-restore", true)
	old, err := host.CoreV1().Pods(ns).Get(ctx, "datastore-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := host.CoreV1().Pods(ns).Delete(ctx, "datastore-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// (the deleted pod keeps its name and readiness while it terminates:
	// wait for its successor)
	waitFor(t, "the datastore back after its pod was deleted", 3*time.Minute, func(ctx context.Context) (bool, error) {
		p, err := host.CoreV1().Pods(ns).Get(ctx, "datastore-0", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if p.UID == old.UID {
			return false, fmt.Errorf("the deleted pod is still there")
		}
		for _, c := range p.Status.ContainerStatuses {
			if c.Ready {
				return true, nil
			}
		}
		return false, fmt.Errorf("not ready")
	})
	if b, err := host.CoreV1().Pods(ns).GetLogs("datastore-0", &corev1.PodLogOptions{Container: "restore"}).DoRaw(ctx); err != nil || !strings.Contains(string(b), "nothing to do") {
		t.Errorf("the restore init container after a restart: %v %s", err, b)
	}
	waitFor(t, "a write made after the restore, after the datastore restarted", 2*time.Minute, func(ctx context.Context) (bool, error) {
		_, err := hc.client.CoreV1().ConfigMaps("default").Get(ctx, "after-restore", metav1.GetOptions{})
		return err == nil, err
	})
	waitFor(t, "the node Ready after the restore", 2*time.Minute, func(ctx context.Context) (bool, error) {
		return hosted.NodeReady(ctx, hc.client, hc.node)
	})

	// uninstall keeps the Secret and the datastore's PVC; a new install is the same cluster
	sec, _ := host.CoreV1().Secrets(ns).Get(ctx, "kubesplit-pki", metav1.GetOptions{})
	h.run(t, "uninstall", "cp", "-n", ns, "--wait")
	if _, err := host.CoreV1().Secrets(ns).Get(ctx, "kubesplit-pki", metav1.GetOptions{}); err != nil {
		t.Fatalf("helm uninstall removed the PKI Secret: %v", err)
	}
	h.installOnly(t, ns)
	again, err := host.CoreV1().Secrets(ns).Get(ctx, "kubesplit-pki", metav1.GetOptions{})
	if err != nil || string(again.Data["pki__ca.crt"]) != string(sec.Data["pki__ca.crt"]) {
		t.Fatalf("reinstall changed the cluster CA (%v)", err)
	}
	waitFor(t, "the web Deployment back in the reinstalled control plane", 2*time.Minute, func(ctx context.Context) (bool, error) {
		d, err := hc.client.AppsV1().Deployments("default").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return d.Status.ReadyReplicas == 1, fmt.Errorf("%d ready", d.Status.ReadyReplicas)
	})
}

func hostedEtcd(t *testing.T, h *hostHelm) {
	ctx := context.Background()
	host := h.c.Client()
	const ns = "hosted-etcd"
	// (one scheduler and one controllers: what is under test here is the datastore and the apiservers)
	hc := h.install(t, ns, exposure{nodesPort: 18132, apiPort: 16443}, "datastore.mode=etcd", "backup.enabled=true", "scheduler.replicas=1", "controllers.replicas=1")
	configMap(t, hc.client, "in-snapshot", true)
	snap := backupNow(t, host, ns)
	configMap(t, hc.client, "in-snapshot", false)
	webInSnapshot := webPods(t, hc.client)
	sts, err := host.AppsV1().StatefulSets(ns).Get(ctx, "datastore", metav1.GetOptions{})
	if err != nil || sts.Status.ReadyReplicas != 3 {
		t.Fatalf("datastore StatefulSet: not 3 members ready (%v)", err)
	}

	// a writer through the public address while an etcd member and an apiserver go away
	var (
		mu       sync.Mutex
		acked    []string
		failures int
		lastOK   = time.Now()
		maxGap   time.Duration
	)
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
			name := fmt.Sprintf("w-%04d", i)
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := hc.client.CoreV1().ConfigMaps("default").Create(rctx, &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"i": name}}, metav1.CreateOptions{})
			cancel()
			mu.Lock()
			if err == nil {
				acked = append(acked, name)
				maxGap = max(maxGap, time.Since(lastOK))
				lastOK = time.Now()
			} else {
				failures++
			}
			mu.Unlock()
			time.Sleep(50 * time.Millisecond)
		}
	}()
	time.Sleep(3 * time.Second)
	if err := host.CoreV1().Pods(ns).Delete(ctx, "datastore-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	apis, err := host.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=apiserver"})
	if err != nil || len(apis.Items) != 2 {
		t.Fatalf("apiserver pods: %d (%v)", len(apis.Items), err)
	}
	if err := host.CoreV1().Pods(ns).Delete(ctx, apis.Items[0].Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deleted member and apiserver replaced and ready", 3*time.Minute, func(ctx context.Context) (bool, error) {
		s, err := host.AppsV1().StatefulSets(ns).Get(ctx, "datastore", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		d, err := host.AppsV1().Deployments(ns).Get(ctx, "apiserver", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return s.Status.ReadyReplicas == 3 && d.Status.ReadyReplicas == 2,
			fmt.Errorf("%d/3 members, %d/2 apiservers ready", s.Status.ReadyReplicas, d.Status.ReadyReplicas)
	})
	time.Sleep(3 * time.Second)
	close(stop)
	<-done
	mu.Lock()
	defer mu.Unlock()
	t.Logf("writer: %d writes acknowledged, %d failed, longest time without an acknowledged write %v", len(acked), failures, maxGap.Round(time.Millisecond))
	if len(acked) < 20 {
		t.Fatalf("only %d writes acknowledged", len(acked))
	}
	if maxGap > 15*time.Second {
		t.Errorf("the API did not acknowledge a write for %v while a member and an apiserver were replaced", maxGap)
	}
	list, err := hc.client.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, cm := range list.Items {
		have[cm.Name] = true
	}
	for _, n := range acked {
		if !have[n] {
			t.Errorf("acknowledged write %s lost", n)
		}
	}

	// the renewal CronJob renews what is due (here: everything) and the
	// roles serve the new certificates without a restart
	restarts := podRestarts(t, host, ns)
	served := []struct {
		what, addr, name string
		before           *x509.Certificate
	}{
		{what: "the apiserver (through the gateway's relay)", addr: net.JoinHostPort(hc.addr, "16443"), name: "kubernetes"},
		{what: "the gateway", addr: net.JoinHostPort(hc.addr, "18132")},
	}
	for i := range served {
		if served[i].before, err = servedCert(ctx, served[i].addr, served[i].name); err != nil {
			t.Fatal(err)
		}
	}
	renewNow(t, host, ns)
	for _, c := range served {
		waitFor(t, c.what+" serving its renewed certificate", 4*time.Minute, func(ctx context.Context) (bool, error) {
			cert, err := servedCert(ctx, c.addr, c.name)
			if err != nil {
				return false, err
			}
			return cert.SerialNumber.Cmp(c.before.SerialNumber) != 0, fmt.Errorf("still the certificate from before the renewal (serial %s)", cert.SerialNumber)
		})
	}
	configMap(t, hc.client, "after-renewal", true)
	waitFor(t, "the node Ready after the renewal", 2*time.Minute, func(ctx context.Context) (bool, error) {
		return hosted.NodeReady(ctx, hc.client, hc.node)
	})
	// (a pod that was terminating before may be gone; none may have restarted)
	for c, n := range podRestarts(t, host, ns) {
		if n > restarts[c] {
			t.Errorf("container %s restarted across the renewal (%d restarts, %d before)", c, n, restarts[c])
		}
	}

	hostedEtcdRestore(t, h, hc, snap, webInSnapshot)
}

// hostedEtcdRestore restores a running etcd release from snap with
// `helm upgrade --set backup.restoreFrom`: the state goes back to the
// snapshot's (what was deleted since is back, the writer's ConfigMaps
// gone), the workload's containers and the node carry on, and a later
// upgrade does not restore again.
// hostedRollout upgrades the roles (in the rollout's order) to upgradeTag in
// one helm upgrade, after marking leftover held as an unfinished rollout
// would, and checks they rolled one at a time in that order: each one's new
// ReplicaSet was created after the one before had every new pod ready; the
// leftover was released in its place. Nothing is left paused, the other
// roles and the workload's pods are untouched.
func hostedRollout(t *testing.T, h *hostHelm, hc *hostedCluster, web map[string]podState, leftover string, order ...string) {
	t.Helper()
	ns := hc.ns
	ctx := context.Background()
	host := h.c.Client()
	gens := generations(t, host, ns)
	patch := []byte(`{"metadata":{"annotations":{"kubesplit.io/held":"true"}},"spec":{"paused":true}}`)
	if _, err := host.AppsV1().Deployments(ns).Patch(ctx, leftover, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	jobOrder := []string{}
	for _, r := range []string{"apiserver", "controllers", "scheduler", "tunnel-gateway"} {
		if r == leftover || slices.Contains(order, r) {
			jobOrder = append(jobOrder, r)
		}
	}
	args := []string{"upgrade", "cp", "../../deploy/helm", "-n", ns, "--reuse-values", "--wait", "--timeout", "8m"}
	for _, r := range order {
		key := r
		if r == "tunnel-gateway" {
			key = "gateway"
		}
		args = append(args, "--set", key+".image.tag="+upgradeTag(t))
	}
	start := time.Now()
	h.run(t, args...)
	t.Logf("helm upgrade of %s at once: %.1fs", strings.Join(order, ", "), time.Since(start).Seconds())
	logs := jobLogs(t, host, ns, "kubesplit-rollout")
	if !strings.Contains(logs, "rolling out one at a time: "+strings.Join(jobOrder, ", ")+"\n") || !strings.Contains(logs, "every role rolled out") {
		t.Errorf("the rollout Job's log:\n%s", logs)
	} else {
		t.Logf("rollout Job:\n%s", strings.TrimSpace(logs))
	}
	var prevReady time.Time
	if dep, err := host.AppsV1().Deployments(ns).Get(ctx, leftover, metav1.GetOptions{}); err != nil || dep.Spec.Paused || dep.Annotations["kubesplit.io/held"] != "" {
		t.Errorf("%s, left held, after the upgrade: %v %+v", leftover, err, dep)
	}
	for i, r := range order {
		dep, err := host.AppsV1().Deployments(ns).Get(ctx, r, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if dep.Spec.Paused || dep.Annotations["kubesplit.io/held"] != "" || !strings.HasSuffix(dep.Spec.Template.Spec.Containers[0].Image, ":"+upgradeTag(t)) {
			t.Errorf("%s after the rollout: paused %v, annotations %v, image %s", r, dep.Spec.Paused, dep.Annotations, dep.Spec.Template.Spec.Containers[0].Image)
		}
		rs := newestReplicaSet(t, host, ns, dep)
		if i > 0 && rs.CreationTimestamp.Time.Before(prevReady) {
			t.Errorf("%s's new ReplicaSet was created at %v, before %s's new pods were all ready (%v): the roles rolled together",
				r, rs.CreationTimestamp.Time, order[i-1], prevReady)
		}
		prevReady = time.Time{}
		pods, err := host.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "pod-template-hash=" + rs.Labels["pod-template-hash"]})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pods.Items {
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && c.LastTransitionTime.Time.After(prevReady) {
					prevReady = c.LastTransitionTime.Time
				}
			}
		}
		if len(pods.Items) == 0 || prevReady.IsZero() {
			t.Fatalf("%s's new ReplicaSet %s has no ready pod", r, rs.Name)
		}
	}
	for d, g := range gens {
		dep, err := host.AppsV1().Deployments(ns).Get(ctx, d, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(order, d) && d != leftover && dep.Generation != g {
			t.Errorf("Deployment %s changed in an upgrade of %v (generation %d → %d)", d, order, g, dep.Generation)
		}
	}
	if after := webPods(t, hc.client); !maps.Equal(web, after) {
		t.Errorf("the workload's pods changed across the rollout: %v → %v", web, after)
	}
}

// generations are the roles' Deployments' generations (they move with a
// change of spec: a rollout, a pause).
func generations(t *testing.T, host kubernetes.Interface, ns string) map[string]int64 {
	t.Helper()
	gens := map[string]int64{}
	for _, d := range []string{"apiserver", "controllers", "tunnel-gateway", "scheduler"} {
		dep, err := host.AppsV1().Deployments(ns).Get(context.Background(), d, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		gens[d] = dep.Generation
	}
	return gens
}

// newestReplicaSet is the ReplicaSet of a Deployment's latest revision.
func newestReplicaSet(t *testing.T, host kubernetes.Interface, ns string, dep *appsv1.Deployment) *appsv1.ReplicaSet {
	t.Helper()
	sel := []string{}
	for k, v := range dep.Spec.Selector.MatchLabels {
		sel = append(sel, k+"="+v)
	}
	list, err := host.AppsV1().ReplicaSets(ns).List(context.Background(), metav1.ListOptions{LabelSelector: strings.Join(sel, ",")})
	if err != nil {
		t.Fatal(err)
	}
	var best *appsv1.ReplicaSet
	bestRev := -1
	for i := range list.Items {
		rev, _ := strconv.Atoi(list.Items[i].Annotations["deployment.kubernetes.io/revision"])
		if rev > bestRev {
			best, bestRev = &list.Items[i], rev
		}
	}
	if best == nil {
		t.Fatalf("deployment %s has no ReplicaSet", dep.Name)
	}
	return best
}

func hostedEtcdRestore(t *testing.T, h *hostHelm, hc *hostedCluster, snap string, webInSnapshot map[string]podState) {
	ctx := context.Background()
	host := h.c.Client()
	start := time.Now()
	h.run(t, "upgrade", "cp", "../../deploy/helm", "-n", hc.ns, "--reuse-values", "--set", "backup.restoreFrom="+snap, "--wait", "--timeout", "5m")
	t.Logf("helm upgrade --set backup.restoreFrom (etcd, stop, restore, start): %.1fs", time.Since(start).Seconds())
	logs := jobLogs(t, host, hc.ns, "datastore-restore")
	if !strings.Contains(logs, "stopped apiserver") || !strings.Contains(logs, "restored /registry/ from") || !strings.Contains(logs, "started apiserver (2 replicas, available after") {
		t.Errorf("the restore Job's log:\n%s", logs)
	} else {
		t.Logf("restore Job:\n%s", strings.TrimSpace(logs))
	}
	_, errIn := hc.client.CoreV1().ConfigMaps("default").Get(ctx, "in-snapshot", metav1.GetOptions{})
	_, errW := hc.client.CoreV1().ConfigMaps("default").Get(ctx, "w-0000", metav1.GetOptions{})
	_, errR := hc.client.CoreV1().ConfigMaps("default").Get(ctx, "after-renewal", metav1.GetOptions{})
	if errIn != nil || !apierrors.IsNotFound(errW) || !apierrors.IsNotFound(errR) {
		t.Errorf("after the restore: in-snapshot %v (want it back), w-0000 %v and after-renewal %v (want them gone)", errIn, errW, errR)
	}
	waitFor(t, "the node Ready after the restore", 2*time.Minute, func(ctx context.Context) (bool, error) {
		return hosted.NodeReady(ctx, hc.client, hc.node)
	})
	// the snapshot's pods are the running ones: their containers carry on
	waitFor(t, "the workload's containers the snapshot's", time.Minute, func(ctx context.Context) (bool, error) {
		now := webPods(t, hc.client)
		return maps.Equal(now, webInSnapshot), fmt.Errorf("%v, snapshot %v", now, webInSnapshot)
	})
	if got := fetchWeb(t, hc.client, "restored-client", hc.node); !strings.HasPrefix(got, "web-") {
		t.Errorf("web by DNS name after the restore: %q", got)
	}
	configMap(t, hc.client, "after-restore", true)

	// the next upgrade (the value still set) finds it restored: nothing
	// stops, what was written since stays
	apis := podNames(t, host, hc.ns, "app.kubernetes.io/component=apiserver")
	start = time.Now()
	h.run(t, "upgrade", "cp", "../../deploy/helm", "-n", hc.ns, "--reuse-values", "--wait", "--timeout", "5m")
	t.Logf("the next helm upgrade (restored already): %.1fs", time.Since(start).Seconds())
	if logs := jobLogs(t, host, hc.ns, "datastore-restore"); !strings.Contains(logs, "nothing to do") {
		t.Errorf("the restore Job at the next upgrade:\n%s", logs)
	}
	if now := podNames(t, host, hc.ns, "app.kubernetes.io/component=apiserver"); !slices.Equal(now, apis) {
		t.Errorf("apiserver pods %v → %v across an upgrade that had nothing to restore", apis, now)
	}
	if _, err := hc.client.CoreV1().ConfigMaps("default").Get(ctx, "after-restore", metav1.GetOptions{}); err != nil {
		t.Errorf("a write after the restore, after the next upgrade: %v", err)
	}
}

// podNames lists the names of ns's pods matching selector, sorted.
func podNames(t *testing.T, c kubernetes.Interface, ns, selector string) []string {
	t.Helper()
	pods, err := c.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pods.Items {
		names = append(names, p.Name)
	}
	slices.Sort(names)
	return names
}

// renewNow runs the renewal CronJob's pod once with every certificate due
// (--cert-renew-before longer than their life).
func renewNow(t *testing.T, host kubernetes.Interface, ns string) {
	t.Helper()
	logs := runCronJobNow(t, host, ns, "kubesplit-renew", "renew-now", func(spec *batchv1.JobSpec) {
		c := &spec.Template.Spec.Containers[0]
		c.Args = append(c.Args, "--cert-renew-before=87600h")
	})
	if len(logs) == 0 {
		t.Error("the renewal Job left no pod to read")
	}
	for _, b := range logs {
		summary := tail(b, 1)
		t.Logf("renewal: %s", summary)
		if !strings.Contains(summary, "renewed") || strings.Contains(summary, " 0 renewed") {
			t.Errorf("the renewal Job renewed nothing:\n%s", b)
		}
	}
}

// runCronJobNow runs a CronJob's Job once as Job job (as `kubectl create
// job --from=cronjob/NAME` does, after change, when given, edits its spec),
// waits for it to succeed and returns its pods' logs.
func runCronJobNow(t *testing.T, host kubernetes.Interface, ns, cronJob, job string, change func(*batchv1.JobSpec)) []string {
	t.Helper()
	ctx := context.Background()
	cj, err := host.BatchV1().CronJobs(ns).Get(ctx, cronJob, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spec := cj.Spec.JobTemplate.Spec.DeepCopy()
	if change != nil {
		change(spec)
	}
	if _, err := host.BatchV1().Jobs(ns).Create(ctx, &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: job}, Spec: *spec}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "Job "+job+" from CronJob "+cronJob, 3*time.Minute, func(ctx context.Context) (bool, error) {
		j, err := host.BatchV1().Jobs(ns).Get(ctx, job, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return j.Status.Succeeded > 0, fmt.Errorf("%d succeeded, %d failed", j.Status.Succeeded, j.Status.Failed)
	})
	return jobPodLogs(t, host, ns, job)
}

// jobPodLogs returns the logs of job's pods, one per pod.
func jobPodLogs(t *testing.T, host kubernetes.Interface, ns, job string) []string {
	t.Helper()
	ctx := context.Background()
	pods, err := host.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "job-name=" + job})
	if err != nil {
		t.Fatal(err)
	}
	var logs []string
	for _, p := range pods.Items {
		b, _ := host.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
		logs = append(logs, string(b))
	}
	return logs
}

// jobLogs is the logs of job's pods in one string.
func jobLogs(t *testing.T, host kubernetes.Interface, ns, job string) string {
	t.Helper()
	return strings.Join(jobPodLogs(t, host, ns, job), "\n")
}

// servedCert is the leaf certificate a TLS server at addr presents for
// server name name (read only: it is compared, not trusted).
func servedCert(ctx context.Context, addr, name string) (*x509.Certificate, error) {
	d := tls.Dialer{Config: &tls.Config{ServerName: name, InsecureSkipVerify: true}} //nolint:gosec // only read
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

// podRestarts is each container's restart count in ns (pods of Jobs aside).
func podRestarts(t *testing.T, host kubernetes.Interface, ns string) map[string]int32 {
	t.Helper()
	pods, err := host.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int32{}
	for _, p := range pods.Items {
		if _, job := p.Labels["job-name"]; job {
			continue
		}
		for _, c := range p.Status.ContainerStatuses {
			out[p.Name+"/"+c.Name] = c.RestartCount
		}
	}
	return out
}

// hostedExternal: the external datastore, and the shared entry point:
// this release and a second one (sqlite) sit behind the host's Traefik on
// one address and port, told apart by name (gateway.sni), each with its
// own node; neither sees the other's.
func hostedExternal(t *testing.T, h *hostHelm) {
	ctx := context.Background()
	host := h.c.Client()
	const ns = "hosted-external"
	router := sharedEntryPoint(t, h)
	password, err := hosted.Postgres(ctx, host, ns, tag())
	if err != nil {
		t.Fatal(err)
	}
	ext := h.install(t, ns, exposure{sniHost: "external.kubesplit.test", routerIP: router}, "datastore.mode=external", "datastore.external.secretName=pg",
		"apiserver.replicas=1", "scheduler.replicas=1", "controllers.replicas=1")
	other := h.install(t, "hosted-shared", exposure{sniHost: "shared.kubesplit.test", routerIP: router},
		"apiserver.replicas=1", "scheduler.replicas=1", "controllers.replicas=1")
	for _, c := range []struct {
		hc    *hostedCluster
		other string
	}{{ext, other.node}, {other, ext.node}} {
		nodes, err := c.hc.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(nodes.Items) != 1 || nodes.Items[0].Name != c.hc.node {
			t.Errorf("%s behind the shared address: nodes %v, want its own %s alone (not %s)", c.hc.ns, nodeNames(nodes.Items), c.hc.node, c.other)
		}
		// the kubernetes Service's endpoint is node-local: each node serves it
		// and carries pods' connections to its own gateway
		eps, err := c.hc.client.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=kubernetes"})
		if err != nil || len(eps.Items) == 0 || len(eps.Items[0].Endpoints) == 0 || eps.Items[0].Endpoints[0].Addresses[0] != "192.0.2.1" {
			t.Errorf("%s: the kubernetes Service's endpoints %+v (%v), want the node-local 192.0.2.1", c.hc.ns, eps, err)
		}
	}
	// the password is in the Secret alone: not in the datastore's pod spec or its log
	pods, err := host.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=datastore"})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("datastore pods: %v", err)
	}
	for _, p := range pods.Items {
		if spec := fmt.Sprint(p.Spec); strings.Contains(spec, password) {
			t.Errorf("the DSN's password is in pod %s's spec", p.Name)
		}
		rc, err := host.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(rc), password) {
			t.Errorf("the DSN's password is in pod %s's log", p.Name)
		}
		if !strings.Contains(string(rc), "postgres") {
			t.Errorf("datastore %s does not say it runs on postgres:\n%s", p.Name, tail(string(rc), 5))
		}
	}

	// one upgrade changing two roles, with a third left held (paused) as an
	// unfinished rollout would: they roll one at a time in the policy's
	// order, each after the one before is rolled out (here: the release
	// with one replica of each, the quickest to roll)
	hostedRollout(t, h, ext, webPods(t, ext.client), "scheduler", "apiserver", "controllers")
}

// sharedEntryPoint readies the host's Traefik for releases behind it, the
// way its user would: Traefik's CRDs (from the Traefik module the addon is
// built from) applied, and its CRD provider turned on with a HelmChartConfig.
// It returns Traefik's address (its ServiceLB address: a host node's).
func sharedEntryPoint(t *testing.T, h *hostHelm) string {
	t.Helper()
	ctx := context.Background()
	host := h.c.Client()
	out, err := exec.Command("go", "list", "-C", "../../addons/traefik", "-m", "-f", "{{.Dir}}", "github.com/traefik/traefik/v3").Output()
	if err != nil {
		t.Fatalf("finding the Traefik module: %v", err)
	}
	crds := filepath.Join(strings.TrimSpace(string(out)), traefikCRDs)
	if _, ok := kubectlWith(t, h.kubeconfig, "apply", "--server-side", "-f", crds); !ok {
		t.Fatal("no bin/kubectl to apply Traefik's CRDs with")
	}
	dyn, err := dynamic.NewForConfig(h.c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	configs := dyn.Resource(helmChartConfigGVR).Namespace("kube-system")
	hcc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "helm.cattle.io/v1", "kind": "HelmChartConfig",
		"metadata": map[string]any{"name": "traefik", "namespace": "kube-system"},
		"spec":     map[string]any{"valuesContent": "providers:\n  kubernetesCRD:\n    enabled: true\n"},
	}}
	if _, err := configs.Create(ctx, hcc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = configs.Delete(context.Background(), "traefik", metav1.DeleteOptions{}) })
	waitFor(t, "Traefik with its CRD provider", 3*time.Minute, func(ctx context.Context) (bool, error) {
		d, err := host.AppsV1().Deployments("kube-system").Get(ctx, "traefik", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		on := slices.Contains(d.Spec.Template.Spec.Containers[0].Args, "--providers.kubernetesCRD=true")
		return on && d.Status.ObservedGeneration == d.Generation && d.Status.UpdatedReplicas == d.Status.Replicas &&
				d.Status.AvailableReplicas == d.Status.Replicas && d.Status.Replicas > 0,
			fmt.Errorf("CRD provider %v, %d/%d updated and available", on, d.Status.AvailableReplicas, d.Status.Replicas)
	})
	svc, err := host.CoreV1().Services("kube-system").Get(ctx, "traefik", metav1.GetOptions{})
	if err != nil || len(svc.Status.LoadBalancer.Ingress) == 0 {
		t.Fatalf("Traefik's Service has no address: %v", err)
	}
	return svc.Status.LoadBalancer.Ingress[0].IP
}

// traefikCRDs is Traefik's CRD definitions file in its module.
const traefikCRDs = "docs/content/reference/dynamic-configuration/kubernetes-crd-definition-v1.yml"

func nodeNames(nodes []corev1.Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.Name)
	}
	return out
}

// dumpRoleLogs logs the last lines of the roles' pods in ns, for a failure.
func dumpRoleLogs(t *testing.T, host kubernetes.Interface, ns string, roles ...string) {
	ctx := context.Background()
	for _, r := range roles {
		pods, err := host.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=" + r})
		if err != nil {
			continue
		}
		for _, p := range pods.Items {
			b, _ := host.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{TailLines: ptr.To[int64](30)}).DoRaw(ctx)
			t.Logf("%s/%s:\n%s", ns, p.Name, b)
		}
	}
}

// backupNow runs the backup CronJob's Job once (as `kubectl create job
// --from=cronjob/datastore-backup` does) and checks it saved a snapshot.
func backupNow(t *testing.T, host kubernetes.Interface, ns string) (snapshot string) {
	t.Helper()
	const saved = "snapshot saved to /var/lib/kubesplit/snapshots/"
	for _, b := range runCronJobNow(t, host, ns, "datastore-backup", "backup-now", nil) {
		if strings.Contains(b, saved+"snapshot-") {
			line := firstLineWith(b, saved+"snapshot-")
			t.Logf("backup: %s", strings.TrimSpace(b))
			return strings.TrimSpace(line[strings.Index(line, saved)+len(saved):])
		}
	}
	t.Fatalf("the backup Job did not say it saved a snapshot")
	return ""
}

// configMap creates (or deletes) default/NAME in the hosted cluster.
func configMap(t *testing.T, c kubernetes.Interface, name string, create bool) {
	t.Helper()
	ctx := context.Background()
	var err error
	if create {
		_, err = c.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"k": "v"}}, metav1.CreateOptions{})
	} else {
		err = c.CoreV1().ConfigMaps("default").Delete(ctx, name, metav1.DeleteOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
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
	out, err := helmTry(helm, args...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// helmTry runs helm and returns its output and error.
func helmTry(helm string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, helm, args...).CombinedOutput()
	return string(out), err
}

func firstLineWith(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return strings.TrimSpace(l)
		}
	}
	return s
}
