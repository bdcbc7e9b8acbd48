// Package syncloop is the loop the node's datapath controllers (NetworkPolicy,
// Service proxy) share: informer events kick it; it calls the sync at most
// once per interval (kicks during the pause coalesce into the next sync),
// and retries a failed sync with backoff. What a sync recomputes is the
// caller's: NetworkPolicy all of it, the Service proxy the Services its
// events marked.
package syncloop

import (
	"context"
	"time"

	"k8s.io/client-go/tools/cache"
)

// Loop coalesces kicks into syncs.
type Loop struct {
	// MinInterval is the least time between two syncs (default 100 ms).
	MinInterval time.Duration
	changed     chan struct{}
}

// New returns a loop with one sync already pending.
func New(minInterval time.Duration) *Loop {
	if minInterval == 0 {
		minInterval = 100 * time.Millisecond
	}
	l := &Loop{MinInterval: minInterval, changed: make(chan struct{}, 1)}
	l.Kick()
	return l
}

// Kick asks for a sync; kicks before it starts are one sync.
func (l *Loop) Kick() {
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// Handler kicks the loop on every add, update and delete of an informer.
func (l *Loop) Handler() cache.ResourceEventHandlerFuncs {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { l.Kick() },
		UpdateFunc: func(any, any) { l.Kick() },
		DeleteFunc: func(any) { l.Kick() },
	}
}

// Run calls sync for each kick until ctx ends. A sync that fails is retried
// after 1 s, doubling to 30 s, unless a kick comes first; onError hears of
// each failure and the wait before the retry.
func (l *Loop) Run(ctx context.Context, sync func(context.Context) error, onError func(err error, retryIn time.Duration)) {
	var retry time.Duration
	var retryC <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.changed:
		case <-retryC:
		}
		retryC = nil
		if err := sync(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			retry = min(max(2*retry, time.Second), 30*time.Second)
			retryC = time.After(retry)
			onError(err, retry)
			continue
		}
		retry = 0
		select {
		case <-ctx.Done():
			return
		case <-time.After(l.MinInterval):
		}
	}
}
