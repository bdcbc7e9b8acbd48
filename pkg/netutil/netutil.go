// Package netutil makes TCP sockets that notice a dead peer quickly.
//
// A tunnel whose far end vanished (NAT timeout, a pulled cable, a killed VM)
// looks connected until something is sent and never acknowledged. Linux's
// TCP_USER_TIMEOUT closes such a socket once sent data stays unacknowledged
// for UserTimeout; the tunnel's own pings (every 5s) provide the data, so a
// half-open tunnel is torn down and redialled within about UserTimeout.
package netutil

import (
	"context"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// UserTimeout is how long unacknowledged data may wait before the socket is closed.
const UserTimeout = 15 * time.Second

// KeepAlive probes idle connections.
var KeepAlive = net.KeepAliveConfig{Enable: true, Idle: 10 * time.Second, Interval: 5 * time.Second, Count: 3}

func control(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(UserTimeout.Milliseconds()))
	})
	if err != nil {
		return err
	}
	return serr
}

// Listen listens on a TCP address; accepted sockets inherit the user timeout.
func Listen(addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: control, KeepAliveConfig: KeepAlive}
	return lc.Listen(context.Background(), "tcp", addr)
}

// Dialer dials TCP with the user timeout and keepalive set.
func Dialer() *net.Dialer {
	return &net.Dialer{Timeout: 10 * time.Second, Control: control, KeepAliveConfig: KeepAlive}
}

// Serve hands every connection l accepts to handle, each in its own
// goroutine, until ctx ends; then it closes l and returns nil.
func Serve(ctx context.Context, l net.Listener, handle func(context.Context, net.Conn)) error {
	go func() { <-ctx.Done(); l.Close() }()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go handle(ctx, c)
	}
}

// Join copies bytes both ways between a and b until both directions are
// done, half-closing each side as its input ends (so a request/response
// protocol on top completes), then closes both.
func Join(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _, _ = io.Copy(b, a); CloseWrite(b) }()
	go func() { defer wg.Done(); _, _ = io.Copy(a, b); CloseWrite(a) }()
	wg.Wait()
	a.Close()
	b.Close()
}

// CloseWrite half-closes c where it can (TCP, TLS), else closes it.
func CloseWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	} else {
		c.Close()
	}
}
