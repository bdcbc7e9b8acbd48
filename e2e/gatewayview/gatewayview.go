// Package gatewayview reads the tunnel gateway's per-node views
// (/debug/tunnels, /metrics), which it serves on its egress port (mTLS) to
// cluster admins only, with the admin kubeconfig's client certificate, as an
// operator would with curl --cert.
package gatewayview

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// NodeStats is one node's entry in /debug/tunnels.
type NodeStats struct {
	Connected     bool      `json:"connected"`
	Since         time.Time `json:"since"`
	Connects      int64     `json:"connects"`
	Dials         int64     `json:"dials"`
	PodDials      int64     `json:"podDials"`
	DialFailures  int64     `json:"dialFailures"`
	BytesToNode   int64     `json:"bytesToNode"`
	BytesFromNode int64     `json:"bytesFromNode"`
}

// Client GETs from one gateway's egress address (HOST:8131).
type Client struct {
	http *http.Client
	addr string
}

// New makes a client from an admin kubeconfig (its client certificate, and
// its CA, which also signed the gateway's serving certificate).
func New(kubeconfig, egressAddr string) (*Client, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	tlsCfg, err := rest.TLSConfigFor(cfg)
	if err != nil {
		return nil, err
	}
	tlsCfg.ServerName = "tunnel-gateway" // a SAN of the gateway's certificate
	return &Client{addr: egressAddr, http: &http.Client{Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: tlsCfg}}}, nil
}

// Get returns the body of path, or an error for any status but 200.
func (c *Client) Get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+c.addr+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return body, nil
}

// Tunnels returns /debug/tunnels per node.
func (c *Client) Tunnels(ctx context.Context) (map[string]NodeStats, error) {
	b, err := c.Get(ctx, "/debug/tunnels")
	if err != nil {
		return nil, err
	}
	var v struct {
		Nodes map[string]NodeStats `json:"nodes"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	return v.Nodes, nil
}
