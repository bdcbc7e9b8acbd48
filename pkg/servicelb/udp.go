package servicelb

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"
)

// udpSession is one client's flow: datagrams from the client go out on
// conn, connected to a target, and what comes back goes to the client.
type udpSession struct {
	conn net.Conn
}

func (f *Forwarder) serveUDP(ctx context.Context, pc *net.UDPConn, p Port) {
	var mu sync.Mutex
	sessions := map[netip.AddrPort]*udpSession{}
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range sessions {
			_ = s.conn.Close()
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, src, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			f.warnings.warn(f.Log, "read/"+p.String(), "reading", "port", p.String(), "err", err)
			continue
		}
		if !f.Spec.Allowed(src.Addr()) {
			f.Log.Debug("dropped: source not in loadBalancerSourceRanges", "port", p.String(), "source", src)
			continue
		}
		mu.Lock()
		s := sessions[src]
		if s == nil && len(sessions) < maxUDPSessions {
			conn, err := f.dial(ctx, "udp", p)
			if err != nil {
				mu.Unlock()
				f.warnings.warn(f.Log, "udp/"+p.String(), "no backend", "port", p.String(), "source", src.Addr().Unmap(), "err", err)
				continue
			}
			s = &udpSession{conn: conn}
			sessions[src] = s
			go func() {
				f.udpReplies(pc, src, s)
				mu.Lock()
				delete(sessions, src)
				mu.Unlock()
			}()
		}
		mu.Unlock()
		if s == nil {
			continue // too many clients at once
		}
		_ = s.conn.SetReadDeadline(time.Now().Add(f.UDPIdle))
		_, _ = s.conn.Write(buf[:n])
	}
}

// udpReplies sends the target's datagrams back to the client until the
// session idles out.
func (f *Forwarder) udpReplies(pc *net.UDPConn, client netip.AddrPort, s *udpSession) {
	defer s.conn.Close()
	buf := make([]byte, 64<<10)
	for {
		_ = s.conn.SetReadDeadline(time.Now().Add(f.UDPIdle))
		n, err := s.conn.Read(buf)
		if err != nil {
			return
		}
		if _, err := pc.WriteToUDPAddrPort(buf[:n], client); err != nil {
			return
		}
	}
}
