package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
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
	report(n, one)
}

// report runs one n times and prints the percentiles of the successful runs.
func report(n int, one func() (time.Duration, error)) {
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
		fail("nothing succeeded")
	}
	slices.Sort(d)
	ms := func(t time.Duration) float64 { return float64(t.Microseconds()) / 1000 }
	r.P50ms, r.P99ms, r.MaxMs = ms(d[len(d)/2]), ms(d[len(d)*99/100]), ms(d[len(d)-1])
	_ = json.NewEncoder(os.Stdout).Encode(r)
}

// dialLatency opens n TCP connections to addr one after the other (after
// 50 unmeasured ones) and prints the percentiles of the time connect()
// takes: the handshake, which is what a new connection pays for Service
// translation and NetworkPolicy verdicts.
func dialLatency(addr string, n int) {
	one := func() (time.Duration, error) {
		start := time.Now()
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return 0, err
		}
		d := time.Since(start)
		_ = c.Close()
		return d, nil
	}
	for range 50 {
		_, _ = one()
	}
	report(n, one)
}

func dialLatencyCmd(args []string) {
	if len(args) != 3 {
		fail("usage: testapp dial-latency HOST:PORT N")
	}
	dialLatency(args[1], count(args[2]))
}

func count(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 100000 {
		fail("N is a count, 1 to 100000")
	}
	return n
}

func latencyCmd(args []string) {
	if len(args) < 3 || len(args) > 4 {
		fail("usage: testapp latency URL N [HOST]")
	}
	n := count(args[2])
	host := ""
	if len(args) == 4 {
		host = args[3]
	}
	latency(args[1], n, host)
}
