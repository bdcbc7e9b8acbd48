// Package lifecycle runs a role's parts until a signal or the first failure.
package lifecycle

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// Runnable is a part of a role that runs until its context ends. It returns
// nil when it stopped because the context ended.
type Runnable interface {
	Run(ctx context.Context) error
}

// Func adapts a function to Runnable.
type Func func(ctx context.Context) error

// Run implements Runnable.
func (f Func) Run(ctx context.Context) error { return f(ctx) }

// SignalContext is canceled on SIGINT or SIGTERM.
func SignalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// RunAll runs every part concurrently. When one fails, or ctx ends, the others
// are canceled; RunAll waits for all and returns the first real error.
func RunAll(ctx context.Context, parts ...Runnable) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for _, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := p.Run(ctx)
			if err != nil && !errors.Is(err, context.Canceled) {
				once.Do(func() { first = err })
			}
			cancel()
		}()
	}
	wg.Wait()
	return first
}
