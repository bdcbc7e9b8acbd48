package tunnel

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kubesplit/kubesplit/pkg/pki"
	"github.com/kubesplit/kubesplit/pkg/tunnelproto"
)

// echoServer answers "echo:" + everything it reads until EOF, once per connection.
func echoServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				_, _ = c.Write(append([]byte("echo:"), b...))
			}()
		}
	}()
	return l.Addr().String()
}

// A node's CONNECT apiserver:443 on the node port, over real mutual TLS,
// is relayed to the apiserver; without a node certificate, with another
// identity or to another target it is refused; other requests pass on.
func TestAPIServerConnect(t *testing.T) {
	t.Parallel()
	issue, pool := testIssuer(t)
	serving := issue(pki.Spec{CommonName: "tunnel-gateway", DNSNames: []string{"gw.example"}, Usage: pki.UsageServer})
	nodeCert := issue(pki.Spec{CommonName: "system:node:a", Organization: []string{"system:nodes"}, Usage: pki.UsageClient})
	otherCert := issue(pki.Spec{CommonName: "system:kube-scheduler", Usage: pki.UsageClient})

	apiserver := echoServer(t)
	next := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "next") })
	srv := httptest.NewUnstartedServer(APIServerConnect(apiserver, next, slog.New(slog.DiscardHandler)))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{serving}, ClientCAs: pool, ClientAuth: tls.VerifyClientCertIfGiven}
	srv.StartTLS()
	defer srv.Close()

	dial := func(cert *tls.Certificate) *tls.Conn {
		cfg := &tls.Config{RootCAs: pool, ServerName: "gw.example"}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		c, err := tls.Dial("tcp", srv.Listener.Addr().String(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		return c
	}

	c := dial(&nodeCert)
	conn, err := tunnelproto.ConnectAPIServer(c)
	if err != nil {
		t.Fatalf("a node's CONNECT: %v", err)
	}
	if _, err := io.WriteString(conn, "hello"); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	if got, err := io.ReadAll(conn); err != nil || string(got) != "echo:hello" {
		t.Fatalf("through the CONNECT: %q, %v", got, err)
	}
	c.Close()

	for _, tc := range []struct {
		name string
		cert *tls.Certificate
	}{{"no certificate", nil}, {"not a node", &otherCert}} {
		c := dial(tc.cert)
		if _, err := tunnelproto.ConnectAPIServer(c); err == nil || !strings.Contains(err.Error(), "403") {
			t.Errorf("%s: %v, want 403", tc.name, err)
		}
		c.Close()
	}

	c = dial(&nodeCert)
	_, _ = io.WriteString(c, "CONNECT 10.0.0.1:2379 HTTP/1.1\r\nHost: 10.0.0.1:2379\r\n\r\n")
	b := make([]byte, 12)
	if _, err := io.ReadFull(c, b); err != nil || !strings.Contains(string(b), "403") {
		t.Errorf("CONNECT to another target: %q %v, want 403", b, err)
	}
	c.Close()

	client := srv.Client()
	client.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: pool, ServerName: "gw.example"}
	resp, err := client.Get(srv.URL + "/cacerts")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "next" {
		t.Errorf("a GET did not pass on: %q", body)
	}
}

func TestNodeConfigHandler(t *testing.T) {
	t.Parallel()
	want := tunnelproto.NodeConfig{APIServerName: "kubernetes.cp1.example", LocalAPIServerAddress: "192.0.2.1:6443"}
	w := httptest.NewRecorder()
	NodeConfigHandler(want).ServeHTTP(w, httptest.NewRequest(http.MethodGet, tunnelproto.NodeConfigPath, nil))
	var got tunnelproto.NodeConfig
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || got != want {
		t.Fatalf("%s: %+v %v", w.Body, got, err)
	}
}
