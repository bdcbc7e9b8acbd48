package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"
)

// poll GETs url every interval for duration, each time on a new connection
// (so each request is a new connect() to translate), and prints one line
// per request: "UNIX-MS ok MS BODY" or "UNIX-MS refused|timeout|error MS
// DETAIL". A bounded load that stops by itself; tests read the lines from
// the pod's log.
func poll(url string, duration, interval time.Duration) {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	end := time.Now().Add(duration)
	for time.Now().Before(end) {
		start := time.Now()
		resp, err := client.Get(url)
		ms := float64(time.Since(start).Microseconds()) / 1000
		stamp := start.UnixMilli()
		switch {
		case err == nil:
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			fmt.Printf("%d ok %.1f %s\n", stamp, ms, strings.TrimSpace(string(body)))
		case errors.Is(err, syscall.ECONNREFUSED):
			fmt.Printf("%d refused %.1f\n", stamp, ms)
		case os.IsTimeout(err):
			fmt.Printf("%d timeout %.1f\n", stamp, ms)
		default:
			fmt.Printf("%d error %.1f %v\n", stamp, ms, err)
		}
		time.Sleep(time.Until(start.Add(interval)))
	}
}

func pollCmd(args []string) {
	if len(args) != 4 {
		fail("usage: testapp poll URL DURATION INTERVAL")
	}
	d, err1 := time.ParseDuration(args[2])
	i, err2 := time.ParseDuration(args[3])
	if err1 != nil || err2 != nil || d > 10*time.Minute || i < time.Millisecond {
		fail("poll: DURATION (at most 10m) and INTERVAL (at least 1ms) are durations")
	}
	poll(args[1], d, i)
}
