// Command kubesplit-probe is the health check inside the role images, which
// are FROM scratch and have no shell or curl: `kubesplit-probe URL` exits 0
// when URL answers 200 within the timeout. It is a separate, standard-library
// binary because exec'ing a role's own binary (tens of MB, Kubernetes'
// package init) every few seconds would cost real CPU on small machines.
//
// It skips verifying the server certificate: it talks to the role's own
// health endpoint on loopback inside the container, sends no credentials and
// reads only the status code.
package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: kubesplit-probe URL (exit 0 when URL answers 200)")
		os.Exit(2)
	}
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // see package comment
	}}
	resp, err := c.Get(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(os.Stderr, "%s: %s %s\n", os.Args[1], resp.Status, body)
		os.Exit(1)
	}
}
