package main

import (
	"context"
	"errors"
	"fmt"
	"os/signal"
	"syscall"
	"time"
)

// maxBurn bounds every burn, whatever it is asked.
const maxBurn = 10 * time.Minute

// burn keeps one CPU busy until the deadline arg names (a duration from
// now, or an RFC 3339 time, so that all pods of a Deployment, the ones a
// HorizontalPodAutoscaler adds too, stop at the same moment) or until
// SIGUSR1 (`testapp stop-burn` in the container: a test that has seen what
// the load was for ends it early), then idles until SIGTERM: a
// Deployment's pod loads its node once and does not restart to load it
// again.
func burn(arg string) {
	deadline, err := burnDeadline(arg, time.Now())
	if err != nil {
		fail(err.Error())
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	early, stopEarly := signal.NotifyContext(ctx, syscall.SIGUSR1)
	defer stopEarly()
	fmt.Printf("burning one CPU until %s\n", deadline.UTC().Format(time.RFC3339))
	spin(early, deadline)
	fmt.Println("done burning; idle until SIGTERM")
	<-ctx.Done()
}

// stopBurn ends the burn of the container's main process (PID 1) early.
func stopBurn() {
	if err := syscall.Kill(1, syscall.SIGUSR1); err != nil {
		fail("stop-burn: signalling PID 1: " + err.Error())
	}
}

// burnDeadline is when a burn started at now stops: arg is a duration
// ("90s") or an RFC 3339 time, and the burn lasts at most maxBurn.
func burnDeadline(arg string, now time.Time) (time.Time, error) {
	end, err := time.Parse(time.RFC3339, arg)
	if err != nil {
		d, derr := time.ParseDuration(arg)
		if derr != nil || d < 0 {
			return time.Time{}, errors.New("usage: testapp burn DURATION|TIME (a duration such as 90s, or an RFC 3339 time)")
		}
		end = now.Add(d)
	}
	if limit := now.Add(maxBurn); end.After(limit) {
		return limit, nil
	}
	return end, nil
}

// spin busies the calling goroutine's CPU until deadline or ctx ends.
func spin(ctx context.Context, deadline time.Time) {
	for ctx.Err() == nil && time.Now().Before(deadline) {
	}
}
