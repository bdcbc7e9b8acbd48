package health

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"time"
)

// ProbeCommand is the first argument that turns a role binary into its own
// container health check: `apiserver healthcheck https://127.0.0.1:6443/readyz`.
// The role images are FROM scratch (no shell, no curl); reusing the role's
// binary adds nothing to the image, and exits before any role code runs (a
// probe costs about 30 ms of CPU, mostly the runtime's package init).
const ProbeCommand = "healthcheck"

// MaybeProbe runs the health check and returns its exit code when args (os.Args
// without the program name) ask for it; ok is false otherwise.
func MaybeProbe(args []string, stderr io.Writer) (code int, ok bool) {
	if len(args) == 0 || args[0] != ProbeCommand {
		return 0, false
	}
	if len(args) != 2 {
		fmt.Fprintln(stderr, "usage: healthcheck URL (exit 0 when URL answers 200)")
		return 2, true
	}
	if err := Probe(args[1]); err != nil {
		fmt.Fprintln(stderr, err)
		return 1, true
	}
	return 0, true
}

// Probe GETs url and succeeds on 200. It does not verify the server
// certificate: it is for a role's own health endpoint on loopback inside its
// container, sends no credentials and reads only the status.
func Probe(url string) error {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // see above
	}}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s %s", url, resp.Status, body)
	}
	return nil
}
