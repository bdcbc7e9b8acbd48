package agent

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/kubesplit/kubesplit/pkg/pki"
	"github.com/kubesplit/kubesplit/pkg/tunnelproto"
)

// fakeGateway accepts TLS with a client certificate, answers a CONNECT to
// the apiserver with status, and then echoes what it reads until EOF.
func fakeGateway(t *testing.T, ca *pki.KeyPair, status int) (url string, sawCN chan string) {
	t.Helper()
	serving, err := ca.Issue(pki.Spec{CommonName: "gw", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Usage: pki.UsageServer})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{serving.Cert.Raw}, PrivateKey: serving.Key}},
		ClientCAs:    pool, ClientAuth: tls.RequireAndVerifyClientCert,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	sawCN = make(chan string, 10)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil || req.Method != http.MethodConnect || req.Host != tunnelproto.APIServerAuthority {
					return
				}
				sawCN <- c.(*tls.Conn).ConnectionState().PeerCertificates[0].Subject.CommonName
				_, _ = io.WriteString(c, "HTTP/1.1 "+strconv.Itoa(status)+" "+http.StatusText(status)+"\r\nContent-Length: 0\r\n\r\n")
				if status != http.StatusOK {
					return
				}
				b, _ := io.ReadAll(br)
				_, _ = c.Write(append([]byte("echo:"), b...))
				_ = c.(*tls.Conn).CloseWrite()
			}()
		}
	}()
	return "https://" + l.Addr().String(), sawCN
}

// A pod's connection to the node-local endpoint is carried, with the
// node's certificate, over a CONNECT to the gateway, both ways; a refused
// CONNECT closes the pod's connection.
func TestAPIEndpointCarriesConnections(t *testing.T) {
	t.Parallel()
	ca, err := pki.NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	nodeKP, err := ca.Issue(pki.Spec{CommonName: "system:node:a", Organization: []string{"system:nodes"}, Usage: pki.UsageClient})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	for _, status := range []int{http.StatusOK, http.StatusForbidden} {
		gw, sawCN := fakeGateway(t, ca, status)
		ep := &apiEndpoint{Addr: netip.MustParseAddrPort("192.0.2.1:6443"), Gateway: gw, CA: pool,
			GetCert: func() (tls.Certificate, error) {
				return tls.Certificate{Certificate: [][]byte{nodeKP.Cert.Raw}, PrivateKey: nodeKP.Key}, nil
			}, Log: slog.New(slog.DiscardHandler)}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- ep.Serve(ctx, l) }()
		pod, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = pod.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = pod.Write([]byte("hello"))
		_ = pod.(*net.TCPConn).CloseWrite()
		got, _ := io.ReadAll(pod)
		pod.Close()
		if cn := <-sawCN; cn != "system:node:a" {
			t.Errorf("the gateway saw %q, want the node's certificate", cn)
		}
		want := "echo:hello"
		if status != http.StatusOK {
			want = ""
		}
		if string(got) != want {
			t.Errorf("CONNECT answered %d: the pod read %q, want %q", status, got, want)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve after cancel: %v", err)
		}
	}
}
