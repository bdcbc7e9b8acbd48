package servicelb

import (
	"context"
	"errors"
	"io"
	"net"
	"time"
)

func (f *Forwarder) serveTCP(ctx context.Context, l *net.TCPListener, p Port) {
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			f.Log.Warn("accepting", "port", p.String(), "err", err)
			time.Sleep(100 * time.Millisecond) // (e.g. out of file descriptors)
			continue
		}
		go f.handleTCP(ctx, c, p)
	}
}

func (f *Forwarder) handleTCP(ctx context.Context, c *net.TCPConn, p Port) {
	src := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	if !f.Spec.Allowed(src) {
		f.Log.Debug("refused: source not in loadBalancerSourceRanges", "port", p.String(), "source", src)
		refuse(c)
		return
	}
	up, err := f.dial(ctx, "tcp", p)
	if err != nil {
		f.warnings.warn(f.Log, "tcp/"+p.String(), "no backend", "port", p.String(), "source", src, "err", err)
		refuse(c)
		return
	}
	splice(c, up.(*net.TCPConn))
}

// refuse resets the connection, so the client sees it refused rather than
// closed after a handshake.
func refuse(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

// splice copies both ways, passing each side's end of stream on as a
// half-close, until both directions are done.
func splice(a, b *net.TCPConn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src *net.TCPConn) {
		_, _ = io.Copy(dst, src)
		_ = dst.CloseWrite()
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
	_ = a.Close()
	_ = b.Close()
}
