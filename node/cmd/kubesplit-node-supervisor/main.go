// Command kubesplit-node-supervisor is a node container's entrypoint: it runs
// `kubesplit-node agent ARGS` and starts it again whenever it exits, as
// systemd's Restart=always does on a host. Pods (their containerd shims)
// outlive the agent, so restarting the agent leaves them running. SIGTERM or
// SIGINT stops the agent and the supervisor.
//
// It is a separate, standard-library-only program so that it costs about a
// megabyte of memory instead of a copy of the kubelet's.
package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

// exitConfig is kubesplit-node's exit code for a configuration error: restarting will not help.
const exitConfig = 2

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("role", "node-supervisor")
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubesplit-node-supervisor:", err)
		os.Exit(1)
	}
	agent := filepath.Join(filepath.Dir(self), "kubesplit-node")
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	backoff := time.Second
	for {
		cmd := exec.Command(agent, append([]string{"agent"}, os.Args[1:]...)...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		start := time.Now()
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "kubesplit-node-supervisor:", err)
			os.Exit(1)
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
			os.Exit(0)
		case err := <-done:
			if cmd.ProcessState != nil && cmd.ProcessState.ExitCode() == exitConfig {
				log.Error("agent configuration is wrong; not restarting", "err", err)
				os.Exit(exitConfig)
			}
			if time.Since(start) > time.Minute {
				backoff = time.Second
			}
			log.Warn("agent exited; restarting", "err", err, "in", backoff)
			select {
			case <-time.After(backoff):
			case <-sigs:
				os.Exit(0)
			}
			backoff = min(2*backoff, 10*time.Second)
		}
	}
}
