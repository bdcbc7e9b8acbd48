package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubesplit/kubesplit/e2e/gatewayview"
	"github.com/kubesplit/kubesplit/e2e/hostcluster"
	"github.com/kubesplit/kubesplit/node/tunnel"
	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/localcluster"
	"github.com/kubesplit/kubesplit/pkg/nodeidentity"
	"github.com/kubesplit/kubesplit/pkg/pki"
)

// TestTunnelEgress: the apiserver reaches a "kubelet" that only listens on
// the node's loopback, through the gateway's egress and the node's reverse
// tunnel, with TLS end to end; the gateway lets nobody else through.
func TestTunnelEgress(t *testing.T) {
	needLong(t)
	// the node's kubelet stand-in: a TLS server on 127.0.0.1 that records who called
	var callerCN atomic.Value
	kubelet := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) > 0 {
			callerCN.Store(r.TLS.PeerCertificates[0].Subject.CommonName)
		}
		fmt.Fprintf(w, "kubelet-a:%s", r.URL.Path)
	}))
	port := kubelet.Listener.Addr().(*net.TCPAddr).Port

	c := hostcluster.Start(t, hostcluster.Options{
		// (the controllers give the gateway the right to read Nodes, and nodes their pod ranges)
		Roles: []string{localcluster.Datastore, localcluster.APIServer, localcluster.Controllers, localcluster.TunnelGateway},
		Extra: map[string][]string{localcluster.TunnelGateway: {"--node-ports", strconv.Itoa(port)}},
	})
	d := c.Spec.DataDir
	ca, err := pki.LoadKeyPair(d.ClusterCA().Cert, d.ClusterCA().Key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	// the apiserver verifies kubelets' serving certificates against the cluster
	// CA and the address it dialled, as it would a real node's
	serving, err := ca.Issue(pki.Spec{CommonName: nodeidentity.CommonName("node-a"),
		IPs: []net.IP{net.ParseIP("10.99.0.1"), net.IPv4(127, 0, 0, 1)}, Usage: pki.UsageServer})
	if err != nil {
		t.Fatal(err)
	}
	kubelet.TLS = &tls.Config{ClientAuth: tls.RequestClientCert,
		Certificates: []tls.Certificate{{Certificate: [][]byte{serving.Cert.Raw}, PrivateKey: serving.Key, Leaf: serving.Cert}}}
	kubelet.StartTLS()
	defer kubelet.Close()
	nodeCert := func(cn string, org ...string) tls.Certificate {
		kp, err := ca.Issue(pki.Spec{CommonName: cn, Organization: org, Usage: pki.UsageClient})
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{kp.Cert.Raw}, PrivateKey: kp.Key, Leaf: kp.Cert}
	}
	nodeA := nodeCert(nodeidentity.CommonName("node-a"), nodeidentity.Group)

	var connects atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = tunnel.Run(ctx, tunnel.Config{GatewayURL: c.Spec.GatewayURL(), CA: pool, Cert: nodeA,
			Ports: []int{port}, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), OnConnect: func() { connects.Add(1) }})
	}()
	defer func() { cancel(); wg.Wait() }()
	waitFor(t, 20*time.Second, "the node's tunnel", func(context.Context) (bool, error) { return connects.Load() == 1, nil })

	for _, name := range []string{"node-a", "node-b"} {
		n, err := c.Client.CoreV1().Nodes().Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// the apiserver CONNECTs to this IP at the gateway; nothing is ever sent to it
		ip := map[string]string{"node-a": "10.99.0.1", "node-b": "10.99.0.2"}[name]
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: name}}
		n.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(port)
		if _, err := c.Client.CoreV1().Nodes().UpdateStatus(context.Background(), n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	proxy := func(node string) (string, error) {
		rctx, rcancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer rcancel()
		b, err := c.Client.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes/" + node + "/proxy/healthz").DoRaw(rctx)
		return string(b), err
	}

	t.Run("apiserver-reaches-the-kubelet-through-the-tunnel", func(t *testing.T) {
		// the gateway routes once its Node watch has the address (and the
		// controllers have given it the right to watch)
		waitFor(t, 30*time.Second, "the apiserver to reach node-a", func(context.Context) (bool, error) {
			body, err := proxy("node-a")
			return err == nil && body == "kubelet-a:/healthz", nil
		})
		if cn, _ := callerCN.Load().(string); cn != "kube-apiserver-kubelet-client" {
			t.Fatalf("the kubelet saw client %q: TLS is not end to end from the apiserver", cn)
		}
	})
	t.Run("no-tunnel-no-route", func(t *testing.T) {
		if body, err := proxy("node-b"); err == nil {
			t.Fatalf("node-b has no tunnel but answered %q", body)
		}
	})
	egress := func(cert tls.Certificate, target string) int {
		conn, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(c.Spec.Ports.GatewayEgress), &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: "localhost"})
		if err != nil {
			return 0 // refused in the handshake
		}
		defer conn.Close()
		fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
		resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
		if err != nil {
			return 0
		}
		return resp.StatusCode
	}
	t.Run("egress-only-for-the-apiserver-and-kubelet-ports", func(t *testing.T) {
		target := "10.99.0.1:" + strconv.Itoa(port)
		if code := egress(nodeA, target); code != http.StatusForbidden {
			t.Errorf("a node certificate at the egress: %d, want 403", code)
		}
		// nor may a node read the gateway's per-node views (every node's
		// name and traffic), which an admin may
		for path, want := range map[string]int{"/debug/tunnels": http.StatusForbidden, "/metrics": http.StatusForbidden} {
			cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{nodeA}, ServerName: "localhost"}}}
			resp, err := cl.Get("https://127.0.0.1:" + strconv.Itoa(c.Spec.Ports.GatewayEgress) + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("a node certificate GET %s: %d, want %d", path, resp.StatusCode, want)
			}
		}
		if resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(c.Spec.Ports.GatewayHealth) + "/debug/tunnels"); err != nil || resp.StatusCode != http.StatusNotFound {
			t.Errorf("the health port serves /debug/tunnels: %v %v", resp, err)
		}
		if len(tunnelStats(t, c)) == 0 {
			t.Error("an admin reads no tunnels")
		}
		egressCert, err := tls.LoadX509KeyPair(d.APIServerEgressClient().Cert, d.APIServerEgressClient().Key)
		if err != nil {
			t.Fatal(err)
		}
		if code := egress(egressCert, "10.99.0.1:22"); code != http.StatusForbidden {
			t.Errorf("a port that is not the kubelet's: %d, want 403", code)
		}
		if code := egress(egressCert, target); code != http.StatusOK {
			t.Errorf("the apiserver's certificate: %d, want 200", code)
		}
		// node-a's Node says it owns a pod range, but its agent here knows
		// none: the gateway sends a pod address there, the agent refuses to
		// dial it, and the stream ends without a byte
		var podCIDR string
		waitFor(t, 30*time.Second, "node-a's pod range", func(ctx context.Context) (bool, error) {
			n, err := c.Client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			podCIDR = n.Spec.PodCIDR
			return podCIDR != "", nil
		})
		podIP := strings.TrimSuffix(podCIDR, ".0/24") + ".7"
		var conn *tls.Conn
		var br *bufio.Reader
		waitFor(t, 10*time.Second, "the gateway to route node-a's pod range", func(context.Context) (bool, error) {
			var err error
			conn, err = tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(c.Spec.Ports.GatewayEgress), &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{egressCert}, ServerName: "localhost"})
			if err != nil {
				return false, nil
			}
			fmt.Fprintf(conn, "CONNECT %s:80 HTTP/1.1\r\nHost: %s:80\r\n\r\n", podIP, podIP)
			br = bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
			if err != nil || resp.StatusCode != http.StatusOK {
				conn.Close()
				return false, nil
			}
			return true, nil
		})
		defer conn.Close()
		fmt.Fprintf(conn, "GET / HTTP/1.0\r\n\r\n")
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if b, err := io.ReadAll(br); len(b) != 0 || err != nil {
			t.Errorf("the agent dialled an address outside its pod range: %q %v", b, err)
		}
	})
	t.Run("tunnels-only-for-node-certificates", func(t *testing.T) {
		admin, err := tls.LoadX509KeyPair(d.APIServerKubeletClient().Cert, d.APIServerKubeletClient().Key)
		if err != nil {
			t.Fatal(err)
		}
		other, err := pki.NewCA("other")
		if err != nil {
			t.Fatal(err)
		}
		kp, _ := other.Issue(pki.Spec{CommonName: nodeidentity.CommonName("node-b"), Organization: []string{nodeidentity.Group}, Usage: pki.UsageClient})
		foreign := tls.Certificate{Certificate: [][]byte{kp.Cert.Raw}, PrivateKey: kp.Key}
		for name, cert := range map[string]tls.Certificate{"non-node certificate": admin, "certificate from another CA": foreign} {
			cfg := &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: "localhost"}
			client := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
			resp, err := client.Get(c.Spec.GatewayURL() + tunnel.Path)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode < 400 {
					t.Errorf("%s: tunnel endpoint answered %d", name, resp.StatusCode)
				}
			}
		}
		if snap := tunnelStats(t, c); snap["node-b"].Connected {
			t.Fatal("node-b has a tunnel")
		}
	})
	t.Run("gateway-restart-tunnel-comes-back", func(t *testing.T) {
		gw := c.Proc(localcluster.TunnelGateway)
		if err := gw.Kill(); err != nil {
			t.Fatal(err)
		}
		restarted := time.Now()
		c.Restart(localcluster.TunnelGateway)
		waitFor(t, 20*time.Second, "the tunnel to come back", func(context.Context) (bool, error) { return connects.Load() >= 2, nil })
		t.Logf("tunnel back %.1fs after the gateway was restarted", time.Since(restarted).Seconds())
		waitFor(t, 20*time.Second, "the apiserver to reach node-a again", func(context.Context) (bool, error) {
			body, err := proxy("node-a")
			return err == nil && body == "kubelet-a:/healthz", nil
		})
		if s := tunnelStats(t, c)["node-a"]; !s.Connected || s.Connects < 1 || s.BytesFromNode == 0 {
			t.Fatalf("gateway's view of node-a: %+v", s)
		}
	})
}

