package tunnel

// Latency of the apiserver → gateway → node tunnel → target path, hop by
// hop, in one process on 127.0.0.1 (no containers): a real Gateway with its
// node listener behind the SNI mux and its mTLS egress listener, a node
// agent's remotedialer session configured as node/tunnel configures it, an
// echo server standing for the kubelet or a pod, and an HTTP/2 client
// configured as the apiserver's egress relay (services/apiserver/internal/
// egress) sends CONNECTs as streams of one connection.
//
//	go test -run '^$' -bench . -benchtime 2s -count 5 -cpu 1,2 -p 1 ./internal/tunnel/
//
// BenchmarkTunnelConnect: CONNECT until the 200 (and with /first-byte, one
// round trip more: the node's dial of the target happens then), against a
// direct TCP dial and first round trip; h1 is a new mTLS connection and
// HTTP/1.1 CONNECT per dial (--egress-relay=false).
// BenchmarkRoundTrip: one ping-pong of SIZE bytes on an open connection:
// direct TCP (the baseline), the gateway's remotedialer dialer alone, an
// HTTP/2 CONNECT stream piped by the gateway straight to the echo server
// (no tunnel), the full path over HTTP/2 (the relay's) and over HTTP/1.1.

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rancher/remotedialer"
	"github.com/sirupsen/logrus"
	"golang.org/x/net/http2"

	"github.com/kubesplit/kubesplit/pkg/bootstrap"
	"github.com/kubesplit/kubesplit/pkg/netutil"
	"github.com/kubesplit/kubesplit/pkg/pki"
	"github.com/kubesplit/kubesplit/pkg/tunnelproto"
)

const benchNodeIP = "10.200.0.129"

type benchEnv struct {
	gw       *Gateway
	echo     string // the echo server ("the kubelet")
	egress   string // the gateway's egress listener
	h2direct string // an egress-like listener piping CONNECTs straight to echo
	target   string // CONNECT target routed to the echo server through node a
	h2       *http2.Transport
	clientTL *tls.Config // the apiserver's egress client
}

// newBenchEnv stands the whole path up and tears it down when b ends.
func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	logrus.SetLevel(logrus.WarnLevel) // remotedialer logs every session at info
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)

	issue, pool := testIssuer(b)
	serving := issue(pki.Spec{CommonName: "tunnel-gateway", DNSNames: []string{"gw.example"}, Usage: pki.UsageServer})
	nodeCert := issue(pki.Spec{CommonName: "system:node:a", Organization: []string{"system:nodes"}, Usage: pki.UsageClient})
	egressCert := issue(pki.Spec{CommonName: bootstrap.APIServerEgressClientCN, Usage: pki.UsageClient})

	e := &benchEnv{echo: benchEcho(b)}
	_, portStr, _ := net.SplitHostPort(e.echo)
	echoPort, _ := strconv.Atoi(portStr)
	e.target = net.JoinHostPort(benchNodeIP, portStr)

	routes := NewRoutes()
	routes.SetNode(node("a", "10.42.0.0/24", benchNodeIP))
	e.gw = New([]int{echoPort}, bootstrap.APIServerEgressClientCN, routes, slog.New(slog.DiscardHandler))

	listen := func() net.Listener {
		l, err := netutil.Listen("127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		return l
	}
	serve := func(l net.Listener, h http.Handler, cfg *tls.Config) {
		// as app.serveTLS
		srv := &http.Server{Handler: h, TLSConfig: cfg, ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: stdlog.New(io.Discard, "", 0)}
		go func() { _ = srv.ServeTLS(l, "", "") }()
		b.Cleanup(func() { _ = srv.Close() })
	}

	// the node listener, as app.run wires it: SNI mux in front
	nodeLn := listen()
	mux := &SNIMux{Listener: nodeLn, APIServer: "127.0.0.1:1", Log: slog.New(slog.DiscardHandler)}
	local := mux.Local()
	go func() { _ = mux.Run(ctx) }()
	nodes := http.NewServeMux()
	nodes.Handle("GET "+tunnelproto.Path, e.gw.TunnelHandler())
	serve(local, nodes, &tls.Config{Certificates: []tls.Certificate{serving}, ClientCAs: pool,
		ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12})

	egressTLS := &tls.Config{Certificates: []tls.Certificate{serving}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	egressLn := listen()
	e.egress = egressLn.Addr().String()
	serve(egressLn, EgressMux(e.gw.EgressHandler(), http.NotFoundHandler()), egressTLS)

	// the same HTTP/2 server and pipe, but no tunnel: CONNECT goes straight
	// to the echo server
	directLn := listen()
	e.h2direct = directLn.Addr().String()
	serve(directLn, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		up, err := net.Dial("tcp", e.echo)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		if err := rc.Flush(); err != nil {
			up.Close()
			return
		}
		pipe(req.Body, flushWriter{w, rc}, req.Body.Close, up, &NodeStats{})
	}), egressTLS)

	// the node agent, as node/tunnel.Run dials (allowed: the "kubelet port")
	allowed := func(proto, address string) bool {
		return proto == "tcp" && address == net.JoinHostPort("127.0.0.1", portStr)
	}
	dialer := &websocket.Dialer{
		NetDialContext: netutil.Dialer().DialContext,
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, ServerName: "gw.example",
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &nodeCert, nil }},
		HandshakeTimeout: 10 * time.Second,
		WriteBufferSize:  64 << 10, // as node/tunnel
	}
	wsURL := "wss://" + nodeLn.Addr().String() + tunnelproto.Path
	agentDone := make(chan struct{})
	go func() {
		defer close(agentDone)
		_ = remotedialer.ConnectToProxy(ctx, wsURL, nil, allowed, dialer, nil)
	}()
	b.Cleanup(func() { cancel(); <-agentDone })
	for deadline := time.Now().Add(10 * time.Second); !e.gw.rd.HasSession("a"); {
		if time.Now().After(deadline) {
			b.Fatal("the node's tunnel did not come up")
		}
		time.Sleep(5 * time.Millisecond)
	}

	// the apiserver's egress relay, as services/apiserver/internal/egress
	e.clientTL = &tls.Config{RootCAs: pool, ServerName: "gw.example", MinVersion: tls.VersionTLS12,
		Certificates: []tls.Certificate{egressCert}}
	cfg := e.clientTL.Clone()
	cfg.NextProtos = []string{http2.NextProtoTLS}
	e.h2 = &http2.Transport{
		TLSClientConfig: cfg,
		DialTLSContext: func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
			d := tls.Dialer{NetDialer: netutil.Dialer(), Config: cfg}
			return d.DialContext(ctx, network, addr)
		},
		ReadIdleTimeout: 15 * time.Second,
		PingTimeout:     5 * time.Second,
	}
	b.Cleanup(e.h2.CloseIdleConnections)
	return e
}

