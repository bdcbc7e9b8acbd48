package tunnel

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

// helloFrom captures the bytes a TLS client sends first.
func helloFrom(t *testing.T, serverName string) []byte {
	t.Helper()
	client, server := net.Pipe()
	go func() {
		_ = tls.Client(client, &tls.Config{ServerName: serverName, InsecureSkipVerify: true}).Handshake() //nolint:gosec // test
	}()
	buf := make([]byte, 1<<14)
	n, err := io.ReadAtLeast(server, buf, 5)
	if err != nil {
		t.Fatal(err)
	}
	// read the whole first record
	want := 5 + (int(buf[3])<<8 | int(buf[4]))
	for n < want {
		m, err := server.Read(buf[n:])
		if err != nil {
			t.Fatal(err)
		}
		n += m
	}
	client.Close()
	server.Close()
	return buf[:n]
}

func TestPeekServerName(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"kubernetes", "tunnel-gateway", ""} {
		hello := helloFrom(t, name)
		br := bufio.NewReaderSize(strings.NewReader(string(hello)), 5+1<<14)
		got, err := peekServerName(br)
		if err != nil || got != name {
			t.Errorf("server name %q: got %q, %v", name, got, err)
		}
		// nothing was consumed: the relay or the local TLS server sees the whole hello
		rest, _ := io.ReadAll(br)
		if string(rest) != string(hello) {
			t.Errorf("server name %q: peek consumed bytes", name)
		}
	}
	if _, err := peekServerName(bufio.NewReader(strings.NewReader("GET / HTTP/1.1\r\n\r\n"))); err == nil {
		t.Error("plain HTTP taken for TLS")
	}
}

// The relay passes bytes both ways unchanged and propagates the client's
// half-close, so a request/response protocol on top of it completes.
func TestRelayForwardsBothWays(t *testing.T) {
	t.Parallel()
	upstream, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer upstream.Close()
	go func() { // upstream: answer "echo:" + everything read until EOF
		c, err := upstream.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		_, _ = c.Write(append([]byte("echo:"), b...))
	}()
	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- (&Relay{Listener: front, APIServer: upstream.Addr().String(), Log: slog.New(slog.DiscardHandler)}).Run(ctx)
	}()
	c, err := net.Dial("tcp", front.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "echo:hello" {
		t.Fatalf("through the relay: %q, %v", got, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
}

// The mux relays "kubernetes" and its extra names to the apiserver and
// keeps every other name (the gateway's own) for its local listener.
func TestSNIMuxRoutesByName(t *testing.T) {
	t.Parallel()
	apiserver := echoServer(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := &SNIMux{Listener: l, APIServer: apiserver, Names: []string{"kubernetes.cp1.example"}, Log: slog.New(slog.DiscardHandler)}
	local := m.Local()
	go func() { _ = m.Run(ctx) }()
	for _, c := range []struct {
		name    string
		relayed bool
	}{{"kubernetes", true}, {"kubernetes.cp1.example", true}, {"cp1.example", false}, {"kubernetes.cp2.example", false}} {
		hello := helloFrom(t, c.name)
		conn, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write(hello); err != nil {
			t.Fatal(err)
		}
		if c.relayed {
			_ = conn.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(conn)
			if err != nil || string(got) != "echo:"+string(hello) {
				t.Errorf("%s: not relayed to the apiserver (%d bytes, %v)", c.name, len(got), err)
			}
		} else {
			lc, err := local.Accept()
			if err != nil {
				t.Fatal(err)
			}
			b := make([]byte, len(hello))
			if _, err := io.ReadFull(lc, b); err != nil || string(b) != string(hello) {
				t.Errorf("%s: the local listener got %v", c.name, err)
			}
			lc.Close()
		}
		conn.Close()
	}
}
