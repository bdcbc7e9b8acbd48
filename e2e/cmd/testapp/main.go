// Command testapp is the end-to-end tests' workload, built here so that no
// registry is needed:
//
//	testapp serve [--port N | :N]
//	                              HTTP on port N (default 8080): "/" answers the pod's
//	                              hostname, "/healthz" ok, "/stream?n=N&ms=M" N lines, one
//	                              every M ms, each flushed
//	testapp webhook PORT DIR      HTTPS admission/conversion webhooks and an aggregated
//	                              API, with DIR/tls.crt and DIR/tls.key (webhook.go)
//	testapp get URL [TIMEOUT]     prints the body of URL (whole request within TIMEOUT,
//	                              default 5s); exit 1 on failure
//	testapp connect HOST:PORT [TIMEOUT]
//	                              opens a TCP connection (timeout default 2s) and closes it;
//	                              prints "connected", exit 1 when it cannot
//	testapp echo WORDS...         prints WORDS to stdout and "to-stderr" to stderr
//	testapp exit N                exits with status N
//	testapp sleep                 blocks until SIGTERM
//	testapp burn DURATION|TIME    keeps one CPU busy that long or until then (at most
//	                              10 minutes) or until SIGUSR1, then blocks until SIGTERM
//	                              (burn.go)
//	testapp stop-burn             ends the burn of the container's PID 1 early (SIGUSR1)
//	testapp latency URL N [HOST]  p50/p99 of N GETs on a kept-alive connection (latency.go)
//	testapp dial-latency HOST:PORT N
//	                              p50/p99 of N TCP connects, each a new connection
//	testapp watch URL METRIC TIMEOUT
//	                              prints "ready VALUE", then "changed UNIX-NS" when the
//	                              Prometheus sample METRIC at URL changes (watch.go)
//	testapp poll URL DURATION INTERVAL
//	                              GETs URL every INTERVAL for DURATION, a new connection each
//	                              time; one line per request: time, outcome, latency (poll.go)
//	testapp wait-connect HOST:PORT TIMEOUT
//	                              prints "ready", then "connected UNIX-NS" at the first TCP
//	                              connection that succeeds, trying every ms (waitconnect.go)
//	testapp lookup NAME           prints NAME's addresses, as resolved through the pod's DNS
//	testapp kube PATH             GET https://kubernetes.default.svc/PATH with the pod's
//	                              service account (verifies the cluster CA); prints the body
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	args := os.Args[1:]
	if len(args) == 0 {
		args = []string{"serve"}
	}
	switch args[0] {
	case "serve":
		port, err := servePort(args[1:])
		if err != nil {
			fail(err.Error())
		}
		serve(port)
	case "webhook":
		if len(args) != 3 {
			fail("usage: testapp webhook PORT CERT-DIR")
		}
		webhook(args[1], args[2])
	case "get":
		if len(args) < 2 || len(args) > 3 {
			fail("usage: testapp get URL [TIMEOUT]")
		}
		timeout := 5 * time.Second
		if len(args) == 3 {
			d, err := time.ParseDuration(args[2])
			if err != nil {
				fail("get: " + err.Error())
			}
			timeout = d
		}
		get(args[1], timeout)
	case "connect":
		if len(args) < 2 || len(args) > 3 {
			fail("usage: testapp connect HOST:PORT [TIMEOUT]")
		}
		timeout := 2 * time.Second
		if len(args) == 3 {
			d, err := time.ParseDuration(args[2])
			if err != nil {
				fail("connect: " + err.Error())
			}
			timeout = d
		}
		conn, err := net.DialTimeout("tcp", args[1], timeout)
		if err != nil {
			fmt.Fprintln(os.Stderr, "testapp:", err)
			os.Exit(1)
		}
		_ = conn.Close()
		fmt.Println("connected")
	case "echo":
		fmt.Println(strings.Join(args[1:], " "))
		fmt.Fprintln(os.Stderr, "to-stderr")
	case "exit":
		n, err := strconv.Atoi(args[len(args)-1])
		if err != nil {
			fail("usage: testapp exit N")
		}
		os.Exit(n)
	case "lookup":
		if len(args) != 2 {
			fail("usage: testapp lookup NAME")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		addrs, err := net.DefaultResolver.LookupHost(ctx, args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, "testapp:", err)
			os.Exit(1)
		}
		fmt.Println(strings.Join(addrs, " "))
	case "kube":
		if len(args) != 2 {
			fail("usage: testapp kube PATH")
		}
		kube(args[1])
	case "burn":
		if len(args) != 2 {
			fail("usage: testapp burn DURATION|TIME")
		}
		burn(args[1])
	case "stop-burn":
		stopBurn()
	case "latency":
		latencyCmd(args)
	case "dial-latency":
		dialLatencyCmd(args)
	case "watch":
		watchCmd(args)
	case "poll":
		pollCmd(args)
	case "wait-connect":
		waitConnectCmd(args)
	case "sleep":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		<-ctx.Done()
	default:
		fail("unknown command " + args[0])
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "testapp:", msg)
	os.Exit(2)
}

