package agent

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestResolvConfLoopbackOnlyIsReplaced(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for name, c := range map[string]struct {
		content  string
		loopback bool
	}{
		"docker":   {"nameserver 127.0.0.11\nsearch example.internal\noptions ndots:0\n", true},
		"mixed":    {"nameserver 127.0.0.53\nnameserver 10.0.0.2\n", false},
		"external": {"# x\nnameserver 192.0.2.53\n", false},
		"empty":    {"search a\n", false},
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(c.content), 0o644); err != nil {
			t.Fatal(err)
		}
		rc, err := readResolvConf(p)
		if err != nil {
			t.Fatal(err)
		}
		if rc.loopbackOnly() != c.loopback {
			t.Errorf("%s: loopbackOnly %v, want %v", name, !c.loopback, c.loopback)
		}
		if name == "docker" {
			got := string(rc.render("10.251.0.3"))
			if !strings.Contains(got, "nameserver 10.251.0.3\nsearch example.internal\noptions ndots:0\n") || strings.Contains(got, "127.0.0.11") {
				t.Errorf("rendered resolv.conf:\n%s", got)
			}
		}
	}
}

// The relay carries DNS both over UDP (one datagram each way) and TCP.
func TestDNSRelayForwardsUDPAndTCP(t *testing.T) {
	t.Parallel()
	// upstream: answers every UDP datagram and TCP stream with "re:" + input
	up, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	upTCP, err := net.Listen("tcp", up.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer upTCP.Close()
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := up.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = up.WriteTo(append([]byte("re:"), buf[:n]...), from)
		}
	}()
	go func() {
		for {
			c, err := upTCP.Accept()
			if err != nil {
				return
			}
			b, _ := io.ReadAll(c)
			_, _ = c.Write(append([]byte("re:"), b...))
			c.Close()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// a free port for both protocols
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := probe.Addr().String()
	probe.Close()
	r, err := newDNSRelay(listen, up.LocalAddr().String(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	go r.run(ctx)

	c, err := net.Dial("udp", listen)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("q1")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "re:q1" {
		t.Fatalf("UDP through the relay: %q, %v", buf[:n], err)
	}
	c.Close()

	tc, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = tc.Write([]byte("q2"))
	_ = tc.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(tc)
	if err != nil || string(b) != "re:q2" {
		t.Fatalf("TCP through the relay: %q, %v", b, err)
	}
}

func TestReverseName(t *testing.T) {
	t.Parallel()
	if got, _ := reverseName("10.251.0.3"); got != "3.0.251.10.in-addr.arpa." {
		t.Fatalf("reverseName = %q", got)
	}
	if _, err := reverseName("fd00::1"); err == nil {
		t.Fatal("IPv6 accepted")
	}
}