var (
	benchEpoch = time.Now()
	// echoReadAt is when the echo server last read (since benchEpoch): it
	// splits a round trip into its way there and its way back.
	echoReadAt atomic.Int64
)

// benchEcho answers every read with the same bytes, per connection.
func benchEcho(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := c.Read(buf)
					echoReadAt.Store(int64(time.Since(benchEpoch)))
					if n > 0 {
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

// h2Stream is one CONNECT stream of the relay's HTTP/2 connection.
type h2Stream struct {
	w      *io.PipeWriter
	body   io.ReadCloser
	cancel context.CancelFunc
}

func (s *h2Stream) Read(p []byte) (int, error)  { return s.body.Read(p) }
func (s *h2Stream) Write(p []byte) (int, error) { return s.w.Write(p) }
func (s *h2Stream) Close() error {
	s.w.Close()
	s.body.Close()
	s.cancel()
	return nil
}

// connectH2 sends CONNECT target as the relay does and returns at the 200.
func (e *benchEnv) connectH2(gateway, target string) (*h2Stream, error) {
	pr, pw := io.Pipe()
	out := &http.Request{Method: http.MethodConnect, URL: &url.URL{Scheme: "https", Host: gateway},
		Host: target, Header: http.Header{}, Body: pr, ContentLength: -1}
	ctx, cancel := context.WithCancel(context.Background())
	resp, err := e.h2.RoundTrip(out.WithContext(ctx))
	if err != nil {
		cancel()
		pw.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		pw.Close()
		resp.Body.Close()
		return nil, errors.New("CONNECT: " + resp.Status)
	}
	return &h2Stream{w: pw, body: resp.Body, cancel: cancel}, nil
}

// connectH1 is the per-dial HTTP/1.1 CONNECT (--egress-relay=false).
func (e *benchEnv) connectH1(target string) (io.ReadWriteCloser, error) {
	cfg := e.clientTL.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	c, err := tls.DialWithDialer(netutil.Dialer(), "tcp", e.egress, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := io.WriteString(c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n"); err != nil {
		c.Close()
		return nil, err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, errors.New("CONNECT over HTTP/1.1 failed")
	}
	return struct {
		io.Reader
		io.Writer
		io.Closer
	}{br, c, c}, nil
}

// pingPong times b.N round trips of size bytes on c, each gap after the
// last (outside the timer: with a gap every process on the way has gone
// idle, as between an exec's messages, and has to be woken up), and reports
// their p50 besides the mean (ns/op, which a loaded machine's outliers
// move), and the p50 of the way there (to the echo server's read) and back.
func pingPong(b *testing.B, c io.ReadWriter, size int, gap time.Duration) {
	b.Helper()
	out := make([]byte, size)
	for i := range out {
		out[i] = byte(i)
	}
	in := make([]byte, size)
	lat := make([]time.Duration, 0, b.N)
	there := make([]time.Duration, 0, b.N)
	b.SetBytes(int64(2 * size))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if gap > 0 {
			b.StopTimer()
			time.Sleep(gap)
			b.StartTimer()
		}
		start := time.Since(benchEpoch)
		if _, err := c.Write(out); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, in); err != nil {
			b.Fatal(err)
		}
		end := time.Since(benchEpoch)
		lat = append(lat, end-start)
		there = append(there, time.Duration(echoReadAt.Load())-start)
	}
	b.StopTimer()
	if string(in) != string(out) {
		b.Fatal("the echo differs")
	}
	back := make([]time.Duration, len(lat))
	for i := range lat {
		back[i] = lat[i] - there[i]
	}
	reportP50(b, lat)
	slices.Sort(there)
	slices.Sort(back)
	b.ReportMetric(float64(there[len(there)/2].Nanoseconds()), "there-ns")
	b.ReportMetric(float64(back[len(back)/2].Nanoseconds()), "back-ns")
}

func reportP50(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
}

// dials times b.N dials (each up to its first byte when firstByte) and
// reports their p50; the teardown of each is left 1 ms to settle outside
// the timer, so it does not slow the next one down.
func dials(b *testing.B, firstByte bool, dial func() (io.ReadWriteCloser, error)) {
	b.Helper()
	lat := make([]time.Duration, 0, b.N)
	one := make([]byte, 1)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		c, err := dial()
		if err != nil {
			b.Fatal(err)
		}
		if firstByte {
			if _, err := c.Write(one); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, one); err != nil {
				b.Fatal(err)
			}
		}
		lat = append(lat, time.Since(start))
		b.StopTimer()
		c.Close()
		time.Sleep(time.Millisecond)
		b.StartTimer()
	}
	b.StopTimer()
	reportP50(b, lat)
}

