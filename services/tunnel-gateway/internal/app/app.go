// Package app is the tunnel gateway's command line.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/kubesplit/kubesplit/pkg/config"
	"github.com/kubesplit/kubesplit/pkg/health"
	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/lifecycle"
	"github.com/kubesplit/kubesplit/pkg/logging"
	"github.com/kubesplit/kubesplit/pkg/version"
)

const summary = `kubesplit tunnel-gateway: the endpoint nodes behind NAT dial.
This release is a skeleton: it checks its data directory and serves /healthz.`

// Main runs the gateway and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	var dataDir, healthAddr string
	var showVersion bool
	fs := config.NewFlagSet("tunnel-gateway")
	fs.StringVar(&dataDir, "data-dir", "", "data directory written by 'kubesplit init' (required)")
	fs.StringVar(&healthAddr, "health-address", "0.0.0.0:8133", "host:port of /healthz and /readyz")
	fs.BoolVar(&showVersion, "version", false, "print the version and exit")
	if err := config.Parse(fs, args); err != nil {
		if errors.Is(err, config.ErrHelp) {
			config.PrintUsage(stdout, fs, summary)
			return 0
		}
		fmt.Fprintf(stderr, "tunnel-gateway: %v\n", err)
		return 1
	}
	if showVersion {
		fmt.Fprintln(stdout, version.Info("tunnel-gateway"))
		return 0
	}
	if err := run(dataDir, healthAddr, stderr); err != nil {
		fmt.Fprintf(stderr, "tunnel-gateway: %v\n", err)
		return 1
	}
	return 0
}

func run(dataDir, healthAddr string, stderr io.Writer) error {
	if err := config.CheckDataDir(dataDir, false); err != nil {
		return err
	}
	d := layout.Dir(dataDir)
	if err := config.RequireFiles(d.ClusterCA().Cert); err != nil {
		return err
	}
	l, err := net.Listen("tcp", healthAddr)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w; choose another --health-address", healthAddr, err)
	}
	log := logging.New("tunnel-gateway", stderr, 0)
	ctx, stop := lifecycle.SignalContext()
	defer stop()
	log.Info("serving health only; node tunnels are not implemented in this release", "health", healthAddr)
	return lifecycle.RunAll(ctx, &health.Server{Listener: l, Live: map[string]health.Check{
		"process": func(context.Context) error { return nil },
	}})
}
