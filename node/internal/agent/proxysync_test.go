package agent

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestMetricPositive(t *testing.T) {
	for _, tc := range []struct {
		body string
		want bool
	}{
		{"# HELP x\nkubeproxy_sync_proxy_rules_last_timestamp_seconds 1.7e+09\n", true},
		{"kubeproxy_sync_proxy_rules_last_timestamp_seconds 0\n", false},
		{`kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"} 1.764e+09` + "\n", true},
		{`kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"} 0` + "\n", false},
		{"kubeproxy_sync_proxy_rules_last_timestamp_seconds_bucket 5\n", false},
		{"other 1\n", false},
		{"", false},
	} {
		if got := metricPositive(strings.NewReader(tc.body), proxySyncedMetric); got != tc.want {
			t.Errorf("%q: got %v", tc.body, got)
		}
	}
}

// The wait ends once the metric turns positive, and is bounded when it never does.
func TestWaitProxySynced(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 3 {
			io.WriteString(w, proxySyncedMetric+" 0\n")
			return
		}
		io.WriteString(w, proxySyncedMetric+" 1764600000\n")
	}))
	defer srv.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	start := time.Now()
	waitProxySynced(context.Background(), srv.URL, 10*time.Second, log)
	if calls.Load() != 3 || time.Since(start) > 5*time.Second {
		t.Fatalf("%d calls in %s", calls.Load(), time.Since(start))
	}
	never := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer never.Close()
	start = time.Now()
	waitProxySynced(context.Background(), never.URL, 300*time.Millisecond, log)
	if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
		t.Fatalf("bounded wait took %s", d)
	}
}
