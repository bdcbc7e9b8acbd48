package main

import (
	"context"
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
