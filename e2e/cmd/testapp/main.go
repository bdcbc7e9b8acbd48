// Command testapp is the end-to-end tests' workload, built here so that no
// registry is needed:
//
//	testapp serve [--port 8080]   HTTP: "/" answers the pod's hostname, "/healthz" ok
//	testapp get URL               prints the body of URL; exit 1 on failure
//	testapp echo WORDS...         prints WORDS to stdout and "to-stderr" to stderr
//	testapp exit N                exits with status N
//	testapp sleep                 blocks until SIGTERM
package main

import (
	"context"
	"fmt"
	"io"
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
		port := "8080"
		if len(args) == 3 && args[1] == "--port" {
			port = args[2]
		}
		serve(port)
	case "get":
		if len(args) != 2 {
			fail("usage: testapp get URL")
		}
		get(args[1])
	case "echo":
		fmt.Println(strings.Join(args[1:], " "))
		fmt.Fprintln(os.Stderr, "to-stderr")
	case "exit":
		n, err := strconv.Atoi(args[len(args)-1])
		if err != nil {
			fail("usage: testapp exit N")
		}
		os.Exit(n)
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

func get(url string) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		fail(err.Error())
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Print(string(body))
	if resp.StatusCode != http.StatusOK {
		os.Exit(1)
	}
}
