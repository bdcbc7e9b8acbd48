package addons

import (
	"context"
	"log/slog"

	"k8s.io/client-go/util/workqueue"
)

// newQueue is a rate-limited queue of object names that shuts down when
// ctx ends.
func newQueue(ctx context.Context) workqueue.TypedRateLimitingInterface[string] {
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	go func() { <-ctx.Done(); q.ShutDown() }()
	return q
}

// work takes names off q until it shuts down and syncs each; a name whose
// sync fails is retried with backoff. what and key name it in the log.
func work(q workqueue.TypedRateLimitingInterface[string], log *slog.Logger, what, key string, sync func(name string) error) {
	for {
		name, quit := q.Get()
		if quit {
			return
		}
		if err := sync(name); err != nil {
			log.Warn(what+": retrying", key, name, "err", err)
			q.AddRateLimited(name)
		} else {
			q.Forget(name)
		}
		q.Done(name)
	}
}
