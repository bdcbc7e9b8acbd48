package agent

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// proxySyncedMetric is set by kube-proxy after each successful sync of its
// rules; it is 0 (or absent) before the first one.
const proxySyncedMetric = "kubeproxy_sync_proxy_rules_last_timestamp_seconds"

// waitProxySynced waits until kube-proxy has programmed Service routing
// once, read from its metrics (its /healthz reports healthy from the start).
// The overlay writes the CNI configuration only then, so the node turns
// Ready (and gets pods) only once ClusterIPs work: a pod that dialled the
// `kubernetes` Service before the first sync would have its connection
// tracked without NAT and hang for client-go's 30 s dial timeout (seen:
// CoreDNS available after 45 s instead of 15). Bounded: after timeout the
// node goes on without it.
func waitProxySynced(ctx context.Context, metricsURL string, timeout time.Duration, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		if synced, err := proxySynced(ctx, client, metricsURL); synced {
			log.Info("kube-proxy synced Service routing", "waited", time.Since(start).Round(time.Millisecond))
			return
		} else if ctx.Err() != nil {
			log.Warn("kube-proxy has not synced Service routing; going on without it", "waited", timeout, "err", err)
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func proxySynced(ctx context.Context, client *http.Client, url string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	return metricPositive(resp.Body, proxySyncedMetric), nil
}

// metricPositive says whether a Prometheus text exposition has a sample of
// name (with any labels) greater than zero.
func metricPositive(r io.Reader, name string) bool {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		if rest[0] == '{' {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			rest = rest[end+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil && v > 0 {
			return true
		}
	}
	return false
}
