package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"time"
)

// latencyResult is what `testapp latency` prints (one JSON line).
type latencyResult struct {
	N      int     `json:"n"`
	Errors int     `json:"errors"`
	P50ms  float64 `json:"p50_ms"`
	P99ms  float64 `json:"p99_ms"`
	MaxMs  float64 `json:"max_ms"`
}

// latency GETs url n times, one request at a time on a kept-alive
// connection (after 50 unmeasured warm-up requests), with the Host header
// host when it is not empty, and prints the percentiles: a bounded load
// that stops by itself.
func latency(url string, n int, host string) {
	client := &http.Client{Timeout: 5 * time.Second}
	one := func() (time.Duration, error) {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return 0, err
		}
		if host != "" {
			req.Host = host
		}
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("status %d", resp.StatusCode)
		}
		return time.Since(start), nil
	}
	for range 50 {
		_, _ = one()
	}
	r := latencyResult{N: n}
	var d []time.Duration
	for range n {
		t, err := one()
		if err != nil {
			r.Errors++
			continue
		}
		d = append(d, t)
	}
	if len(d) == 0 {
		fail("no request succeeded")
	}
	slices.Sort(d)
	ms := func(t time.Duration) float64 { return float64(t.Microseconds()) / 1000 }
	r.P50ms, r.P99ms, r.MaxMs = ms(d[len(d)/2]), ms(d[len(d)*99/100]), ms(d[len(d)-1])
	_ = json.NewEncoder(os.Stdout).Encode(r)
}

func latencyCmd(args []string) {
	if len(args) < 3 || len(args) > 4 {
		fail("usage: testapp latency URL N [HOST]")
	}
	n, err := strconv.Atoi(args[2])
	if err != nil || n < 1 || n > 100000 {
		fail("latency: N is a number of requests, 1 to 100000")
	}
	host := ""
	if len(args) == 4 {
		host = args[3]
	}
	latency(args[1], n, host)
}
