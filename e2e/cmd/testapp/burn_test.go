package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestBurnDeadline(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for arg, want := range map[string]time.Time{
		"90s":                  now.Add(90 * time.Second),
		"0s":                   now,
		"2026-12-01T12:01:00Z": now.Add(time.Minute),
		"2026-12-01T11:00:00Z": now.Add(-time.Hour), // past: no burn at all
		"1h":                   now.Add(maxBurn),    // bounded
		"2027-01-01T00:00:00Z": now.Add(maxBurn),
	} {
		got, err := burnDeadline(arg, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("burnDeadline(%q) = %s, %v; want %s", arg, got, err, want)
		}
	}
	for _, bad := range []string{"", "-5s", "soon", "12:00"} {
		if _, err := burnDeadline(bad, now); err == nil {
			t.Errorf("burnDeadline(%q): no error", bad)
		}
	}
}

// spin uses CPU until its deadline, and stops early when cancelled.
func TestSpin(t *testing.T) {
	t.Parallel()
	before := cpuTime(t)
	start := time.Now()
	spin(context.Background(), start.Add(300*time.Millisecond))
	wall, cpu := time.Since(start), cpuTime(t)-before
	if wall < 300*time.Millisecond || wall > 5*time.Second {
		t.Errorf("spin to a deadline 300ms away took %s", wall)
	}
	// (on a busy machine the spinning thread gets less than all of its wall time)
	if cpu < 30*time.Millisecond {
		t.Errorf("spinning 300ms used %s of CPU", cpu)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start = time.Now()
	spin(ctx, start.Add(time.Hour))
	if time.Since(start) > time.Second {
		t.Error("a cancelled spin went on")
	}
}

func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestBurnStopsOnSIGUSR1 runs burn in a child process (this test binary
// again) with a deadline a minute away: SIGUSR1 ends the burn at once and
// the process idles until SIGTERM.
func TestBurnStopsOnSIGUSR1(t *testing.T) {
	if os.Getenv("TESTAPP_BURN_CHILD") == "1" {
		burn("60s")
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestBurnStopsOnSIGUSR1$")
	cmd.Env = append(os.Environ(), "TESTAPP_BURN_CHILD=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func(want string) {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok || !strings.HasPrefix(l, want) {
				t.Fatalf("child printed %q (open %v), want %q", l, ok, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("child printed nothing within 10s, want %q", want)
		}
	}
	next("burning one CPU until")
	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	next("done burning")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("child after SIGTERM: %v", err)
	}
}
