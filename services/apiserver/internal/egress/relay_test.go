package egress

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
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// TestRelayMultiplexes: many CONNECTs on the socket ride one TLS connection
// to the "gateway", bytes flow both ways, and a refusal comes back as is.
func TestRelayMultiplexes(t *testing.T) {
	t.Parallel()
	var conns atomic.Int32
	gw := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect || r.ProtoMajor != 2 {
			http.Error(w, "want an HTTP/2 CONNECT", http.StatusBadRequest)
			return
		}
		if r.Host == "10.0.0.9:22" {
			http.Error(w, "no route: port 22", http.StatusForbidden)
			return
		}
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		_ = rc.Flush()
		// an echo server that prefixes the target it was asked for
		sc := bufio.NewScanner(r.Body)
		for sc.Scan() {
			fmt.Fprintf(w, "%s:%s\n", r.Host, sc.Text())
			_ = rc.Flush()
		}
	}))
	gw.EnableHTTP2 = true
	gw.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	gw.StartTLS()
	defer gw.Close()
	pool := x509.NewCertPool()
	pool.AddCert(gw.Certificate())

	r := &Relay{Socket: filepath.Join(t.TempDir(), "egress.sock"), Gateway: strings.TrimPrefix(gw.URL, "https://"),
		TLS: &tls.Config{RootCAs: pool}, Log: slog.New(slog.DiscardHandler)}
	ln, err := r.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Serve(ctx, ln) }()

	connect := func(target string) (*http.Response, net.Conn, *bufio.Reader) {
		c, err := net.Dial("unix", r.Socket)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil {
			t.Fatal(err)
		}
		return resp, c, br
	}
	for i := range 20 {
		target := fmt.Sprintf("10.42.0.%d:8443", i+2)
		resp, c, br := connect(target)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("CONNECT %s: %s", target, resp.Status)
		}
		for _, word := range []string{"hello", "again"} {
			fmt.Fprintf(c, "%s\n", word)
			line, err := br.ReadString('\n')
			if err != nil || line != target+":"+word+"\n" {
				t.Fatalf("echo through %s: %q %v", target, line, err)
			}
		}
		c.Close()
	}
	resp, c, _ := connect("10.0.0.9:22")
	body, _ := io.ReadAll(resp.Body)
	c.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "no route: port 22") {
		t.Fatalf("a refusal: %s %q", resp.Status, body)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d TLS connections to the gateway for 21 CONNECTs, want 1", n)
	}
}

func TestRelaySocketPathTooLong(t *testing.T) {
	t.Parallel()
	r := &Relay{Socket: "/" + strings.Repeat("x", 120) + "/egress.sock"}
	if _, err := r.Listen(); err == nil || !strings.Contains(err.Error(), "shorter --data-dir") {
		t.Fatalf("got %v", err)
	}
}
