// Package tunnel is the node agent's side of the reverse tunnel: it dials
// the gateway with the node's client certificate, keeps the websocket up
// (redialling with backoff), and lets the gateway open streams only to this
// node's own kubelet ports on loopback and to the pods of this node's own pod
// range: not to other nodes' pods, the node's other ports, or anything else
// the node could reach.
package tunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rancher/remotedialer"

	"github.com/kubesplit/kubesplit/pkg/netutil"
	"github.com/kubesplit/kubesplit/pkg/tunnelproto"
)

// Path is the gateway's tunnel endpoint.
const Path = tunnelproto.Path

// Config says where the tunnel goes and what it may reach.
type Config struct {
	// GatewayURL is https://HOST:PORT of the gateway's node listener.
	GatewayURL string
	// CA verifies the gateway (the cluster CA, fetched with a pinned join token).
	CA *x509.CertPool
	// Cert is the node's client certificate (CN system:node:NAME).
	Cert tls.Certificate
	// GetCert, when set, is called at each dial instead of using Cert (the
	// kubelet rotates its client certificate on disk).
	GetCert func() (tls.Certificate, error)
	// Ports are the local ports the gateway may open streams to (the kubelet's).
	Ports []int
	// PodCIDR, when set, gives this node's pod range once it is known: the
	// gateway may open streams to pods in it, on any port.
	PodCIDR func() (netip.Prefix, bool)
	// LocalAddrs lists the node's own addresses, which are refused even
	// inside the pod range (the bridge's gateway address and the overlay
	// device hold some: the node itself, not a pod). Default: the host's
	// interface addresses.
	LocalAddrs func() []netip.Addr
	Log        *slog.Logger
	// OnConnect, when set, is called each time a tunnel is up.
	OnConnect func()
}

// allowed lets the gateway reach 127.0.0.1 on the kubelet's ports, and the
// addresses of this node's pod range that are not the node's own.
func (c Config) allowed(proto, address string) bool {
	ap, err := netip.ParseAddrPort(address)
	if err != nil || proto != "tcp" {
		return false
	}
	ip := ap.Addr().Unmap()
	if ip == netip.AddrFrom4([4]byte{127, 0, 0, 1}) {
		return slices.Contains(c.Ports, int(ap.Port()))
	}
	if c.PodCIDR == nil || ap.Port() == 0 {
		return false
	}
	cidr, ok := c.PodCIDR()
	if !ok || !cidr.Contains(ip) || ip == cidr.Masked().Addr() || ip == lastAddr(cidr) {
		return false
	}
	local := c.LocalAddrs
	if local == nil {
		local = interfaceAddrs
	}
	return !slices.Contains(local(), ip)
}

// lastAddr is the broadcast address of an IPv4 range (for IPv6, the last one).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func interfaceAddrs() []netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}

// Run keeps the tunnel up until ctx ends.
func Run(ctx context.Context, c Config) error {
	wsURL := "wss://" + strings.TrimPrefix(strings.TrimPrefix(c.GatewayURL, "https://"), "wss://") + Path
	dialer := &websocket.Dialer{
		NetDialContext: netutil.Dialer().DialContext,
		TLSClientConfig: &tls.Config{RootCAs: c.CA, MinVersion: tls.VersionTLS12,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				if c.GetCert == nil {
					return &c.Cert, nil
				}
				cert, err := c.GetCert()
				return &cert, err
			}},
		HandshakeTimeout: 10 * time.Second,
		// remotedialer copies up to 32 KiB from a stream per message; with
		// gorilla's default 4 KiB buffer a message goes out as up to 8
		// websocket frames, each its own TLS record and write. 64 KiB
		// sends it as one frame: a 16 KiB round trip through the whole
		// egress path is 10-15% faster (p50); small messages are unchanged.
		WriteBufferSize: 64 << 10,
	}
	backoff := time.Second
	for ctx.Err() == nil {
		start := time.Now()
		err := remotedialer.ConnectToProxy(ctx, wsURL, nil, c.allowed, dialer, func(context.Context, *remotedialer.Session) error {
			c.Log.Info("tunnel up", "gateway", c.GatewayURL)
			if c.OnConnect != nil {
				c.OnConnect()
			}
			return nil
		})
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > 30*time.Second {
			backoff = time.Second // it was up for a while: retry fast
		}
		c.Log.Warn("tunnel down; redialling", "gateway", c.GatewayURL, "err", errString(err), "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	return nil
}

func errString(err error) string {
	if err == nil {
		return "closed"
	}
	if errors.Is(err, context.Canceled) {
		return "canceled"
	}
	return err.Error()
}
