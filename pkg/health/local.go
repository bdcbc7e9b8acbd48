package health

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// LocalRelay serves /healthz, /livez and /readyz in plain HTTP by asking
// the role's own HTTPS endpoint (Target, e.g. https://127.0.0.1:6443): what
// the images' tiny health check (kubesplit-probe, no TLS) and a kubelet's
// httpGet probe read. It answers with the target's status and body and
// serves nothing else, so it may listen beyond loopback (the Helm chart
// binds the pod's address: the kubelet's probe then starts no process in
// the container): health is what every role shows without credentials. It
// does not verify the target's certificate: the target is this process's
// own port on loopback, no credentials are sent and only the health of the
// role is read.
type LocalRelay struct {
	Listener net.Listener
	Target   string
}

// Listen opens addr, an IP:port (flag names it in errors).
func Listen(addr, flag string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil {
		return nil, fmt.Errorf("%s %q: want an IP:port such as 127.0.0.1:6080 (loopback: the container's own check) or 0.0.0.0:6080 (the kubelet's httpGet probe)", flag, addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %s: %w; choose another %s", addr, err, flag)
	}
	return l, nil
}

// Run serves until ctx ends.
func (r *LocalRelay) Run(ctx context.Context) error {
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // see the type's comment
	}}
	mux := http.NewServeMux()
	for _, path := range []string{"/healthz", "/livez", "/readyz"} {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, req *http.Request) {
			resp, err := client.Get(r.Target + path)
			if err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			defer resp.Body.Close()
			w.WriteHeader(resp.StatusCode)
			_, _ = io.Copy(w, io.LimitReader(resp.Body, 64<<10))
		})
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if err := srv.Serve(r.Listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// StartLocalRelay serves the relay on addr (flag names it in errors) for
// the life of the process, for the role's HTTPS port on bindAddress:port.
func StartLocalRelay(addr, flag, bindAddress string, port int) error {
	l, err := Listen(addr, flag)
	if err != nil {
		return err
	}
	host := bindAddress
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	r := &LocalRelay{Listener: l, Target: "https://" + net.JoinHostPort(host, fmt.Sprint(port))}
	go func() { _ = r.Run(context.Background()) }()
	return nil
}
