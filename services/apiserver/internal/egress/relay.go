// Package egress is the apiserver's end of the way to the tunnel gateway.
//
// kube-apiserver's egress selector opens one HTTP CONNECT tunnel per
// connection to a kubelet or a pod (every exec, log, port-forward, and the
// first call of each webhook or aggregated API connection). Pointed straight
// at the gateway over mutual TLS, each of those paid a TCP and a TLS
// handshake with the gateway first. Relay is a CONNECT proxy on a unix socket
// in the apiserver's private state directory instead: upstream's egress
// dials it (plain HTTP CONNECT, nothing to negotiate), and Relay carries each
// CONNECT as one stream of a single long-lived HTTP/2 connection to the
// gateway, authenticated once with the apiserver's egress certificate.
// (konnectivity's gRPC mode was the other candidate: upstream makes a new
// gRPC connection per dial in it, so it would not have saved the handshake.)
package egress

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/kubesplit/kubesplit/pkg/netutil"
)

// maxSocketPath is what a unix socket path may hold on Linux (108 with the
// terminating NUL).
const maxSocketPath = 107

// Relay accepts CONNECT requests on Socket and forwards each to Gateway.
type Relay struct {
	// Socket is the unix socket path upstream's egress selector dials.
	Socket string
	// Gateway is HOST:PORT of the gateway's egress listener.
	Gateway string
	// TLS has the apiserver's egress client certificate and the cluster CA.
	TLS *tls.Config
	Log *slog.Logger
	// Early answers a CONNECT at once, before the gateway has, when the
	// gateway accepted one to the same target within EarlyWindow and has
	// refused none since: the apiserver's TLS handshake with the kubelet
	// or pod then rides in the stream's first bytes, which spares one
	// round trip through the gateway per connection (every exec, log and
	// port-forward opens one). If the gateway refuses after all (the node's
	// tunnel went down), the relay closes the connection and logs the
	// gateway's reason; the apiserver sees the connection end, and its next
	// CONNECT to that target waits for the gateway again, so the error it
	// gets names the cause.
	Early bool

	h2   *http2.Transport
	mu   sync.Mutex
	good map[string]time.Time // target → when the gateway last accepted a CONNECT to it
}

// EarlyWindow is how long an accepted CONNECT lets the next ones to the same
// target be answered early.
const EarlyWindow = 2 * time.Minute

// accepted records the gateway's verdict on a CONNECT to target.
func (r *Relay) accepted(target string, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !ok {
		delete(r.good, target)
		return
	}
	now := time.Now()
	if r.good == nil {
		r.good = map[string]time.Time{}
	}
	if len(r.good) >= 4096 { // pods come and go: drop what has expired
		for t, at := range r.good {
			if now.Sub(at) > EarlyWindow {
				delete(r.good, t)
			}
		}
	}
	r.good[target] = now
}

// early says whether a CONNECT to target may be answered before the gateway.
func (r *Relay) early(target string) bool {
	if !r.Early {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.good[target]
	return ok && time.Since(at) <= EarlyWindow
}

// Listen creates the socket (only the apiserver's user may connect to it).
func (r *Relay) Listen() (net.Listener, error) {
	if len(r.Socket) > maxSocketPath {
		return nil, fmt.Errorf("egress socket path %s is longer than %d bytes; use a shorter --data-dir", r.Socket, maxSocketPath)
	}
	if err := os.Remove(r.Socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	ln, err := net.Listen("unix", r.Socket)
	if err != nil {
		return nil, fmt.Errorf("egress socket: %w", err)
	}
	if err := os.Chmod(r.Socket, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// Serve relays connections from ln until ctx ends.
func (r *Relay) Serve(ctx context.Context, ln net.Listener) error {
	cfg := r.TLS.Clone()
	cfg.NextProtos = []string{http2.NextProtoTLS}
	r.h2 = &http2.Transport{
		TLSClientConfig: cfg,
		DialTLSContext: func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
			d := tls.Dialer{NetDialer: netutil.Dialer(), Config: cfg}
			return d.DialContext(ctx, network, addr)
		},
		// a gateway that went away is noticed within ReadIdleTimeout +
		// PingTimeout, and the next CONNECT dials a new connection
		ReadIdleTimeout: 15 * time.Second,
		PingTimeout:     5 * time.Second,
	}
	go func() {
		<-ctx.Done()
		ln.Close()
		r.h2.CloseIdleConnections()
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go r.relay(ctx, conn)
	}
}

// relay serves one CONNECT from the apiserver.
func (r *Relay) relay(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(conn)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	_ = conn.SetReadDeadline(time.Time{})
	if req.Method != http.MethodConnect {
		fmt.Fprint(conn, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
		return
	}
	target := req.Host
	pr, pw := io.Pipe()
	out := &http.Request{Method: http.MethodConnect, URL: &url.URL{Scheme: "https", Host: r.Gateway},
		Host: target, Header: http.Header{}, Body: pr, ContentLength: -1}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	// what the apiserver sends (after what ReadRequest buffered) goes into
	// the stream once the apiserver has its 200
	forward := func() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := io.Copy(pw, br)
			pw.CloseWithError(err)
		}()
	}
	early := r.early(target)
	if early {
		if _, err := fmt.Fprint(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
			pw.Close()
			return
		}
		forward()
	}
	resp, err := r.h2.RoundTrip(out.WithContext(ctx))
	if err != nil {
		pw.Close()
		r.Log.Warn("egress: the gateway is unreachable", "target", target, "err", err)
		if !early {
			fmt.Fprint(conn, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		}
		conn.Close() // (an early one: the apiserver's copy above ends)
		return
	}
	defer resp.Body.Close()
	r.accepted(target, resp.StatusCode == http.StatusOK)
	if resp.StatusCode != http.StatusOK {
		pw.Close()
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if early {
			r.Log.Warn("egress: the gateway refused a connection answered early; the next one to this target waits for the gateway",
				"target", target, "status", resp.Status, "reason", strings.TrimSpace(string(msg)))
		} else {
			fmt.Fprintf(conn, "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", resp.Status, len(msg), msg)
		}
		conn.Close()
		return
	}
	if !early {
		if _, err := fmt.Fprint(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
			pw.Close()
			return
		}
		forward()
	}
	_, _ = io.Copy(conn, resp.Body)
	// the node side ended: end ours, which ends the copy into the stream
	conn.Close()
}
