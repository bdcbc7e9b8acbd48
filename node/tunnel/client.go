// Package tunnel is the node agent's side of the reverse tunnel: it dials
// the gateway with the node's client certificate, keeps the websocket up
// (redialling with backoff), and lets the gateway open streams only to this
// node's own allowed local ports.
package tunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
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
	// Addresses are the node's IPs (its InternalIP): the apiserver dials those.
	Addresses []string
	Log       *slog.Logger
	// OnConnect, when set, is called each time a tunnel is up.
	OnConnect func()
}

// allowed lets the gateway reach only 127.0.0.1 on the configured ports.
func (c Config) allowed(proto, address string) bool {
	host, port, err := net.SplitHostPort(address)
	if err != nil || proto != "tcp" || host != "127.0.0.1" {
		return false
	}
	p, err := strconv.Atoi(port)
	return err == nil && slices.Contains(c.Ports, p)
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
	}
	backoff := time.Second
	for ctx.Err() == nil {
		start := time.Now()
		header := http.Header{tunnelproto.AddressesHeader: {strings.Join(c.Addresses, ",")}}
		err := remotedialer.ConnectToProxy(ctx, wsURL, header, c.allowed, dialer, func(context.Context, *remotedialer.Session) error {
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
