// Package tunnel holds the gateway's two sides: nodes' reverse tunnels, and
// the apiserver's HTTP CONNECT egress that rides them.
//
// Tunnels use github.com/rancher/remotedialer (what k3s runs in production):
// one websocket per node multiplexing many TCP streams, dialled outward by the
// node so NAT is no obstacle. apiserver-network-proxy (konnectivity) was the
// alternative; it needs its own agent protocol and gRPC server, while the
// apiserver's plain HTTPConnect egress mode plus remotedialer's dialer gives
// the same result with less code of ours.
package tunnel

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rancher/remotedialer"

	"github.com/kubesplit/kubesplit/pkg/nodeidentity"
)

// Gateway routes the apiserver's connections to nodes through their tunnels.
type Gateway struct {
	// NodePorts are the ports on a node the apiserver may reach (the kubelet's).
	NodePorts []int
	// EgressClientCN is the only certificate CN allowed to use the egress.
	EgressClientCN string
	Log            *slog.Logger

	// Routes says which node's tunnel a CONNECT target rides (from the
	// Node objects).
	Routes *Routes

	rd    *remotedialer.Server
	mu    sync.Mutex
	nodes map[string]*NodeStats
}

// NodeStats is the per-node view served at /debug/tunnels.
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

// New makes a gateway.
func New(nodePorts []int, egressClientCN string, routes *Routes, log *slog.Logger) *Gateway {
	g := &Gateway{NodePorts: nodePorts, EgressClientCN: egressClientCN, Routes: routes, Log: log, nodes: map[string]*NodeStats{}}
	g.rd = remotedialer.New(g.authorize, remotedialer.DefaultErrorWriter)
	return g
}

func (g *Gateway) stats(node string) *NodeStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.nodes[node]
	if s == nil {
		s = &NodeStats{}
		g.nodes[node] = s
	}
	return s
}

// authorize accepts a tunnel only from a verified node certificate and keys
// it by that certificate's node name, so a node can open its own tunnel only.
func (g *Gateway) authorize(req *http.Request) (string, bool, error) {
	leaf := verifiedLeaf(req)
	if leaf == nil {
		g.Log.Warn("tunnel refused: no client certificate from the cluster CA", "remote", req.RemoteAddr)
		return "", false, nil
	}
	node, ok := nodeidentity.FromCert(leaf)
	if !ok {
		g.Log.Warn("tunnel refused: not a node certificate", "remote", req.RemoteAddr, "subject", leaf.Subject.CommonName)
		return "", false, nil
	}
	s := g.stats(node)
	atomic.AddInt64(&s.Connects, 1)
	g.mu.Lock()
	s.Since = time.Now().UTC()
	g.mu.Unlock()
	g.Log.Info("tunnel opened", "node", node, "remote", req.RemoteAddr)
	return node, true, nil
}

func verifiedLeaf(req *http.Request) *x509.Certificate {
	if req.TLS == nil || len(req.TLS.VerifiedChains) == 0 || len(req.TLS.VerifiedChains[0]) == 0 {
		return nil
	}
	return req.TLS.VerifiedChains[0][0]
}

// TunnelHandler accepts nodes' websocket tunnels.
func (g *Gateway) TunnelHandler() http.Handler { return g.rd }

