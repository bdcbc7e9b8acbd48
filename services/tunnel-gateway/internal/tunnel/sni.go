package tunnel

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/kubesplit/kubesplit/pkg/netutil"
	"github.com/kubesplit/kubesplit/pkg/tunnelproto"
)

// APIServerSNI is the TLS server name a node uses for the apiserver when it
// reaches it through the gateway (kubeconfig tls-server-name: kubernetes).
// Connections with it are relayed to the apiserver byte for byte, so TLS
// stays end to end between kubelet and apiserver; all others are the
// gateway's own (CA bundle, tunnels).
const APIServerSNI = tunnelproto.DefaultAPIServerName

// SNIMux splits one listener by the ClientHello's server name.
type SNIMux struct {
	Listener  net.Listener
	APIServer string // host:port of the apiserver
	// Names are more server names relayed to the apiserver, besides
	// APIServerSNI (a release's own name behind a shared SNI router).
	Names []string
	Log   *slog.Logger

	once  sync.Once
	local chan net.Conn
	done  chan struct{}
}

// Local is the listener of connections the gateway terminates itself.
func (m *SNIMux) Local() net.Listener {
	m.init()
	return &chanListener{m: m}
}

func (m *SNIMux) init() {
	m.once.Do(func() {
		m.local = make(chan net.Conn)
		m.done = make(chan struct{})
	})
}

// Run accepts connections until ctx ends.
func (m *SNIMux) Run(ctx context.Context) error {
	m.init()
	defer close(m.done)
	return serve(ctx, m.Listener, m.route)
}

// serve is netutil.Serve (one accept loop for the mux, the relay and the
// node agent's endpoint).
var serve = netutil.Serve

func (m *SNIMux) route(ctx context.Context, c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReaderSize(c, 5+1<<14) // a TLS record is at most 16 KiB
	name, err := peekServerName(br)
	_ = c.SetReadDeadline(time.Time{})
	conn := &prefixConn{Conn: c, r: br}
	if err != nil || (name != APIServerSNI && !slices.Contains(m.Names, name)) {
		select {
		case m.local <- conn:
		case <-ctx.Done():
			c.Close()
		}
		return
	}
	relay(ctx, conn, m.APIServer, m.Log)
}

// relay copies bytes both ways between c and a new connection to upstream
// until both sides are done, then closes both.
func relay(ctx context.Context, c net.Conn, upstream string, log *slog.Logger) {
	up, err := (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, "tcp", upstream)
	if err != nil {
		log.Warn("relay to the apiserver failed", "apiserver", upstream, "err", err)
		c.Close()
		return
	}
	netutil.Join(c, up)
}

// Relay forwards every connection on Listener to APIServer unchanged. It
// is the in-cluster apiserver endpoint: the apiserver advertises the
// gateway's node-side address as the kubernetes Service's endpoint, so pods
// (which have no route to the control plane) reach the apiserver through
// it, with TLS end to end. Clients use the Service IP, so no SNI is sent and
// the SNIMux cannot be used for this.
type Relay struct {
	Listener  net.Listener
	APIServer string
	Log       *slog.Logger
}

// Run accepts connections until ctx ends.
func (r *Relay) Run(ctx context.Context) error {
	return serve(ctx, r.Listener, func(ctx context.Context, c net.Conn) { relay(ctx, c, r.APIServer, r.Log) })
}

// errPeeked stops the handshake once the ClientHello is read.
var errPeeked = errors.New("peeked")

// peekServerName reads the ClientHello without consuming it and returns its
// SNI, by letting crypto/tls parse it on a read-only copy (no parser of ours).
func peekServerName(br *bufio.Reader) (string, error) {
	// a TLS record header is 5 bytes; the ClientHello fits in the first record
	hdr, err := br.Peek(5)
	if err != nil {
		return "", err
	}
	if hdr[0] != 0x16 { // not a handshake record
		return "", errors.New("not TLS")
	}
	n := int(hdr[3])<<8 | int(hdr[4])
	rec, err := br.Peek(5 + n)
	if err != nil {
		return "", err
	}
	var name string
	_ = tls.Server(readOnlyConn{r: bytes.NewReader(rec)}, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			name = h.ServerName
			return nil, errPeeked
		},
	}).Handshake()
	return name, nil
}

type readOnlyConn struct {
	net.Conn
	r io.Reader
}

func (c readOnlyConn) Read(p []byte) (int, error)     { return c.r.Read(p) }
func (readOnlyConn) Write(p []byte) (int, error)      { return 0, io.ErrClosedPipe }
func (readOnlyConn) Close() error                     { return nil }
func (readOnlyConn) SetDeadline(time.Time) error      { return nil }
func (readOnlyConn) SetReadDeadline(time.Time) error  { return nil }
func (readOnlyConn) SetWriteDeadline(time.Time) error { return nil }
func (readOnlyConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (readOnlyConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }

// prefixConn replays what was peeked before reading on.
type prefixConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

type chanListener struct{ m *SNIMux }

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.m.local:
		return c, nil
	case <-l.m.done:
		return nil, net.ErrClosed
	}
}
func (l *chanListener) Close() error   { return nil }
func (l *chanListener) Addr() net.Addr { return l.m.Listener.Addr() }
