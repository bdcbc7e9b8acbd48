package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"syscall"

	"github.com/kubesplit/kubesplit/node/internal/svcproxy"
	"github.com/kubesplit/kubesplit/pkg/config"
	"github.com/kubesplit/kubesplit/pkg/logging"
	"github.com/kubesplit/kubesplit/pkg/version"
)

// ExitConfig is the agent's exit code for a configuration error, and for a
// kubelet the version-skew policy forbids with this apiserver (the supervisor
// does not restart it); any other failure is retried.
const ExitConfig = 2

const exitConfig = ExitConfig

const summary = `kubesplit-node: the kubesplit node agent (kubelet, containerd, Service proxy, pod overlay, tunnel).

Usage:
  kubesplit-node agent [flags]   run the agent (kubesplit-node-supervisor restarts it in a node container)
  kubesplit-node debug services  print the eBPF Service proxy's maps (--service-proxy=ebpf) as a table
  kubesplit-node version
Arguments after "--" go to the kubelet unchanged.`

// Main runs the command line and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, summary)
		return 1
	}
	switch args[0] {
	case "version", "--version":
		fmt.Fprintln(stdout, version.Info("node"))
		return 0
	case "agent":
	case "debug":
		if len(args) < 2 || args[1] != "services" {
			fmt.Fprintln(stderr, "kubesplit-node: debug takes one topic: services")
			return 1
		}
		if err := svcproxy.PrintServices(stdout, svcproxy.DefaultPinDir); err != nil {
			fmt.Fprintf(stderr, "kubesplit-node: %v\n", err)
			return 1
		}
		return 0
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, summary)
		return 0
	default:
		fmt.Fprintf(stderr, "kubesplit-node: unknown command %q (agent, debug or version)\n", args[0])
		return 1
	}
	ours, kubeletArgs := config.SplitPassthrough(args[1:])
	var c Config
	fs := config.NewFlagSet("kubesplit-node")
	c.AddFlags(fs)
	if err := config.Parse(fs, ours); err != nil {
		if errors.Is(err, config.ErrHelp) {
			config.PrintUsage(stdout, fs, summary)
			return 0
		}
		fmt.Fprintf(stderr, "kubesplit-node: %v\n", err)
		return exitConfig
	}
	c.KubeletArgs = kubeletArgs
	level, ok := logging.ParseLevel(c.LogLevel)
	if !ok {
		fmt.Fprintf(stderr, "kubesplit-node: --log-level %q is not one of debug, info, warn, error\n", c.LogLevel)
		return exitConfig
	}
	tok, err := c.Validate()
	if err != nil {
		fmt.Fprintf(stderr, "kubesplit-node: %v\n", err)
		return exitConfig
	}
	log := logging.New("node", stderr, level)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return exitCode(Run(ctx, c, tok, log), stderr, log)
}

// exitCode reports Run's error: a version-skew violation is one plain line
// naming both versions, the rule and what to upgrade, and exits with
// ExitConfig, since restarting cannot help.
func exitCode(err error, stderr io.Writer, log *slog.Logger) int {
	var skewErr *version.SkewError
	var cfgErr configError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &skewErr):
		fmt.Fprintf(stderr, "kubesplit-node: %v\n", skewErr)
		return exitConfig
	case errors.As(err, &cfgErr):
		fmt.Fprintf(stderr, "kubesplit-node: %v\n", cfgErr.error)
		return exitConfig
	default:
		log.Error("node agent failed", "err", err)
		return 1
	}
}