// EgressHandler serves the apiserver's HTTP CONNECT requests: CONNECT
// NODE-IP:PORT (or NODE-NAME:PORT) opens a stream through that node's
// tunnel to its local kubelet PORT, and CONNECT POD-IP:PORT one through the
// tunnel of the node whose pod range holds POD-IP (webhooks, aggregated
// APIs, pods/proxy and services/proxy). Nothing else is routed.
func (g *Gateway) EgressHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodConnect {
			http.Error(w, "only CONNECT is served here", http.StatusMethodNotAllowed)
			return
		}
		leaf := verifiedLeaf(req)
		if leaf == nil || leaf.Subject.CommonName != g.EgressClientCN {
			g.Log.Warn("egress refused: not the apiserver's egress certificate", "remote", req.RemoteAddr)
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		host, portStr, err := net.SplitHostPort(req.Host)
		port, perr := strconv.Atoi(portStr)
		if err != nil || perr != nil {
			http.Error(w, "CONNECT target must be HOST:PORT", http.StatusBadRequest)
			return
		}
		target, err := g.Routes.Resolve(host, port, g.NodePorts)
		if err != nil {
			g.Log.Warn("egress refused", "target", req.Host, "err", err)
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		s := g.stats(target.Node)
		atomic.AddInt64(&s.Dials, 1)
		if target.Pod {
			atomic.AddInt64(&s.PodDials, 1)
		}
		if !g.rd.HasSession(target.Node) {
			atomic.AddInt64(&s.DialFailures, 1)
			http.Error(w, "no tunnel from node "+target.Node, http.StatusBadGateway)
			return
		}
		ctx, cancel := context.WithTimeout(req.Context(), 10*time.Second)
		upstream, err := g.rd.Dialer(target.Node)(ctx, "tcp", target.Addr)
		cancel()
		if err != nil {
			atomic.AddInt64(&s.DialFailures, 1)
			g.Log.Warn("dial through tunnel failed", "node", target.Node, "target", req.Host, "err", err)
			http.Error(w, "dial through tunnel failed", http.StatusBadGateway)
			return
		}
		if req.ProtoMajor == 2 {
			// one stream of the apiserver's long-lived HTTP/2 connection
			// (its egress relay): the stream is the tunnel, both ways
			w.WriteHeader(http.StatusOK)
			rc := http.NewResponseController(w)
			if err := rc.Flush(); err != nil {
				upstream.Close()
				return
			}
			pipe(req.Body, flushWriter{w, rc}, req.Body.Close, upstream, s)
			return
		}
		hj, ok := w.(http.Hijacker)
		if !ok {
			upstream.Close()
			http.Error(w, "cannot hijack", http.StatusInternalServerError)
			return
		}
		client, buf, err := hj.Hijack()
		if err != nil {
			upstream.Close()
			return
		}
		if _, err := client.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
			client.Close()
			upstream.Close()
			return
		}
		pipe(buf, client, client.Close, upstream, s)
	})
}

// pipe copies both ways until either side ends, counting bytes as they
// pass: from the apiserver (a hijacked connection's reader, or an HTTP/2
// request body) to the node, and from the node to the apiserver (the
// connection, or the stream's response). The side that ends first closes
// both, so neither copy outlives the other.
func pipe(fromAPIServer io.Reader, toAPIServer io.Writer, closeAPIServer func() error, upstream net.Conn, s *NodeStats) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(counter{upstream, &s.BytesToNode}, fromAPIServer)
		upstream.Close()
	}()
	go func() {
		defer wg.Done()
		_, _ = io.Copy(counter{toAPIServer, &s.BytesFromNode}, upstream)
		_ = closeAPIServer()
	}()
	wg.Wait()
}

// flushWriter sends every write at once: the stream is interactive (exec,
// port-forward, TLS handshakes), nothing may wait in a buffer.
type flushWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}

type counter struct {
	w io.Writer
	n *int64
}

func (c counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	atomic.AddInt64(c.n, int64(n))
	return n, err
}

// Snapshot returns the per-node view, with Connected filled from the live sessions.
func (g *Gateway) Snapshot() map[string]NodeStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]NodeStats, len(g.nodes))
	for name, s := range g.nodes {
		v := NodeStats{
			Connects: atomic.LoadInt64(&s.Connects), Dials: atomic.LoadInt64(&s.Dials), PodDials: atomic.LoadInt64(&s.PodDials),
			DialFailures: atomic.LoadInt64(&s.DialFailures), BytesToNode: atomic.LoadInt64(&s.BytesToNode),
			BytesFromNode: atomic.LoadInt64(&s.BytesFromNode), Since: s.Since,
		}
		v.Connected = g.rd.HasSession(name)
		out[name] = v
	}
	return out
}

// StatsHandler serves Snapshot as JSON: sessions open, and per node whether
// it is connected, since when, connects (more than one means reconnects),
// dials, dial failures and bytes each way.
func (g *Gateway) StatsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		snap := g.Snapshot()
		open := 0
		for _, s := range snap {
			if s.Connected {
				open++
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"sessionsOpen": open, "nodes": snap})
	})
}
