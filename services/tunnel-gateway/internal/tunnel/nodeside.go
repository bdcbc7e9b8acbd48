package tunnel

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/kubesplit/kubesplit/pkg/nodeidentity"
	"github.com/kubesplit/kubesplit/pkg/tunnelproto"
)

// NodeConfigHandler serves what nodes learn from the gateway (no secret:
// the apiserver's server name and the node-local endpoint address).
func NodeConfigHandler(c tunnelproto.NodeConfig) http.Handler {
	b, _ := json.Marshal(c)
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	})
}

// APIServerConnect serves `CONNECT apiserver:443` on the node port to
// verified node certificates: the rest of the connection is relayed to
// the apiserver byte for byte (a pod's TLS to the apiserver, carried by
// its node's agent from the node-local kubernetes endpoint). Every other
// request goes to next. The apiserver authenticates what it carries; the
// node certificate keeps the relay to the cluster's own nodes.
func APIServerConnect(apiserver string, next http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodConnect {
			next.ServeHTTP(w, req)
			return
		}
		if req.Host != tunnelproto.APIServerAuthority {
			http.Error(w, "only CONNECT "+tunnelproto.APIServerAuthority+" is served here", http.StatusForbidden)
			return
		}
		leaf := verifiedLeaf(req)
		if leaf == nil {
			log.Warn("apiserver CONNECT refused: no client certificate from the cluster CA", "remote", req.RemoteAddr)
			http.Error(w, "forbidden: a node certificate is required", http.StatusForbidden)
			return
		}
		if _, ok := nodeidentity.FromCert(leaf); !ok {
			log.Warn("apiserver CONNECT refused: not a node certificate", "remote", req.RemoteAddr, "subject", leaf.Subject.CommonName)
			http.Error(w, "forbidden: a node certificate is required", http.StatusForbidden)
			return
		}
		hj, ok := w.(http.Hijacker)
		if !ok { // HTTP/2: agents speak HTTP/1.1 here
			http.Error(w, "CONNECT over HTTP/1.1 only", http.StatusHTTPVersionNotSupported)
			return
		}
		client, buf, err := hj.Hijack()
		if err != nil {
			return
		}
		if _, err := client.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
			client.Close()
			return
		}
		// (the buffer holds what the client sent right after its CONNECT)
		relay(context.WithoutCancel(req.Context()), &prefixConn{Conn: client, r: buf.Reader}, apiserver, log)
	})
}
