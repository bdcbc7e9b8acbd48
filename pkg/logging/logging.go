// Package logging sets up the one structured logger kubesplit's own code uses
// (log/slog). Upstream Kubernetes components keep logging through klog in
// their usual format; third-party libraries are bridged into slog.
package logging

import (
	"io"
	"log/slog"
	"os"
	"strings"
)

// New returns a text logger tagged with the role name.
func New(role string, w io.Writer, level slog.Level) *slog.Logger {
	if w == nil {
		w = os.Stderr
	}
	h := slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})
	return slog.New(h).With("role", role)
}

// ParseLevel maps "debug", "info", "warn", "error" to a slog level.
func ParseLevel(s string) (slog.Level, bool) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToLower(s))); err != nil {
		return slog.LevelInfo, false
	}
	return l, true
}
