package procs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStopKillsTheWholeGroup: a child the process spawned dies with it.
func TestStopKillsTheWholeGroup(t *testing.T) {
	t.Parallel()
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	p := &Process{Name: "sh", Path: "/bin/sh", Args: []string{"-c", "trap '' TERM; sleep 300 & echo $! > " + pidFile + "; wait"}}
	// ready once the shell has written the child's pid completely
	p.Ready = func(context.Context) error {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			return err
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err != nil || pid <= 0 {
			return errors.New("pid not written yet")
		}
		return nil
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(pidFile)
	child, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	// shell and child ignore SIGTERM: Stop must fall back to SIGKILL after the grace
	start := time.Now()
	if err := p.Stop(500 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 500*time.Millisecond || took > 5*time.Second {
		t.Fatalf("Stop took %s; want the 500ms grace, then SIGKILL", took)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := syscall.Kill(child, 0)
		if errors.Is(err, syscall.ESRCH) {
			return
		}
		// a zombie waiting for reaping by init also counts as gone
		if st, _ := os.ReadFile("/proc/" + strconv.Itoa(child) + "/stat"); strings.Contains(string(st), ") Z ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("child %d outlived its group", child)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestWaitReadyFailsFastWhenTheProcessExits(t *testing.T) {
	t.Parallel()
	p := &Process{Name: "false", Path: "/bin/false", Ready: func(context.Context) error { return errors.New("never") }}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	err := p.WaitReady(ctx)
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Fatalf("got %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("WaitReady waited for the timeout instead of noticing the exit")
	}
}
