// Package tunnelproto holds what the gateway and the node agent must agree on
// for the reverse tunnel, the node configuration the gateway announces and
// the nodes' CONNECT to the apiserver.
package tunnelproto

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// Path is where a node opens its tunnel on the gateway's node port. (The
// gateway routes by the Node objects' addresses and pod ranges; a node
// declares nothing.)
const Path = "/v1/tunnel"

// NodeConfigPath is where the gateway tells nodes how to reach the
// apiserver (GET, JSON NodeConfig). It holds no secret; a node reads it
// over TLS verified with the cluster CA.
const NodeConfigPath = "/v1/node-config"

// DefaultAPIServerName is the TLS server name that makes the gateway relay
// a node's connection to the apiserver unchanged (TLS end to end between
// the node and the apiserver); the apiserver's certificate holds it.
const DefaultAPIServerName = "kubernetes"

// APIServerAuthority is the target of a node's CONNECT to the apiserver:
// `CONNECT apiserver:443` on the gateway's node port, with the node's
// client certificate, relays the rest of the connection to the apiserver.
const APIServerAuthority = "apiserver:443"

// NodeConfig is what a node learns from its gateway.
type NodeConfig struct {
	// APIServerName is the TLS server name the node uses for the apiserver
	// through the gateway: "kubernetes", or a name of the release's own
	// when an SNI router in front of several gateways routes by it.
	APIServerName string `json:"apiServerName"`
	// LocalAPIServerAddress, when set, is the IP:port the apiserver
	// advertises as the kubernetes Service's endpoint and every node serves
	// itself: the agent holds the IP on a local interface, accepts pods'
	// connections there and carries each over CONNECT to its gateway. Used
	// when the gateway's address routes by server name, which pods' clients
	// (dialling the Service's IP) do not send.
	LocalAPIServerAddress string `json:"localAPIServerAddress,omitempty"`
}

// Validate checks a NodeConfig a gateway sent or is given.
func (c NodeConfig) Validate() error {
	if c.APIServerName == "" || strings.ContainsAny(c.APIServerName, " /:") {
		return fmt.Errorf("apiserver server name %q is not a DNS name", c.APIServerName)
	}
	if c.LocalAPIServerAddress == "" {
		return nil
	}
	return CheckLocalAPIServerAddress(c.LocalAPIServerAddress)
}

// CheckLocalAPIServerAddress accepts an IPv4 IP:port the apiserver can
// advertise (not loopback, link-local, multicast or unspecified: endpoint
// validation refuses those) with a port.
func CheckLocalAPIServerAddress(addr string) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return fmt.Errorf("node-local apiserver address %q: want IPv4:PORT such as 192.0.2.1:6443: %v", addr, err)
	}
	ip := ap.Addr()
	if !ip.Is4() || ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsMulticast() || ip.IsUnspecified() || ap.Port() == 0 {
		return fmt.Errorf("node-local apiserver address %q: want an IPv4 address an apiserver may advertise "+
			"(not loopback, link-local, multicast or 0.0.0.0) and a port, e.g. 192.0.2.1:6443", addr)
	}
	return nil
}

// FetchNodeConfig reads the gateway's NodeConfig (gatewayURL is
// https://HOST:PORT; tlsCfg verifies it with the cluster CA). A gateway
// that does not serve it (an older one) gets the defaults.
func FetchNodeConfig(ctx context.Context, gatewayURL string, tlsCfg *tls.Config) (NodeConfig, error) {
	client := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(gatewayURL, "/")+NodeConfigPath, nil)
	if err != nil {
		return NodeConfig{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return NodeConfig{}, fmt.Errorf("reading the node configuration from %s: %w", gatewayURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return NodeConfig{APIServerName: DefaultAPIServerName}, nil
	}
	if resp.StatusCode != http.StatusOK {
		return NodeConfig{}, fmt.Errorf("reading the node configuration from %s: %s", gatewayURL, resp.Status)
	}
	var c NodeConfig
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&c); err != nil {
		return NodeConfig{}, fmt.Errorf("reading the node configuration from %s: %w", gatewayURL, err)
	}
	if err := c.Validate(); err != nil {
		return NodeConfig{}, fmt.Errorf("the node configuration from %s: %w", gatewayURL, err)
	}
	return c, nil
}

// ConnectAPIServer asks the gateway, on conn (TLS to its node port with the
// node's client certificate, handshake not yet done or done), to relay the
// rest of the connection to the apiserver.
func ConnectAPIServer(conn net.Conn) (net.Conn, error) {
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(conn, "CONNECT "+APIServerAuthority+" HTTP/1.1\r\nHost: "+APIServerAuthority+"\r\n\r\n"); err != nil {
		return nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return nil, fmt.Errorf("CONNECT to the apiserver through the gateway: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, fmt.Errorf("CONNECT to the apiserver through the gateway: %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	_ = conn.SetDeadline(time.Time{})
	if br.Buffered() > 0 { // the apiserver spoke first (it does not in TLS, but keep the bytes)
		return &bufferedConn{Conn: conn, r: br}, nil
	}
	return conn, nil
}

type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite half-closes the underlying connection where it can.
func (c *bufferedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
