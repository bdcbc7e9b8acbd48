package servicelb

import (
	"log/slog"
	"sync"
	"time"
)

// throttleEvery is how often one kind of per-connection warning is logged:
// a backend that is down must not turn every connection into a log line.
const throttleEvery = 10 * time.Second

// throttle passes a warning of each key at most every throttleEvery and
// counts those it held back. The zero value is ready.
type throttle struct {
	mu   sync.Mutex
	last map[string]time.Time
	held map[string]int
}

func (t *throttle) warn(log *slog.Logger, key, msg string, args ...any) {
	t.mu.Lock()
	if t.last == nil {
		t.last, t.held = map[string]time.Time{}, map[string]int{}
	}
	now := time.Now()
	if now.Sub(t.last[key]) < throttleEvery {
		t.held[key]++
		t.mu.Unlock()
		return
	}
	held := t.held[key]
	t.last[key], t.held[key] = now, 0
	t.mu.Unlock()
	if held > 0 {
		args = append(args, "alikeNotLogged", held)
	}
	log.Warn(msg, args...)
}
