// Package traefik holds no code: this module exists to pin
// github.com/traefik/traefik/v3 (its command is a program, not importable)
// as a tool of go.mod, with the replace and exclude lines only a main module
// applies. hack/build.sh builds it with
// `go build github.com/traefik/traefik/v3/cmd/traefik` here.
package traefik

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The bundled chart's Deployment template (in the controllers module).
const chartDeployment = "../../services/controllers/internal/addons/charts/traefik/templates/deployment.yaml"

// staticArgs are the chart's arguments that have no template in them.
func staticArgs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(chartDeployment)
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, m := range regexp.MustCompile(`(?m)^\s*- (--[^{}\s]+)$`).FindAllStringSubmatch(string(b), -1) {
		args = append(args, m[1])
	}
	if len(args) < 4 {
		t.Fatalf("found only %v in %s", args, chartDeployment)
	}
	return args
}

// Traefik, built from this module, starts with the chart's fixed
// arguments and entry points like the chart's (on free loopback ports):
// /ping answers on the traefik entry point and an unrouted request to web
// is a 404. An argument Traefik does not know would stop it at start.
func TestTraefikTakesTheChartsArguments(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "traefik")
	// go test puts its GOROOT/bin first in PATH; GOFLAGS and CGO_ENABLED
	// are kept, so the build cache is shared with hack/build.sh
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "github.com/traefik/traefik/v3/cmd/traefik")
	build.Env = append(os.Environ(), "GOWORK=off") // this module is not in go.work
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	web, ping := freePort(t), freePort(t)
	args := append(staticArgs(t),
		fmt.Sprintf("--entryPoints.web.address=127.0.0.1:%d/tcp", web),
		fmt.Sprintf("--entryPoints.traefik.address=127.0.0.1:%d/tcp", ping),
		"--log.level=INFO")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	// the Kubernetes provider needs a cluster: without one it only retries
	cmd.Env = append(os.Environ(), "KUBERNETES_SERVICE_HOST=127.0.0.1", fmt.Sprintf("KUBERNETES_SERVICE_PORT=%d", freePort(t)))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() { _ = cmd.Process.Kill() }()
	get := func(port int, path string) (int, error) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	for {
		select {
		case err := <-exited:
			t.Fatalf("traefik %v exited: %v\n%s", args, err, log.String())
		case <-ctx.Done():
			t.Fatalf("traefik's /ping did not answer\n%s", log.String())
		case <-time.After(100 * time.Millisecond):
		}
		if code, err := get(ping, "/ping"); err == nil && code == http.StatusOK {
			break
		}
	}
	if code, err := get(web, "/"); err != nil || code != http.StatusNotFound {
		t.Errorf("web entry point without routes: %d %v, want 404", code, err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
