// Package procs starts real role processes and stops them without leaving
// anything behind. `kubesplit run` and the integration tests share it, so the
// tests drive the same wiring a developer gets from `make run`.
package procs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Probe reports whether a started process is ready.
type Probe func(ctx context.Context) error

// Process is one role binary with its arguments and readiness probe.
type Process struct {
	Name  string
	Path  string
	Args  []string
	Env   []string // added to the current environment
	Ready Probe
	// Output receives stdout and stderr; nil discards them.
	Output io.Writer

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// Start launches the process in its own process group. The kernel kills it if
// the parent dies (Pdeathsig), so a killed runner leaves no orphan behind.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !p.exited() {
		return fmt.Errorf("%s is already running", p.Name)
	}
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Env = append(os.Environ(), p.Env...)
	out := p.Output
	if out == nil {
		out = io.Discard
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

func (p *Process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// Err is the process's exit error once Done is closed.
func (p *Process) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

// Pid is the process id (0 before Start).
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// WaitReady polls the probe until it passes, the process exits, or ctx ends.
func (p *Process) WaitReady(ctx context.Context) error {
	if p.Ready == nil {
		return nil
	}
	done := p.Done()
	var last error
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		last = p.Ready(pctx)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("%s exited before it was ready: %v", p.Name, p.Err())
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w (last probe: %v)", p.Name, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Signal sends sig to the whole process group.
func (p *Process) Signal(sig syscall.Signal) error {
	pid := p.Pid()
	if pid == 0 {
		return errors.New(p.Name + " was never started")
	}
	err := syscall.Kill(-pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// Kill sends SIGKILL to the group and waits for the exit.
func (p *Process) Kill() error {
	if p.Pid() == 0 {
		return nil
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-p.Done()
	return nil
}

// Stop asks the process to end (SIGTERM) and kills it after grace.
func (p *Process) Stop(grace time.Duration) error {
	if p.Pid() == 0 {
		return nil
	}
	done := p.Done()
	if p.exited() {
		return nil
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-done:
		return nil
	case <-time.After(grace):
		return p.Kill()
	}
}

// Group starts processes in order and stops them in reverse.
type Group struct {
	Procs []*Process
}

// StartAll starts each process and waits for it to be ready before the next.
func (g *Group) StartAll(ctx context.Context) error {
	for _, p := range g.Procs {
		if err := p.Start(); err != nil {
			return err
		}
		if err := p.WaitReady(ctx); err != nil {
			return err
		}
	}
	return nil
}

// StopAll stops every process, last first.
func (g *Group) StopAll(grace time.Duration) {
	var wg sync.WaitGroup
	for i := len(g.Procs) - 1; i >= 0; i-- {
		p := g.Procs[i]
		if i == 0 {
			// the datastore goes last, after its clients are gone
			wg.Wait()
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = p.Stop(grace) }()
	}
	wg.Wait()
}

// Get returns the process with the given name.
func (g *Group) Get(name string) *Process {
	for _, p := range g.Procs {
		if p.Name == name {
			return p
		}
	}
	return nil
}
