package main

import (
	"fmt"
	"net"
	"os"
	"time"
)

// waitConnect prints "ready", then tries a TCP connection to addr every
// millisecond (each attempt bounded by 100 ms) until one succeeds, and
// prints "connected UNIX-NANOSECONDS" (the wall clock, shared with the host
// by the containers of one machine); exit 1 after timeout. Benchmarks start
// it, make a Service reachable and compare clocks.
func waitConnect(addr string, timeout time.Duration) {
	fmt.Println("ready")
	end := time.Now().Add(timeout)
	for time.Now().Before(end) {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			at := time.Now().UnixNano()
			_ = c.Close()
			fmt.Println("connected", at)
			return
		}
		time.Sleep(time.Millisecond)
	}
	fmt.Fprintln(os.Stderr, "testapp: no connection to", addr, "within", timeout)
	os.Exit(1)
}

func waitConnectCmd(args []string) {
	if len(args) != 3 {
		fail("usage: testapp wait-connect HOST:PORT TIMEOUT")
	}
	d, err := time.ParseDuration(args[2])
	if err != nil || d > 5*time.Minute {
		fail("wait-connect: TIMEOUT is a duration of at most 5m")
	}
	waitConnect(args[1], d)
}