func BenchmarkTunnelConnect(b *testing.B) {
	e := newBenchEnv(b)
	// the relay's connection to the gateway is up before we time anything
	if s, err := e.connectH2(e.egress, e.target); err != nil {
		b.Fatal(err)
	} else {
		s.Close()
	}
	h2 := func() (io.ReadWriteCloser, error) { return e.connectH2(e.egress, e.target) }
	b.Run("direct/first-byte", func(b *testing.B) {
		dials(b, true, func() (io.ReadWriteCloser, error) { return net.Dial("tcp", e.echo) })
	})
	b.Run("h2", func(b *testing.B) { dials(b, false, h2) })
	b.Run("h2/first-byte", func(b *testing.B) { dials(b, true, h2) })
	b.Run("h1/first-byte", func(b *testing.B) {
		dials(b, true, func() (io.ReadWriteCloser, error) { return e.connectH1(e.target) })
	})
}

// BenchmarkRoundTrip: PATH/SIZE back to back; PATH/64/idle with 1 ms
// between round trips.
func BenchmarkRoundTrip(b *testing.B) {
	e := newBenchEnv(b)
	paths := []struct {
		name string
		dial func(b *testing.B) io.ReadWriteCloser
	}{
		{"direct", func(b *testing.B) io.ReadWriteCloser {
			c, err := net.Dial("tcp", e.echo)
			if err != nil {
				b.Fatal(err)
			}
			return c
		}},
		{"remotedialer", func(b *testing.B) io.ReadWriteCloser {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := e.gw.rd.Dialer("a")(ctx, "tcp", e.echo)
			if err != nil {
				b.Fatal(err)
			}
			return c
		}},
		{"h2-no-tunnel", func(b *testing.B) io.ReadWriteCloser {
			s, err := e.connectH2(e.h2direct, e.echo)
			if err != nil {
				b.Fatal(err)
			}
			return s
		}},
		{"h2-tunnel", func(b *testing.B) io.ReadWriteCloser {
			s, err := e.connectH2(e.egress, e.target)
			if err != nil {
				b.Fatal(err)
			}
			return s
		}},
		{"h1-tunnel", func(b *testing.B) io.ReadWriteCloser {
			c, err := e.connectH1(e.target)
			if err != nil {
				b.Fatal(err)
			}
			return c
		}},
	}
	for _, v := range []struct {
		name string
		size int
		gap  time.Duration
	}{{"64", 64, 0}, {"64/idle", 64, time.Millisecond}, {"16384", 16 << 10, 0}} {
		for _, p := range paths {
			b.Run(p.name+"/"+v.name, func(b *testing.B) {
				c := p.dial(b)
				defer c.Close()
				pingPong(b, c, v.size, v.gap)
			})
		}
	}
}
