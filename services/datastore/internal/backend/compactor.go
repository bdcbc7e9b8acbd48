package backend

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// CompactMinRetain is how many recent revisions survive a compaction, so
// watchers that fall a little behind can resume without a relist.
const CompactMinRetain = 1000

// Compactor drops old revisions of a kine backend every Interval, through the
// etcd Compact API.
//
// Why our own loop: kine's built-in compactor starts only with the first
// watch and never advances when that watch began on a fresh database within
// its retention window, so a new cluster's SQLite file grew without bound
// (TestSQLiteCompactionBoundsFile showed it). With kine's automatic
// compaction off, a Compact request runs kine's batched compaction, which
// itself never touches the newest CompactMinRetain revisions.
type Compactor struct {
	Client   *clientv3.Client
	Interval time.Duration
	Log      *slog.Logger
}

// Run implements lifecycle.Runnable.
func (c *Compactor) Run(ctx context.Context) error {
	if c.Interval <= 0 {
		return nil
	}
	t := time.NewTicker(c.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := c.once(ctx); err != nil {
			c.Log.Warn("compaction failed; will retry", "err", err)
		}
	}
}

func (c *Compactor) once(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	resp, err := c.Client.Get(ctx, "/kubesplit/compaction", clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	rev := resp.Header.Revision
	c.Log.Debug("compaction check", "revision", rev)
	if rev <= CompactMinRetain {
		return nil
	}
	start := time.Now()
	_, err = c.Client.Compact(ctx, rev)
	if errors.Is(err, rpctypes.ErrCompacted) {
		return nil
	}
	if err == nil {
		c.Log.Debug("compacted", "revision", rev, "took", time.Since(start).Round(time.Millisecond))
	}
	return err
}
