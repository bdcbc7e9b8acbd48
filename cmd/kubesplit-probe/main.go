// Command kubesplit-probe is the health check inside the role images, which
// are FROM scratch and have no shell or curl: `kubesplit-probe HOST:PORT/PATH`
// exits 0 when a plain-HTTP GET of it answers 200. The roles serve their
// health on loopback in plain HTTP for it (--health-address); the apiserver,
// scheduler and controllers relay their TLS health endpoints there.
//
// Why not the role binary itself: a health check every few seconds that
// starts a 100 MB Kubernetes binary runs its package init each time, and the
// pages that touches are charged to the container as active page cache
// (docker stats showed the control plane at 447 MiB instead of 252 MiB).
// Why no net/http or TLS here: they would make this 6 MB instead of 2, in
// every role image.
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: kubesplit-probe HOST:PORT/PATH (exit 0 when a plain-HTTP GET answers 200)")
		os.Exit(2)
	}
	if err := probe(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "kubesplit-probe:", err)
		os.Exit(1)
	}
}

func probe(target string) error {
	target = strings.TrimPrefix(target, "http://")
	hostPort, path, _ := strings.Cut(target, "/")
	c, err := net.DialTimeout("tcp", hostPort, 3*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(c, "GET /%s HTTP/1.0\r\nHost: %s\r\n\r\n", path, hostPort); err != nil {
		return err
	}
	status, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if f := strings.Fields(status); len(f) < 2 || f[1] != "200" {
		return fmt.Errorf("%s: %s", target, strings.TrimSpace(status))
	}
	return nil
}
