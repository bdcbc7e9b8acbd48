package tunnel

import (
	"log/slog"
	"net/http"
	"slices"
)

// MastersGroup is the group of cluster-admin certificates (kubesplit's
// admin kubeconfig has it).
const MastersGroup = "system:masters"

// EgressMux sends CONNECT requests to egress and everything else to other:
// the egress port also serves the gateway's per-node views, to the
// certificates AdminOnly lets through.
func EgressMux(egress, other http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodConnect {
			egress.ServeHTTP(w, req)
			return
		}
		other.ServeHTTP(w, req)
	})
}

// AdminOnly serves h to a verified client certificate whose CN is one of
// cns or that is in system:masters; anyone else (a node, a pod, another
// role) gets 403. The TLS listener has verified the chain already.
func AdminOnly(h http.Handler, cns string, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		leaf := verifiedLeaf(req)
		if leaf == nil || (leaf.Subject.CommonName != cns && !slices.Contains(leaf.Subject.Organization, MastersGroup)) {
			subject := ""
			if leaf != nil {
				subject = leaf.Subject.CommonName
			}
			log.Warn("debug view refused", "path", req.URL.Path, "subject", subject, "remote", req.RemoteAddr)
			http.Error(w, "forbidden: the gateway's views are for cluster admins", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, req)
	})
}
