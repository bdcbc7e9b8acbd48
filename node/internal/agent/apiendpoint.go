package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/kubesplit/kubesplit/pkg/netutil"
	"github.com/kubesplit/kubesplit/pkg/pki"
	"github.com/kubesplit/kubesplit/pkg/tunnelproto"
)

// APIEndpointLabel labels the node-local apiserver address
// (tunnelproto.NodeConfig.LocalAPIServerAddress) on the node's loopback
// interface: an address there is the node's own, so the stack delivers
// pods' Service traffic to it locally (a dummy interface would do the same,
// but not every kernel has the dummy driver).
const APIEndpointLabel = "lo:ksapi"

func (c *Config) nodeConfigFile() string { return c.path("node-config.json") }

// loadNodeConfig asks the gateway how this node reaches the apiserver and
// keeps the answer on disk. A restart while the gateway is away (a
// partition) uses the stored answer after a short wait, so the kubelet
// starts and the node's pods run on.
func (c *Config) loadNodeConfig(ctx context.Context, ca *x509.CertPool, log *slog.Logger) (tunnelproto.NodeConfig, error) {
	var stored *tunnelproto.NodeConfig
	if b, err := os.ReadFile(c.nodeConfigFile()); err == nil {
		var s tunnelproto.NodeConfig
		if json.Unmarshal(b, &s) == nil && s.Validate() == nil {
			stored = &s
		}
	}
	wait := 2 * time.Minute
	if stored != nil {
		wait = 10 * time.Second
	}
	tlsCfg := &tls.Config{RootCAs: ca, MinVersion: tls.VersionTLS12}
	deadline := time.Now().Add(wait)
	for attempt := 0; ; attempt++ {
		nc, err := tunnelproto.FetchNodeConfig(ctx, c.Gateway, tlsCfg)
		if err == nil {
			if b, err := json.Marshal(nc); err == nil {
				if err := pki.WriteFile(c.nodeConfigFile(), b, 0o644); err != nil {
					return nc, err
				}
			}
			return nc, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if stored != nil {
				log.Warn("gateway not reachable: using the node configuration stored at the last start", "err", err)
				return *stored, nil
			}
			return tunnelproto.NodeConfig{}, err
		}
		if attempt%8 == 0 {
			log.Info("waiting for the gateway's node configuration", "err", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// apiEndpoint serves the node-local kubernetes Service endpoint: pods'
// connections to the apiserver (TLS end to end, no server name: they dial
// the Service's IP) are accepted on Addr and each carried over a CONNECT
// to the gateway, authenticated with the node's certificate. It exists for
// gateways behind an SNI router shared by several clusters, which cannot
// route a connection without a server name; the CONNECT's own TLS carries
// the gateway's.
type apiEndpoint struct {
	Addr    netip.AddrPort
	Gateway string // https://HOST:PORT
	CA      *x509.CertPool
	GetCert func() (tls.Certificate, error)
	Log     *slog.Logger
}

// ensureAddr puts Addr's IP on the loopback interface (labelled
// APIEndpointLabel) and drops an address of an earlier configuration.
func (e *apiEndpoint) ensureAddr() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("looking up the loopback interface: %w", err)
	}
	want := &netlink.Addr{IPNet: &net.IPNet{IP: e.Addr.Addr().AsSlice(), Mask: net.CIDRMask(32, 32)}, Label: APIEndpointLabel}
	for _, a := range ourAddrs(lo) {
		if !a.IP.Equal(want.IP) {
			_ = netlink.AddrDel(lo, &a)
		}
	}
	if err := netlink.AddrReplace(lo, want); err != nil {
		return fmt.Errorf("adding %s to the loopback interface: %w", want.IPNet, err)
	}
	return nil
}

// ourAddrs are the loopback addresses labelled APIEndpointLabel.
func ourAddrs(lo netlink.Link) []netlink.Addr {
	addrs, err := netlink.AddrList(lo, netlink.FAMILY_V4)
	if err != nil {
		return nil
	}
	var out []netlink.Addr
	for _, a := range addrs {
		if a.Label == APIEndpointLabel {
			out = append(out, a)
		}
	}
	return out
}

// removeAPIEndpointAddr drops the node-local apiserver address of an
// earlier configuration (the gateway no longer asks for one).
func removeAPIEndpointAddr() {
	if lo, err := netlink.LinkByName("lo"); err == nil {
		for _, a := range ourAddrs(lo) {
			_ = netlink.AddrDel(lo, &a)
		}
	}
}

// Run listens on Addr until ctx ends.
func (e *apiEndpoint) Run(ctx context.Context) error {
	if err := e.ensureAddr(); err != nil {
		return err
	}
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp4", e.Addr.String())
	if err != nil {
		return fmt.Errorf("node-local apiserver endpoint %s: %w", e.Addr, err)
	}
	e.Log.Info("serving the kubernetes Service's endpoint on this node", "address", e.Addr, "gateway", e.Gateway)
	return e.Serve(ctx, l)
}

// Serve carries every connection l accepts to the apiserver until ctx ends.
func (e *apiEndpoint) Serve(ctx context.Context, l net.Listener) error {
	return netutil.Serve(ctx, l, e.carry)
}

func (e *apiEndpoint) carry(ctx context.Context, c net.Conn) {
	defer c.Close()
	up, err := e.dial(ctx)
	if err != nil {
		e.Log.Warn("carrying a connection to the apiserver failed", "from", c.RemoteAddr(), "err", err)
		return
	}
	netutil.Join(c, up)
}

// dial opens TLS to the gateway's node port with the node's certificate
// and CONNECTs to the apiserver.
func (e *apiEndpoint) dial(ctx context.Context) (net.Conn, error) {
	u, err := url.Parse(e.Gateway)
	if err != nil {
		return nil, err
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "443")
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}, Config: &tls.Config{
		RootCAs: e.CA, ServerName: u.Hostname(), MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, err := e.GetCert()
			return &cert, err
		},
	}}
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	up, err := tunnelproto.ConnectAPIServer(conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return up, nil
}
