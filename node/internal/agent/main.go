package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/kubesplit/kubesplit/pkg/config"
	"github.com/kubesplit/kubesplit/pkg/logging"
	"github.com/kubesplit/kubesplit/pkg/version"
)

// exitConfig is the agent's exit code for a configuration error (the
// supervisor does not restart it); any other failure is retried.
const exitConfig = 2

const summary = `kubesplit-node: the kubesplit node agent (kubelet, containerd, kube-proxy, pod overlay, tunnel).

Usage:
  kubesplit-node run   [flags]   run the agent and restart it when it exits (container entrypoint)
  kubesplit-node agent [flags]   run the agent once
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
	case "run":
		return supervise(args[1:], stderr)
	case "agent":
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, summary)
		return 0
	default:
		fmt.Fprintf(stderr, "kubesplit-node: unknown command %q (run, agent or version)\n", args[0])
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
	if err := Run(ctx, c, tok, log); err != nil {
		log.Error("node agent failed", "err", err)
		return 1
	}
	return 0
}

// supervise runs `kubesplit-node agent ARGS` and starts it again whenever it
// exits, as systemd's Restart=always would: pods (their containerd shims)
// outlive the agent, so a restart leaves them running. SIGTERM stops both.
func supervise(args []string, stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("role", "node-supervisor")
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "kubesplit-node: %v\n", err)
		return 1
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	backoff := time.Second
	for {
		cmd := exec.Command(self, append([]string{"agent"}, args...)...)
		cmd.Stdout, cmd.Stderr = os.Stdout, stderr
		start := time.Now()
		if err := cmd.Start(); err != nil {
			fmt.Fprintf(stderr, "kubesplit-node: %v\n", err)
			return 1
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case s := <-sigs:
			_ = cmd.Process.Signal(s)
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
			}
			return 0
		case err := <-done:
			if cmd.ProcessState != nil && cmd.ProcessState.ExitCode() == exitConfig {
				// a configuration error: restarting will not fix it
				log.Error("agent configuration is wrong; not restarting", "err", err)
				return exitConfig
			}
			if time.Since(start) > time.Minute {
				backoff = time.Second
			}
			log.Warn("agent exited; restarting", "err", err, "in", backoff)
			select {
			case <-time.After(backoff):
			case <-sigs:
				return 0
			}
			backoff = min(2*backoff, 10*time.Second)
		}
	}
}
