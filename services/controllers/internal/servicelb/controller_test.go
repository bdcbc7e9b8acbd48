package servicelb

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/kubesplit/kubesplit/pkg/servicelb"
)

// harness runs a controller's informers on a fake clientset; the tests
// call sync themselves, after the informers have seen each change (the
// fake sets no resourceVersions: they wait for the content).
type harness struct {
	t      *testing.T
	ctx    context.Context
	client *fake.Clientset
	rec    *record.FakeRecorder
	c      *Controller
}

func newHarness(t *testing.T, objs ...runtime.Object) *harness {
	t.Helper()
	client := fake.NewClientset(objs...)
	rec := record.NewFakeRecorder(100)
	c, err := New(client, image, rec, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c.cluster.Start(ctx.Done())
	c.ours.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		t.Fatal("informers did not sync")
	}
	return &harness{t: t, ctx: ctx, client: client, rec: rec, c: c}
}

// eventually waits until the informers show what cond wants.
func (h *harness) eventually(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("the informers never saw %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) sync(key string) {
	h.t.Helper()
	if err := h.c.sync(h.ctx, key); err != nil {
		h.t.Fatalf("sync %s: %v", key, err)
	}
}

func (h *harness) service(ns, name string) *corev1.Service {
	h.t.Helper()
	s, err := h.client.CoreV1().Services(ns).Get(h.ctx, name, metav1.GetOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

func (h *harness) updateService(s *corev1.Service) {
	h.t.Helper()
	if _, err := h.client.CoreV1().Services(s.Namespace).Update(h.ctx, s, metav1.UpdateOptions{}); err != nil {
		h.t.Fatal(err)
	}
	h.eventually("the updated Service", func() bool {
		cur, err := h.c.services.Services(s.Namespace).Get(s.Name)
		return err == nil && cur.Spec.Type == s.Spec.Type && len(cur.Spec.Ports) == len(s.Spec.Ports)
	})
}

func (h *harness) create(obj runtime.Object) {
	h.t.Helper()
	var err error
	switch o := obj.(type) {
	case *corev1.Pod:
		_, err = h.client.CoreV1().Pods(o.Namespace).Create(h.ctx, o, metav1.CreateOptions{})
		h.eventually("pod "+o.Name, func() bool { _, err := h.c.pods.Pods(o.Namespace).Get(o.Name); return err == nil })
	case *discoveryv1.EndpointSlice:
		_, err = h.client.DiscoveryV1().EndpointSlices(o.Namespace).Create(h.ctx, o, metav1.CreateOptions{})
		h.eventually("slice "+o.Name, func() bool { _, err := h.c.slices.EndpointSlices(o.Namespace).Get(o.Name); return err == nil })
	case *corev1.Service:
		_, err = h.client.CoreV1().Services(o.Namespace).Create(h.ctx, o, metav1.CreateOptions{})
		h.eventually("service "+o.Name, func() bool { _, err := h.c.services.Services(o.Namespace).Get(o.Name); return err == nil })
	}
	if err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) labelNode(name, value string) {
	h.t.Helper()
	n, err := h.client.CoreV1().Nodes().Get(h.ctx, name, metav1.GetOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	n.Labels = map[string]string{NodeLabel: value}
	if _, err := h.client.CoreV1().Nodes().Update(h.ctx, n, metav1.UpdateOptions{}); err != nil {
		h.t.Fatal(err)
	}
	h.eventually("node "+name+" labelled", func() bool { n, err := h.c.nodes.Get(name); return err == nil && n.Labels[NodeLabel] == value })
}

// daemonSet is the Service's DaemonSet, after the informers saw it.
func (h *harness) daemonSet(ns, name string) *appsv1.DaemonSet {
	h.t.Helper()
	ds, err := h.client.AppsV1().DaemonSets(Namespace).Get(h.ctx, daemonSetName(ns, name), metav1.GetOptions{})
	if err != nil {
		h.t.Fatalf("the DaemonSet of %s/%s: %v", ns, name, err)
	}
	h.eventually("DaemonSet "+ds.Name, func() bool {
		cur, err := h.c.daemonSets.DaemonSets(Namespace).Get(ds.Name)
		return err == nil && cur.Annotations[hashAnnotation] == ds.Annotations[hashAnnotation]
	})
	return ds
}

func (h *harness) noDaemonSet(ns, name string) {
	h.t.Helper()
	_, err := h.client.AppsV1().DaemonSets(Namespace).Get(h.ctx, daemonSetName(ns, name), metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		h.t.Fatalf("the DaemonSet of %s/%s is still there (%v)", ns, name, err)
	}
	h.eventually("the DaemonSet gone", func() bool {
		_, err := h.c.daemonSets.DaemonSets(Namespace).Get(daemonSetName(ns, name))
		return apierrors.IsNotFound(err)
	})
}

// events drains the recorded events.
func (h *harness) events() []string {
	var out []string
	for {
		select {
		case e := <-h.rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func hostPorts(ds *appsv1.DaemonSet) []int32 {
	var out []int32
	for _, p := range ds.Spec.Template.Spec.Containers[0].Ports {
		if p.HostPort != 0 {
			out = append(out, p.HostPort)
		}
	}
	return out
}

func TestServiceLifecycle(t *testing.T) {
	t.Parallel()
	svc := lbService("default", "web")
	h := newHarness(t, node("a", "10.251.0.4", "", nil), node("b", "10.251.0.3", "", nil))
	h.create(svc)
	h.sync("default/web")
	ds := h.daemonSet("default", "web")
	if !slices.Equal(hostPorts(ds), []int32{80}) {
		t.Errorf("host ports %v", hostPorts(ds))
	}
	if ev := strings.Join(h.events(), "\n"); !strings.Contains(ev, "ForwardersCreated") {
		t.Errorf("events %q: want ForwardersCreated", ev)
	}
	if got := h.service("default", "web").Status.LoadBalancer.Ingress; len(got) != 0 {
		t.Errorf("status %v before any forwarder is ready", got)
	}

	h.create(forwarderPod(svc, "fwd-a", "a", true))
	h.create(forwarderPod(svc, "fwd-b", "b", true))
	h.sync("default/web")
	if got := ips(h.service("default", "web").Status.LoadBalancer.Ingress); !slices.Equal(got, []string{"10.251.0.3", "10.251.0.4"}) {
		t.Errorf("status %v, want both nodes", got)
	}
	if ev := strings.Join(h.events(), "\n"); !strings.Contains(ev, "served at 10.251.0.3, 10.251.0.4") {
		t.Errorf("events %q: want the addresses", ev)
	}

	// a port is added: the DaemonSet follows
	cur := h.service("default", "web")
	cur.Spec.Ports = append(cur.Spec.Ports, corev1.ServicePort{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP})
	h.updateService(cur)
	h.sync("default/web")
	if ds := h.daemonSet("default", "web"); !slices.Equal(hostPorts(ds), []int32{80, 443}) {
		t.Errorf("after adding 443: host ports %v", hostPorts(ds))
	}

	// node b opts out; then node a opts in, which leaves only labelled nodes
	h.labelNode("b", "false")
	h.sync("default/web")
	if got := ips(h.service("default", "web").Status.LoadBalancer.Ingress); !slices.Equal(got, []string{"10.251.0.4"}) {
		t.Errorf("node b opted out: status %v", got)
	}
	h.labelNode("a", "true")
	h.sync("default/web")
	aff := h.daemonSet("default", "web").Spec.Template.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution
	if r := aff.NodeSelectorTerms[0].MatchExpressions[0]; r.Operator != corev1.NodeSelectorOpIn {
		t.Errorf("node a opted in: affinity %+v, want %s In [true]", r, NodeLabel)
	}

	// the type changes: forwarders and status go
	cur = h.service("default", "web")
	cur.Spec.Type = corev1.ServiceTypeClusterIP
	h.updateService(cur)
	h.sync("default/web")
	h.noDaemonSet("default", "web")
	if got := h.service("default", "web").Status.LoadBalancer.Ingress; len(got) != 0 {
		t.Errorf("status %v after the type changed to ClusterIP", got)
	}

	// back to LoadBalancer, then deleted: the DaemonSet goes with it
	cur = h.service("default", "web")
	cur.Spec.Type = corev1.ServiceTypeLoadBalancer
	h.updateService(cur)
	h.sync("default/web")
	h.daemonSet("default", "web")
	if err := h.client.CoreV1().Services("default").Delete(h.ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("the Service gone", func() bool { _, err := h.c.services.Services("default").Get("web"); return err != nil })
	h.sync("default/web")
	h.noDaemonSet("default", "web")
}

func TestLocalFollowsEndpoints(t *testing.T) {
	t.Parallel()
	svc := lbService("default", "web")
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	h := newHarness(t, node("a", "10.251.0.4", "", nil), node("b", "10.251.0.3", "", nil))
	h.create(svc)
	h.sync("default/web")
	h.daemonSet("default", "web")
	h.create(forwarderPod(svc, "fwd-a", "a", true))
	h.create(forwarderPod(svc, "fwd-b", "b", true))
	h.create(slice(svc, "web-1", 8080, endpoint("10.42.0.7", "a", true)))
	h.sync("default/web")
	annotation := func(pod string) string {
		p, err := h.client.CoreV1().Pods(Namespace).Get(h.ctx, pod, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p.Annotations[servicelb.EndpointsAnnotation]
	}
	if got := annotation("fwd-a"); got != `{"10201":["10.42.0.7:8080"]}` {
		t.Errorf("node a's forwarder got endpoints %q", got)
	}
	if got := annotation("fwd-b"); got != "" {
		t.Errorf("node b's forwarder got endpoints %q, but b has none", got)
	}
	if got := ips(h.service("default", "web").Status.LoadBalancer.Ingress); !slices.Equal(got, []string{"10.251.0.4"}) {
		t.Errorf("Local: status %v, want only node a", got)
	}

	// the endpoint moves to node b
	moved := slice(svc, "web-1", 8080, endpoint("10.42.1.9", "b", true))
	if _, err := h.client.DiscoveryV1().EndpointSlices("default").Update(h.ctx, moved, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.eventually("the moved endpoint", func() bool {
		s, err := h.c.slices.EndpointSlices("default").Get("web-1")
		return err == nil && *s.Endpoints[0].NodeName == "b"
	})
	h.eventually("the annotated pods", func() bool {
		p, err := h.c.pods.Pods(Namespace).Get("fwd-a")
		return err == nil && p.Annotations[servicelb.EndpointsAnnotation] != ""
	})
	h.sync("default/web")
	if a, b := annotation("fwd-a"), annotation("fwd-b"); a != "" || b != `{"10201":["10.42.1.9:8080"]}` {
		t.Errorf("after the move: a %q, b %q", a, b)
	}
	if got := ips(h.service("default", "web").Status.LoadBalancer.Ingress); !slices.Equal(got, []string{"10.251.0.3"}) {
		t.Errorf("after the move: status %v, want only node b", got)
	}
}

func TestPortInUseIsReportedOnce(t *testing.T) {
	t.Parallel()
	svc := lbService("default", "web")
	h := newHarness(t, node("a", "10.251.0.4", "", nil))
	h.create(svc)
	pending := forwarderPod(svc, "fwd-a", "", false)
	pending.Status = corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled,
		Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
		Message: "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports."}}}
	h.create(pending)
	h.sync("default/web")
	h.sync("default/web")
	var warnings []string
	for _, e := range h.events() {
		if strings.HasPrefix(e, "Warning") {
			warnings = append(warnings, e)
		}
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "port 80/TCP already used") {
		t.Errorf("warnings %q: want one about port 80/TCP", warnings)
	}
}

func TestUnsupportedPortsAndOtherClasses(t *testing.T) {
	t.Parallel()
	sctp := lbService("default", "sig", corev1.ServicePort{Port: 9, Protocol: corev1.ProtocolSCTP})
	other := lbService("default", "metal")
	class := "example.com/metal"
	other.Spec.LoadBalancerClass = &class
	h := newHarness(t, node("a", "10.251.0.4", "", nil))
	h.create(sctp)
	h.create(other)
	h.sync("default/sig")
	h.sync("default/metal")
	h.noDaemonSet("default", "sig")
	h.noDaemonSet("default", "metal")
	if ev := strings.Join(h.events(), "\n"); !strings.Contains(ev, "Warning UnsupportedProtocol") {
		t.Errorf("events %q: want UnsupportedProtocol for an SCTP-only Service", ev)
	}
}

func TestOrphanedDaemonSetIsRemoved(t *testing.T) {
	t.Parallel()
	svc := lbService("gone", "web")
	ports, _ := forwardedPorts(svc)
	h := newHarness(t, renderDaemonSet(svc, ports, image, false))
	h.sync("gone/web")
	h.noDaemonSet("gone", "web")
}

func TestCleanupRemovesForwardersAndStatus(t *testing.T) {
	t.Parallel()
	ours, theirs := lbService("default", "web"), lbService("default", "other")
	for _, s := range []*corev1.Service{ours, theirs} {
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "10.251.0.4"}}
	}
	ports, _ := forwardedPorts(ours)
	orphan := lbService("gone", "web")
	client := fake.NewClientset(ours, theirs, renderDaemonSet(ours, ports, image, false), renderDaemonSet(orphan, ports, image, false))
	if err := Cleanup(context.Background(), client, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	dss, _ := client.AppsV1().DaemonSets(Namespace).List(context.Background(), metav1.ListOptions{})
	if len(dss.Items) != 0 {
		t.Errorf("%d DaemonSets left", len(dss.Items))
	}
	got, _ := client.CoreV1().Services("default").Get(context.Background(), "web", metav1.GetOptions{})
	if len(got.Status.LoadBalancer.Ingress) != 0 {
		t.Errorf("status of our Service left: %v", got.Status.LoadBalancer.Ingress)
	}
	got, _ = client.CoreV1().Services("default").Get(context.Background(), "other", metav1.GetOptions{})
	if len(got.Status.LoadBalancer.Ingress) != 1 {
		t.Error("the status of a Service ServiceLB had no DaemonSet for was cleared")
	}
}
