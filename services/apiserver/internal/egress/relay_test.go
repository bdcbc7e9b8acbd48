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
	"sync"
	"sync/atomic"
	"testing"
	"time"
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

// TestRelayAnswersEarly: a target the gateway accepted is answered at once
// the next time, the apiserver's first bytes riding with the CONNECT; when
// the gateway then refuses it, that connection ends and the next CONNECT
// waits for the gateway and gets its reason. Without Early, every CONNECT
// waits.
func TestRelayAnswersEarly(t *testing.T) {
	t.Parallel()
	var (
		refuse  atomic.Bool
		hold    = make(chan struct{}) // a held CONNECT's 200 waits for it
		holding atomic.Bool
	)
	gw := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refuse.Load() {
			http.Error(w, "no tunnel from node node-1", http.StatusBadGateway)
			return
		}
		if holding.Load() {
			<-hold
		}
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		_ = rc.Flush()
		sc := bufio.NewScanner(r.Body)
		for sc.Scan() {
			fmt.Fprintf(w, "echo:%s\n", sc.Text())
			_ = rc.Flush()
		}
	}))
	gw.EnableHTTP2 = true
	gw.StartTLS()
	t.Cleanup(gw.Close) // last: after the connections below are closed
	var release sync.Once
	t.Cleanup(func() { release.Do(func() { close(hold) }) })
	pool := x509.NewCertPool()
	pool.AddCert(gw.Certificate())
	start := func(early bool) *Relay {
		r := &Relay{Socket: filepath.Join(t.TempDir(), "egress.sock"), Gateway: strings.TrimPrefix(gw.URL, "https://"),
			TLS: &tls.Config{RootCAs: pool}, Log: slog.New(slog.DiscardHandler), Early: early}
		ln, err := r.Listen()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		go func() { _ = r.Serve(ctx, ln) }()
		return r
	}
	type answer struct {
		resp *http.Response
		body string
		err  error
	}
	// connect sends a CONNECT and reads the answer; on a 200 it sends a
	// line and reads its echo (two answers on the channel)
	connect := func(r *Relay, target string) <-chan answer {
		ch := make(chan answer, 1)
		c, err := net.Dial("unix", r.Socket)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		go func() {
			fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
			if err != nil {
				ch <- answer{err: err}
				return
			}
			if resp.StatusCode != http.StatusOK {
				b, _ := io.ReadAll(resp.Body)
				ch <- answer{resp: resp, body: string(b)}
				return
			}
			ch <- answer{resp: resp} // the 200 alone, then the echo
			fmt.Fprintf(c, "hello\n")
			line, err := br.ReadString('\n')
			ch <- answer{resp: resp, body: line, err: err}
		}()
		return ch
	}
	// recv: an answer, or the test fails (a relay that waits for a held
	// gateway would never answer)
	recv := func(ch <-chan answer) answer {
		t.Helper()
		select {
		case a := <-ch:
			return a
		case <-time.After(10 * time.Second):
			t.Fatal("no answer from the relay within 10s")
			return answer{}
		}
	}
	const target = "10.0.0.5:10250"
	r := start(true)

	// first: the relay waits for the gateway (a refusal would come back as is)
	first := connect(r, target)
	if a := recv(first); a.err != nil || a.resp.StatusCode != http.StatusOK {
		t.Fatalf("first CONNECT: %+v", a)
	}
	if a := recv(first); a.err != nil || a.body != "echo:hello\n" {
		t.Fatalf("first CONNECT's echo: %+v", a)
	}
	// second, to the same target: answered while the gateway holds its 200
	holding.Store(true)
	second := connect(r, target)
	if a := recv(second); a.err != nil || a.resp.StatusCode != http.StatusOK {
		t.Fatalf("second CONNECT, not answered early: %+v", a)
	}
	release.Do(func() { close(hold) })
	if a := recv(second); a.err != nil || a.body != "echo:hello\n" {
		t.Fatalf("second CONNECT's echo, sent before the gateway's 200: %+v", a)
	}
	holding.Store(false)
	// another target has no history: it waits, so its refusal says why
	refuse.Store(true)
	if a := recv(connect(r, "10.0.0.6:10250")); a.err != nil || a.resp.StatusCode != http.StatusBadGateway || !strings.Contains(a.body, "no tunnel") {
		t.Fatalf("a new target refused: %+v", a)
	}
	// the node's tunnel is gone: the early answer's connection ends, and
	// the next CONNECT waits and carries the gateway's reason
	third := connect(r, target)
	if a := recv(third); a.err != nil || a.resp.StatusCode != http.StatusOK {
		t.Fatalf("third CONNECT, not answered early: %+v", a)
	}
	if a := recv(third); a.err == nil {
		t.Fatalf("third CONNECT, refused by the gateway: the connection went on: %+v", a)
	}
	if a := recv(connect(r, target)); a.err != nil || a.resp.StatusCode != http.StatusBadGateway || !strings.Contains(a.body, "no tunnel from node node-1") {
		t.Fatalf("the CONNECT after a refusal: %+v", a)
	}

	// without Early, a refusal is always the gateway's answer
	refuse.Store(false)
	w := start(false)
	if a := recv(connect(w, target)); a.err != nil || a.resp.StatusCode != http.StatusOK {
		t.Fatalf("no Early, first CONNECT: %+v", a)
	}
	refuse.Store(true)
	if a := recv(connect(w, target)); a.err != nil || a.resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("no Early, a refused target after an accepted one: %+v", a)
	}
}
