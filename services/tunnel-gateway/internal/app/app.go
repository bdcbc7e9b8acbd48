// Package app is the tunnel gateway's command line.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/kubesplit/kubesplit/pkg/config"
	"github.com/kubesplit/kubesplit/pkg/health"
	"github.com/kubesplit/kubesplit/pkg/jointoken"
	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/lifecycle"
	"github.com/kubesplit/kubesplit/pkg/logging"
	"github.com/kubesplit/kubesplit/pkg/version"
)

const summary = `kubesplit tunnel-gateway: the endpoint nodes behind NAT dial.
This release serves the cluster CA bundle that join tokens pin (GET /cacerts
on --listen-address, TLS) and /healthz; the apiserver relay and the reverse
tunnels come with the node agent.`

type options struct {
	dataDir, listen, health string
	showVersion             bool
}

// Main runs the gateway and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	var o options
	fs := config.NewFlagSet("tunnel-gateway")
	fs.StringVar(&o.dataDir, "data-dir", "", "data directory written by 'kubesplit init' (required)")
	fs.StringVar(&o.listen, "listen-address", "0.0.0.0:8132", "host:port nodes dial (TLS)")
	fs.StringVar(&o.health, "health-address", "0.0.0.0:8133", "host:port of /healthz and /readyz (plain HTTP)")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	if err := config.Parse(fs, args); err != nil {
		if errors.Is(err, config.ErrHelp) {
			config.PrintUsage(stdout, fs, summary)
			return 0
		}
		fmt.Fprintf(stderr, "tunnel-gateway: %v\n", err)
		return 1
	}
	if o.showVersion {
		fmt.Fprintln(stdout, version.Info("tunnel-gateway"))
		return 0
	}
	if err := run(o, stderr); err != nil {
		fmt.Fprintf(stderr, "tunnel-gateway: %v\n", err)
		return 1
	}
	return 0
}

func run(o options, stderr io.Writer) error {
	if err := config.CheckDataDir(o.dataDir, false); err != nil {
		return err
	}
	d := layout.Dir(o.dataDir)
	if err := config.RequireFiles(d.ClusterCA().Cert, d.TunnelGateway().Cert, d.TunnelGateway().Key); err != nil {
		return err
	}
	caPEM, err := os.ReadFile(d.ClusterCA().Cert)
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(d.TunnelGateway().Cert, d.TunnelGateway().Key)
	if err != nil {
		return fmt.Errorf("loading %s: %w", d.TunnelGateway().Cert, err)
	}
	nodes, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w; choose another --listen-address", o.listen, err)
	}
	hl, err := net.Listen("tcp", o.health)
	if err != nil {
		nodes.Close()
		return fmt.Errorf("cannot listen on %s: %w; choose another --health-address", o.health, err)
	}
	log := logging.New("tunnel-gateway", stderr, 0)
	ctx, stop := lifecycle.SignalContext()
	defer stop()

	mux := http.NewServeMux()
	// The CA bundle is public: a node fetches it before it trusts anything
	// and checks it against the SHA-256 its join token pins.
	mux.HandleFunc("GET "+jointoken.CAPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(caPEM)
	})
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ErrorLog:          nil,
	}
	log.Info("serving", "nodes", o.listen, "health", o.health, "version", version.Version)
	return lifecycle.RunAll(ctx,
		&health.Server{Listener: hl, Live: map[string]health.Check{"process": func(context.Context) error { return nil }}},
		lifecycle.Func(func(ctx context.Context) error {
			go func() {
				<-ctx.Done()
				sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				_ = srv.Shutdown(sctx)
			}()
			if err := srv.ServeTLS(nodes, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}),
	)
}
