package app

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/lifecycle"
	"github.com/kubesplit/kubesplit/pkg/localcluster"
)

func runCommand() *cobra.Command {
	var (
		binDir, dataDir, backend string
		follow                   bool
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Start the five roles as separate processes on this host (a dev cluster)",
		Example: `  kubesplit run                                    # make run: sqlite, bin/ beside this program
  kubesplit run --datastore etcd --data-dir /tmp/k
  kubesplit run --datastore 'postgres://user:pw@127.0.0.1:5432/k8s'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if binDir == "" {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				binDir = filepath.Dir(exe)
			}
			for _, r := range localcluster.Roles {
				if _, err := os.Stat(filepath.Join(binDir, r)); err != nil {
					return fmt.Errorf("role binary %s not found in %s; run 'make build' or pass --bin-dir", r, binDir)
				}
			}
			abs, err := filepath.Abs(dataDir)
			if err != nil {
				return err
			}
			return runLocal(cmd.OutOrStdout(), localcluster.Spec{
				BinDir: binDir, DataDir: layout.Dir(abs), Backend: backend, Ports: localcluster.DefaultPorts(),
			}, follow)
		},
	}
	f := cmd.Flags()
	f.StringVar(&binDir, "bin-dir", "", "directory holding the role binaries (default: next to kubesplit)")
	f.StringVar(&dataDir, "data-dir", ".kubesplit", "data directory (created by init if missing)")
	f.StringVar(&backend, "datastore", "sqlite", "datastore backend: sqlite, etcd, or a postgres:// or mysql:// DSN")
	f.BoolVar(&follow, "follow", false, "also copy every role's log to this terminal")
	return cmd
}

func runLocal(out io.Writer, spec localcluster.Spec, follow bool) error {
	ctx, stop := lifecycle.SignalContext()
	defer stop()

	if _, err := spec.Init(); err != nil {
		return err
	}
	logDir := filepath.Join(string(spec.DataDir), "logs")
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		return err
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	spec.Output = func(role string) io.Writer {
		f, err := os.OpenFile(filepath.Join(logDir, role+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil
		}
		files = append(files, f)
		if follow {
			return io.MultiWriter(f, &prefixWriter{w: out, prefix: "[" + role + "] "})
		}
		return f
	}
	group, err := spec.Group()
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(out, "stopping all roles...")
		group.StopAll(10 * time.Second)
		fmt.Fprintln(out, "stopped")
	}()
	start := time.Now()
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for _, p := range group.Procs {
		fmt.Fprintf(out, "starting %-15s ", p.Name)
		if err := p.Start(); err != nil {
			return err
		}
		if err := p.WaitReady(startCtx); err != nil {
			fmt.Fprintln(out, "FAILED")
			return fmt.Errorf("%w; see %s", err, filepath.Join(logDir, p.Name+".log"))
		}
		fmt.Fprintf(out, "ready (pid %d)\n", p.Pid())
	}
	kc := spec.DataDir.Kubeconfig(layout.Admin)
	fmt.Fprintf(out, `
kubesplit is up in %.1fs (datastore: %s). Logs: %s

  export KUBECONFIG=%s
  kubectl get --raw /readyz?verbose
  kubectl get all -A

Press Ctrl-C to stop every role.
`, time.Since(start).Seconds(), spec.Backend, logDir, kc)

	exited := make(chan string, len(group.Procs))
	for _, p := range group.Procs {
		go func() { <-p.Done(); exited <- p.Name }()
	}
	select {
	case <-ctx.Done():
		return nil
	case name := <-exited:
		p := group.Get(name)
		return fmt.Errorf("%s exited unexpectedly (%v); see %s", name, p.Err(), filepath.Join(logDir, name+".log"))
	}
}

// prefixWriter prefixes each line, so interleaved role logs stay readable.
type prefixWriter struct {
	w       io.Writer
	prefix  string
	midLine bool
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	for _, line := range splitKeep(b) {
		if !p.midLine {
			if _, err := io.WriteString(p.w, p.prefix); err != nil {
				return 0, err
			}
		}
		if _, err := p.w.Write(line); err != nil {
			return 0, err
		}
		p.midLine = line[len(line)-1] != '\n'
	}
	return len(b), nil
}

func splitKeep(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != '\n' {
			i++
		}
		if i < len(b) {
			i++
		}
		out = append(out, b[:i])
		b = b[i:]
	}
	return out
}
