package syncloop

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestKicksCoalesceAndFailuresRetry(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l := New(50 * time.Millisecond)
	var syncs, failures atomic.Int32
	synced := make(chan int32, 100)
	fail := atomic.Bool{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.Run(ctx, func(context.Context) error {
			n := syncs.Add(1)
			if fail.Load() {
				return errors.New("boom")
			}
			synced <- n
			return nil
		}, func(err error, retryIn time.Duration) {
			if retryIn < time.Second {
				t.Errorf("first retry after %v, want at least 1s", retryIn)
			}
			failures.Add(1)
			fail.Store(false)
		})
	}()
	<-synced // the pending first sync
	// a burst during the pause is one more sync, not ten
	for range 10 {
		l.Kick()
	}
	<-synced
	time.Sleep(150 * time.Millisecond)
	if n := syncs.Load(); n != 2 {
		t.Fatalf("%d syncs for the first sync plus a burst of 10 kicks, want 2", n)
	}
	// a failed sync is retried without a kick
	fail.Store(true)
	l.Kick()
	select {
	case <-synced:
	case <-time.After(3 * time.Second):
		t.Fatal("the failed sync was not retried")
	}
	if failures.Load() != 1 {
		t.Fatalf("failures %d, want 1", failures.Load())
	}
	cancel()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}
