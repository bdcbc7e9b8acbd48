package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coredns/coredns/coremain"
	"github.com/miekg/dns"
)

// The zone answers names missing from the hosts block with NXDOMAIN (hosts
// alone would answer SERVFAIL: it has no SOA to deny a name with).
const zoneFile = `$ORIGIN kubesplit.test.
@   3600 IN SOA ns.kubesplit.test. hostmaster.kubesplit.test. 1 7200 3600 1209600 3600
@   3600 IN NS  ns.kubesplit.test.
ns  3600 IN A   127.0.0.1
`

// TestCoreDNS builds this command once and runs it as the cluster's DNS.
func TestCoreDNS(t *testing.T) {
	t.Parallel()
	bin := buildCoreDNS(t, t.TempDir())
	t.Run("serve", func(t *testing.T) { t.Parallel(); testServe(t, bin) })
	t.Run("version", func(t *testing.T) { t.Parallel(); testVersion(t, bin) })
}

// testServe runs bin on loopback with a Corefile of hosts, file, health and
// ready, and asks it over UDP and TCP.
func testServe(t *testing.T, bin string) {
	dir := t.TempDir()
	ports := freePorts(t, 3)
	dnsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	healthAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	readyAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2]))
	corefile := fmt.Sprintf(`kubesplit.test:%d {
    bind 127.0.0.1
    errors
    health %s
    ready %s
    hosts {
        10.96.0.10 web.kubesplit.test
        fallthrough
    }
    file %s
}
`, ports[0], healthAddr, readyAddr, filepath.Join(dir, "db.kubesplit.test"))
	writeFile(t, filepath.Join(dir, "db.kubesplit.test"), zoneFile)
	writeFile(t, filepath.Join(dir, "Corefile"), corefile)

	exited := startCoreDNS(t, bin, "-conf", filepath.Join(dir, "Corefile"))
	waitOK(t, "http://"+readyAddr+"/ready", exited)

	for _, network := range []string{"udp", "tcp"} {
		r := query(t, network, dnsAddr, "web.kubesplit.test.")
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("%s web.kubesplit.test: want one answer, got %s with %v", network, dns.RcodeToString[r.Rcode], r.Answer)
		}
		if a, ok := r.Answer[0].(*dns.A); !ok || a.A.String() != "10.96.0.10" {
			t.Fatalf("%s web.kubesplit.test: want A 10.96.0.10, got %v", network, r.Answer[0])
		}
		r = query(t, network, dnsAddr, "missing.kubesplit.test.")
		if r.Rcode != dns.RcodeNameError {
			t.Fatalf("%s missing.kubesplit.test: want NXDOMAIN, got %s", network, dns.RcodeToString[r.Rcode])
		}
	}

	resp, err := http.Get("http://" + healthAddr + "/health")
	if err != nil {
		t.Fatalf("GET /health: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "OK" {
		t.Fatalf("GET /health: %d %q", resp.StatusCode, body)
	}
}

func testVersion(t *testing.T, bin string) {
	out, err := exec.CommandContext(t.Context(), bin, "-version").CombinedOutput()
	if err != nil {
		t.Fatalf("coredns -version: %v\n%s", err, out)
	}
	for _, want := range []string{"CoreDNS-" + coremain.CoreVersion, "kubesplit"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("coredns -version printed %q, want it to contain %q", out, want)
		}
	}
}

// buildCoreDNS compiles this package into dir with the go command running
// the test (go test puts its GOROOT/bin first in PATH), keeping its GOFLAGS
// and CGO_ENABLED so the build cache is shared.
func buildCoreDNS(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "coredns")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "GOWORK=off") // this module is not in go.work
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startCoreDNS runs bin until the test ends and logs its output if the test
// fails. The returned channel is closed when the process exits.
func startCoreDNS(t *testing.T, bin string, args ...string) <-chan struct{} {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting coredns: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("coredns output:\n%s", out.String())
		}
	})
	return exited
}

// waitOK polls url until it answers 200 OK; it fails the test if the
// process exits first or 30 s pass.
func waitOK(t *testing.T, url string, exited <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-exited:
			t.Fatalf("coredns exited before %s answered", url)
		case <-ctx.Done():
			t.Fatalf("%s did not answer 200 OK within 30s (last error: %v)", url, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func query(t *testing.T, network, addr, name string) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s query %s: %v", network, name, err)
	}
	return r
}

// freePorts returns n loopback ports, each free for both TCP and UDP when
// asked (another process may still take one before CoreDNS binds it).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("finding a free port: %v", err)
		}
		closers = append(closers, l)
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // UDP side taken; try another
		}
		closers = append(closers, u)
		ports = append(ports, port)
	}
	return ports
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
