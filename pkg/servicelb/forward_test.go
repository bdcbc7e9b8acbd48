package servicelb

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// freePort is a port nothing listens on right now, on 127.0.0.1.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// tcpBackend answers every line with "echo: LINE" and returns its port.
func tcpBackend(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewScanner(c)
				for r.Scan() {
					_, _ = io.WriteString(c, "echo: "+r.Text()+"\n")
				}
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// udpBackend answers every datagram with "echo: DATAGRAM".
func udpBackend(t *testing.T) int {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(append([]byte("echo: "), buf[:n]...), from)
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

// start runs a forwarder on 127.0.0.1 until the test ends and waits until
// it listens.
func start(t *testing.T, s Spec) *Forwarder {
	t.Helper()
	s.HealthPort = freePort(t)
	f := &Forwarder{Spec: s, Host: "127.0.0.1", Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Poll: 20 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("forwarder: %v", err)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for !f.listening.Load() {
		select {
		case err := <-done:
			t.Fatalf("forwarder stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the forwarder does not listen within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return f
}

// tcpRoundTrip connects from the local address from (127.0.0.x) to port
// and sends a line; it returns the answer.
func tcpRoundTrip(from string, port int) (string, error) {
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

func udpRoundTrip(from string, port int) (string, error) {
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(from)}, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("hello")); err != nil {
		return "", err
	}
	buf := make([]byte, 100)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

func TestForwardsTCPAndUDPToTheClusterIP(t *testing.T) {
	t.Parallel()
	tcpL, udpL := freePort(t), freePort(t)
	start(t, Spec{Service: "default/web", ClusterIP: "127.0.0.1", Ports: []Port{
		{Protocol: "TCP", Listen: tcpL, Port: tcpBackend(t)},
		{Protocol: "UDP", Listen: udpL, Port: udpBackend(t)},
	}})
	if got, err := tcpRoundTrip("127.0.0.1", tcpL); err != nil || got != "echo: hello" {
		t.Errorf("TCP through the forwarder: %q, %v", got, err)
	}
	for range 2 { // the second datagram rides the client's session
		if got, err := udpRoundTrip("127.0.0.1", udpL); err != nil || got != "echo: hello" {
			t.Errorf("UDP through the forwarder: %q, %v", got, err)
		}
	}
}

func TestRefusesSourcesOutsideTheRanges(t *testing.T) {
	t.Parallel()
	tcpL, udpL := freePort(t), freePort(t)
	// 127.0.0.2 is allowed, 127.0.0.3 is not: both are this host's loopback
	start(t, Spec{Service: "default/web", ClusterIP: "127.0.0.1",
		SourceRanges: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32"), netip.MustParsePrefix("192.0.2.0/24")},
		Ports:        []Port{{Protocol: "TCP", Listen: tcpL, Port: tcpBackend(t)}, {Protocol: "UDP", Listen: udpL, Port: udpBackend(t)}}})
	if got, err := tcpRoundTrip("127.0.0.2", tcpL); err != nil || got != "echo: hello" {
		t.Errorf("TCP from an allowed source: %q, %v", got, err)
	}
	got, err := tcpRoundTrip("127.0.0.3", tcpL)
	if err == nil || !(errors.Is(err, io.EOF) || strings.Contains(err.Error(), "reset")) {
		t.Errorf("TCP from 127.0.0.3, outside the ranges: got %q, %v; want the connection reset", got, err)
	}
	if got, err := udpRoundTrip("127.0.0.2", udpL); err != nil || got != "echo: hello" {
		t.Errorf("UDP from an allowed source: %q, %v", got, err)
	}
	if got, err := udpRoundTrip("127.0.0.3", udpL); err == nil {
		t.Errorf("UDP from 127.0.0.3, outside the ranges, was answered: %q", got)
	}
}

func TestLocalForwardsOnlyToTheNodesEndpoints(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "endpoints")
	listen, backend := freePort(t), tcpBackend(t)
	f := start(t, Spec{Service: "default/web", Local: true, EndpointsFile: file,
		Ports: []Port{{Protocol: "TCP", Listen: listen, Port: 80}}})
	ready := func() error {
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(f.Spec.HealthPort) + "/readyz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return errors.New(strings.TrimSpace(string(b)))
		}
		return nil
	}
	// ready without endpoints (a DaemonSet rollout must not stop at a node
	// without any), but refusing
	if err := ready(); err != nil {
		t.Errorf("not ready without local endpoints: %v", err)
	}
	if got, err := tcpRoundTrip("127.0.0.1", listen); err == nil {
		t.Errorf("served without local endpoints: %q", got)
	}
	eps := Endpoints{listen: {netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(backend))}}
	if err := os.WriteFile(file, []byte(eps.Encode()), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !f.endpoints.Load().Any() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got, err := tcpRoundTrip("127.0.0.1", listen); err != nil || got != "echo: hello" {
		t.Errorf("TCP to the local endpoint: %q, %v", got, err)
	}
	// the endpoint leaves the node: refused again
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for f.endpoints.Load().Any() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got, err := tcpRoundTrip("127.0.0.1", listen); err == nil {
		t.Errorf("served after the endpoint left: %q", got)
	}
}

func TestListenFailureIsAnError(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	used := l.Addr().(*net.TCPAddr).Port
	f := &Forwarder{Host: "127.0.0.1", Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Spec: Spec{ClusterIP: "127.0.0.1", HealthPort: freePort(t), Ports: []Port{{Protocol: "TCP", Listen: used, Port: 80}}}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.Run(ctx); err == nil || !strings.Contains(err.Error(), "TCP/"+strconv.Itoa(used)+"/80") {
		t.Errorf("listening on a used port: %v", err)
	}
}

func TestThrottleHoldsBackRepeats(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	log := slog.New(slog.NewTextHandler(&b, nil))
	var th throttle
	for range 5 {
		th.warn(log, "tcp/TCP/1/80", "no backend")
	}
	th.warn(log, "udp/UDP/2/53", "no backend")
	if n := strings.Count(b.String(), "no backend"); n != 2 {
		t.Errorf("%d lines for 5 alike warnings and 1 other, want 2:\n%s", n, b.String())
	}
	th.last["tcp/TCP/1/80"] = time.Now().Add(-throttleEvery)
	th.warn(log, "tcp/TCP/1/80", "no backend")
	if !strings.Contains(b.String(), "alikeNotLogged=4") {
		t.Errorf("the held-back count is not logged:\n%s", b.String())
	}
}
