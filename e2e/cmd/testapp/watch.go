package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"
)

// watch polls a Prometheus text endpoint every 2 ms for the sample line
// that starts with metric (name and labels, as printed), prints "ready
// VALUE" once it has read it, then, when the value changes, "changed
// UNIX-NANOSECONDS" (the wall clock, which the containers of one machine
// share with the host) and exits; exit 1 after timeout. Benchmarks start it,
// wait for ready, make their change and compare clocks.
func watch(url, metric string, timeout time.Duration) {
	client := &http.Client{Timeout: time.Second}
	read := func() (string, error) {
		resp, err := client.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), metric+" "); ok {
				return v, nil
			}
		}
		return "", sc.Err() // absent: "", a value of its own
	}
	first, err := read()
	if err != nil {
		fail(err.Error())
	}
	fmt.Println("ready", first)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
		v, err := read()
		if err == nil && v != first {
			fmt.Println("changed", time.Now().UnixNano())
			return
		}
	}
	fmt.Fprintln(os.Stderr, "testapp: no change within", timeout)
	os.Exit(1)
}

func watchCmd(args []string) {
	if len(args) != 4 {
		fail("usage: testapp watch URL METRIC TIMEOUT")
	}
	d, err := time.ParseDuration(args[3])
	if err != nil {
		fail("watch: " + err.Error())
	}
	watch(args[1], args[2], d)
}
