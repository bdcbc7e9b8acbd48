package servicelb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Forwarder carries a Spec's ports to the Service until its context ends.
type Forwarder struct {
	Spec Spec
	Log  *slog.Logger
	// Host is the address it listens on ("": every address of the pod).
	Host string
	// UDPIdle ends a UDP client's session after this long without a
	// datagram either way (default one minute).
	UDPIdle time.Duration
	// Poll is how often the endpoints file is read (default one second).
	Poll time.Duration

	endpoints atomic.Pointer[Endpoints]
	listening atomic.Bool
	warnings  throttle
}

// maxUDPSessions bounds the UDP clients served at once per port; datagrams
// of further clients are dropped until sessions idle out.
const maxUDPSessions = 4096

// Run listens on every port and on the health port, and forwards until ctx
// ends. A port that cannot be listened on is an error.
func (f *Forwarder) Run(ctx context.Context) error {
	if f.UDPIdle == 0 {
		f.UDPIdle = time.Minute
	}
	if f.Poll == 0 {
		f.Poll = time.Second
	}
	f.endpoints.Store(&Endpoints{})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var closers []func() error
	var wg sync.WaitGroup
	defer func() { // close everything, then wait for the loops to see it
		for _, c := range closers {
			_ = c()
		}
		wg.Wait()
	}()
	for _, p := range f.Spec.Ports {
		addr := net.JoinHostPort(f.Host, strconv.Itoa(p.Listen))
		switch p.Protocol {
		case "TCP":
			l, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("listening on %s for %s: %w", addr, p, err)
			}
			closers = append(closers, l.Close)
			wg.Go(func() { f.serveTCP(ctx, l.(*net.TCPListener), p) })
		case "UDP":
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				return fmt.Errorf("listening on %s for %s: %w", addr, p, err)
			}
			closers = append(closers, pc.Close)
			wg.Go(func() { f.serveUDP(ctx, pc.(*net.UDPConn), p) })
		}
	}
	hl, err := net.Listen("tcp", net.JoinHostPort(f.Host, strconv.Itoa(f.Spec.HealthPort)))
	if err != nil {
		return fmt.Errorf("listening on the health port: %w", err)
	}
	srv := &http.Server{Handler: f.healthHandler(), ReadHeaderTimeout: 5 * time.Second}
	closers = append(closers, srv.Close)
	wg.Go(func() { _ = srv.Serve(hl) })
	if f.Spec.Local {
		wg.Go(func() { f.watchEndpoints(ctx) })
	}
	f.listening.Store(true)
	f.Log.Info("forwarding", "service", f.Spec.Service, "ports", fmt.Sprint(f.Spec.Ports), "local", f.Spec.Local,
		"sourceRanges", fmt.Sprint(f.Spec.SourceRanges))
	<-ctx.Done()
	return nil
}

// Ready says whether every port listens. A Local forwarder without
// endpoints is ready too (it refuses connections until it has some): were
// it not, a DaemonSet rollout would stop at the first node without an
// endpoint. Which nodes are listed is the controller's call.
func (f *Forwarder) Ready() error {
	if !f.listening.Load() {
		return errors.New("not listening yet")
	}
	return nil
}

func (f *Forwarder) healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := f.Ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// targets are where a port's traffic may go, in the order to try them.
func (f *Forwarder) targets(p Port) []string {
	if !f.Spec.Local {
		return []string{net.JoinHostPort(f.Spec.ClusterIP, strconv.Itoa(p.Port))}
	}
	eps := (*f.endpoints.Load())[p.Listen]
	out := make([]string, len(eps))
	for i, j := range rand.Perm(len(eps)) {
		out[i] = eps[j].String()
	}
	return out
}

// dial connects to the first target that answers.
func (f *Forwarder) dial(ctx context.Context, network string, p Port) (net.Conn, error) {
	targets := f.targets(p)
	if len(targets) == 0 {
		return nil, errors.New("no endpoint on this node")
	}
	var errs []error
	d := net.Dialer{Timeout: 5 * time.Second}
	for _, t := range targets {
		c, err := d.DialContext(ctx, network, t)
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// watchEndpoints keeps the Local endpoints current from the file the
// kubelet projects from the pod's annotation.
func (f *Forwarder) watchEndpoints(ctx context.Context) {
	var last []byte
	t := time.NewTicker(f.Poll)
	defer t.Stop()
	for {
		b, err := os.ReadFile(f.Spec.EndpointsFile)
		switch {
		case err != nil && !errors.Is(err, os.ErrNotExist):
			f.Log.Warn("reading the endpoints file", "err", err)
		case last == nil || !bytes.Equal(b, last):
			if eps, err := ParseEndpoints(bytes.TrimSpace(b)); err != nil {
				f.Log.Warn("keeping the previous endpoints", "err", err)
			} else {
				f.endpoints.Store(&eps)
				f.Log.Info("local endpoints", "endpoints", eps.Encode())
			}
			last = append([]byte{}, b...)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