func tunnelStats(t *testing.T, c *hostcluster.Cluster) map[string]gatewayview.NodeStats {
	t.Helper()
	gw, err := gatewayview.New(c.Spec.DataDir.Kubeconfig(layout.Admin), "127.0.0.1:"+strconv.Itoa(c.Spec.Ports.GatewayEgress))
	if err != nil {
		t.Fatal(err)
	}
	stats, err := gw.Tunnels(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return stats
}

// TestGatewayRelaysToAPIServer: a node's only endpoint is the gateway; with
// TLS server name "kubernetes" its API traffic is relayed to the apiserver
// untouched, so the client certificate authenticates at the apiserver itself.
func TestGatewayRelaysToAPIServer(t *testing.T) {
	needLong(t)
	c := hostcluster.Start(t, hostcluster.Options{Roles: []string{localcluster.Datastore, localcluster.APIServer, localcluster.TunnelGateway}})
	cfg := rest.CopyConfig(c.Config)
	cfg.Host = c.Spec.GatewayURL()
	cfg.TLSClientConfig.ServerName = "kubernetes"
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	review, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("API through the gateway: %v", err)
	}
	if review.Status.UserInfo.Username != "kubesplit-admin" {
		t.Fatalf("authenticated as %q: the client certificate did not reach the apiserver", review.Status.UserInfo.Username)
	}
	// a watch (long-lived stream) works through the relay too
	w, err := cs.CoreV1().Namespaces().Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	select {
	case e := <-w.ResultChan():
		if e.Object == nil {
			t.Fatal("empty watch event")
		}
	case <-ctx.Done():
		t.Fatal("no watch event through the relay")
	}
}