func serve(port string) {
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/stream", stream)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, host)
		fmt.Printf("%s %s %s\n", time.Now().Format(time.RFC3339), r.Method, r.URL.Path) // for kubectl logs
	})
	fmt.Printf("testapp serving on :%s as %s\n", port, host)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv := &http.Server{Addr: ":" + port, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		fail(err.Error())
	}
}

// stream writes n lines (default 5), one every ms milliseconds (default
// 200), flushing each: a client sees the first line long before the last.
func stream(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.Atoi(r.URL.Query().Get("n"))
	if err != nil || n < 1 || n > 1000 {
		n = 5
	}
	ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
	if err != nil || ms < 0 || ms > 10000 {
		ms = 200
	}
	f, _ := w.(http.Flusher)
	for i := range n {
		if i > 0 {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(time.Duration(ms) * time.Millisecond):
			}
		}
		fmt.Fprintf(w, "line %d %s\n", i+1, time.Now().UTC().Format(time.RFC3339Nano))
		if f != nil {
			f.Flush()
		}
	}
}

// kube calls the apiserver the way in-cluster clients do: the kubernetes
// Service's DNS name, the mounted CA and the service account token.
func kube(path string) {
	const sa = "/var/run/secrets/kubernetes.io/serviceaccount/"
	ca, err := os.ReadFile(sa + "ca.crt")
	if err != nil {
		fail(err.Error())
	}
	token, err := os.ReadFile(sa + "token")
	if err != nil {
		fail(err.Error())
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequest(http.MethodGet, "https://kubernetes.default.svc/"+strings.TrimPrefix(path, "/"), nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	do(c, req)
}

func get(url string, timeout time.Duration) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		fail(err.Error())
	}
	do(&http.Client{Timeout: timeout}, req)
}

func do(c *http.Client, req *http.Request) {
	resp, err := c.Do(req)
	if err != nil {
		fail(err.Error())
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	fmt.Print(string(body))
	if err != nil {
		fail("reading the body: " + err.Error())
	}
	if resp.StatusCode != http.StatusOK {
		os.Exit(1)
	}
}

// servePort reads serve's arguments: none (8080), --port N, or :N. Anything
// else is refused rather than served on the default port.
func servePort(args []string) (string, error) {
	var port string
	switch {
	case len(args) == 0:
		return "8080", nil
	case len(args) == 2 && args[0] == "--port":
		port = args[1]
	case len(args) == 1 && strings.HasPrefix(args[0], ":"):
		port = args[0][1:]
	default:
		return "", fmt.Errorf("usage: testapp serve [--port N | :N], not %q", strings.Join(args, " "))
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("testapp serve: port %q is not a number from 1 to 65535", port)
	}
	return port, nil
}
