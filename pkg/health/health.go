// Package health serves /healthz, /livez and /readyz for roles that are not
// upstream Kubernetes components (those bring their own).
package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"
)

// Check reports whether one part of the role is healthy.
type Check func(ctx context.Context) error

// Server serves the health endpoints. Health carries no secrets and is the
// only thing kubesplit serves without authentication.
type Server struct {
	Listener net.Listener
	// Live checks answer /livez and /healthz; Ready checks also answer /readyz.
	Live, Ready map[string]Check
	Timeout     time.Duration
	// Extra are more unauthenticated read-only handlers by path (no secrets).
	Extra map[string]http.Handler
}

// Run implements lifecycle.Runnable.
func (s *Server) Run(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", s.handler(s.Live))
	mux.HandleFunc("/livez", s.handler(s.Live))
	mux.HandleFunc("/readyz", s.handler(merge(s.Live, s.Ready)))
	for path, h := range s.Extra {
		mux.Handle(path, h)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	if err := srv.Serve(s.Listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("health server: %w", err)
	}
	return nil
}

func merge(a, b map[string]Check) map[string]Check {
	out := map[string]Check{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

func (s *Server) handler(checks map[string]Check) http.HandlerFunc {
	timeout := s.Timeout
	if timeout == 0 {
		timeout = 3 * time.Second
	}
	names := make([]string, 0, len(checks))
	for n := range checks {
		names = append(names, n)
	}
	sort.Strings(names)
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		var b strings.Builder
		failed := false
		for _, n := range names {
			if err := checks[n](ctx); err != nil {
				failed = true
				fmt.Fprintf(&b, "[-]%s failed: %v\n", n, err)
			} else {
				fmt.Fprintf(&b, "[+]%s ok\n", n)
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if failed {
			w.WriteHeader(http.StatusServiceUnavailable)
			b.WriteString("unhealthy\n")
		} else if r.URL.Query().Has("verbose") {
			b.WriteString("ok\n")
		} else {
			b.Reset()
			b.WriteString("ok")
		}
		_, _ = w.Write([]byte(b.String()))
	}
}
