package tunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func node(name, podCIDR string, addrs ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDR: podCIDR}}
	if podCIDR != "" {
		n.Spec.PodCIDRs = []string{podCIDR}
	}
	n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: name})
	for _, a := range addrs {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
	}
	return n
}

func TestResolve(t *testing.T) {
	t.Parallel()
	r := NewRoutes()
	r.SetNode(node("a", "10.42.0.0/24", "10.200.0.129"))
	r.SetNode(node("b", "10.42.1.0/24", "10.200.0.130"))
	kubelet := []int{10250}
	for _, c := range []struct {
		host    string
		port    int
		want    Target
		noRoute bool
	}{
		{host: "10.200.0.129", port: 10250, want: Target{Node: "a", Addr: "127.0.0.1:10250"}},
		{host: "b", port: 10250, want: Target{Node: "b", Addr: "127.0.0.1:10250"}},
		{host: "10.42.0.7", port: 8443, want: Target{Node: "a", Addr: "10.42.0.7:8443", Pod: true}},
		{host: "10.42.1.9", port: 443, want: Target{Node: "b", Addr: "10.42.1.9:443", Pod: true}},
		{host: "::ffff:10.42.1.9", port: 443, want: Target{Node: "b", Addr: "10.42.1.9:443", Pod: true}},
		// a node's own ports other than the kubelet's
		{host: "10.200.0.129", port: 22, noRoute: true},
		{host: "a", port: 10249, noRoute: true},
		// the control network, another node's range nobody owns, unknown names
		{host: "172.18.0.3", port: 6443, noRoute: true},
		{host: "10.42.2.5", port: 80, noRoute: true},
		{host: "apiserver", port: 6443, noRoute: true},
		{host: "10.42.0.7", port: 0, noRoute: true},
	} {
		got, err := r.Resolve(c.host, c.port, kubelet)
		if c.noRoute {
			if !errors.Is(err, ErrNoRoute) {
				t.Errorf("%s:%d: got %+v %v, want no route", c.host, c.port, got, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s:%d: got %+v %v, want %+v", c.host, c.port, got, err, c.want)
		}
	}
}

func TestRoutesFollowNodes(t *testing.T) {
	t.Parallel()
	r := NewRoutes()
	r.SetNode(node("a", "10.42.0.0/24", "10.200.0.129"))
	// a node that claims another's address or range gets neither routed
	r.SetNode(node("evil", "10.42.0.0/25", "10.200.0.129"))
	for _, host := range []string{"10.200.0.129", "10.42.0.7"} {
		if got, err := r.Resolve(host, 10250, []int{10250}); !errors.Is(err, ErrNoRoute) {
			t.Errorf("%s with two owners: %+v %v", host, got, err)
		}
	}
	r.DeleteNode("evil")
	if got, err := r.Resolve("10.42.0.7", 80, nil); err != nil || got.Node != "a" {
		t.Fatalf("after the other node left: %+v %v", got, err)
	}
	// a new pod range replaces the old one
	r.SetNode(node("a", "10.42.5.0/24", "10.200.0.129"))
	if _, err := r.Resolve("10.42.0.7", 80, nil); !errors.Is(err, ErrNoRoute) {
		t.Fatalf("the old range still routes: %v", err)
	}
	r.DeleteNode("a")
	if _, err := r.Resolve("10.200.0.129", 10250, []int{10250}); !errors.Is(err, ErrNoRoute) {
		t.Fatalf("a deleted node still routes: %v", err)
	}
}

// withCert is req as the TLS listener hands it on after verifying cert.
func withCert(req *http.Request, cn string, org ...string) *http.Request {
	if cn != "" {
		req.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{Subject: pkix.Name{CommonName: cn, Organization: org}}}}}
	}
	return req
}

func TestEgressRefusals(t *testing.T) {
	t.Parallel()
	r := NewRoutes()
	r.SetNode(node("a", "10.42.0.0/24", "10.200.0.129"))
	g := New([]int{10250}, "kube-apiserver-egress", r, slog.New(slog.DiscardHandler))
	h := EgressMux(g.EgressHandler(), http.NotFoundHandler())
	for _, c := range []struct {
		name, cn, target string
		want             int
	}{
		{"a node's certificate", "system:node:a", "10.200.0.129:10250", http.StatusForbidden},
		{"no certificate", "", "10.200.0.129:10250", http.StatusForbidden},
		{"not a kubelet port", "kube-apiserver-egress", "10.200.0.129:22", http.StatusForbidden},
		{"the control network", "kube-apiserver-egress", "172.18.0.2:2379", http.StatusForbidden},
		{"no tunnel from the node", "kube-apiserver-egress", "10.42.0.7:8443", http.StatusBadGateway},
	} {
		req := withCert(httptest.NewRequest(http.MethodConnect, "http://"+c.target, nil), c.cn)
		req.Host = c.target
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, w.Code, w.Body, c.want)
		}
	}
	if s := g.Snapshot()["a"]; s.Dials != 1 || s.PodDials != 1 || s.DialFailures != 1 {
		t.Errorf("stats of a: %+v", s)
	}
}

func TestDebugViewsForAdminsOnly(t *testing.T) {
	t.Parallel()
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	h := AdminOnly(ok, "kube-apiserver-egress", slog.New(slog.DiscardHandler))
	for _, c := range []struct {
		name, cn string
		org      []string
		want     int
	}{
		{"admin", "kubesplit-admin", []string{"system:masters"}, http.StatusOK},
		{"the apiserver's egress identity", "kube-apiserver-egress", nil, http.StatusOK},
		{"a node", "system:node:a", []string{"system:nodes"}, http.StatusForbidden},
		{"another role", "system:kube-scheduler", nil, http.StatusForbidden},
		{"no certificate", "", nil, http.StatusForbidden},
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, withCert(httptest.NewRequest(http.MethodGet, "/debug/tunnels", nil), c.cn, c.org...))
		if w.Code != c.want {
			t.Errorf("%s: %d, want %d", c.name, w.Code, c.want)
		}
	}
}

// While the apiserver does not answer yet (a hosted release starts its
// gateway first) the routes still come within a second or two of the API
// answering, not after the informer's backoff (0.8+1.6+3.2+6.4 s for four
// failed lists).
func TestWatchNodesRoutesSoonAfterTheAPIAnswers(t *testing.T) {
	t.Parallel()
	cs := fake.NewClientset(node("a", "10.42.0.0/24", "10.200.0.129"))
	var lists atomic.Int32
	cs.PrependReactor("list", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		if lists.Add(1) <= 4 {
			return true, nil, errors.New("connection refused")
		}
		return false, nil, nil
	})
	r := NewRoutes()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	if err := WatchNodes(ctx, cs, r, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := r.Resolve("10.200.0.129", 10250, []int{10250}); err == nil {
			break
		}
		if time.Since(start) > 8*time.Second {
			t.Fatalf("no route %v after the API answered (%d lists)", time.Since(start), lists.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("routed after %v (%d lists)", time.Since(start).Round(time.Millisecond), lists.Load())
}
