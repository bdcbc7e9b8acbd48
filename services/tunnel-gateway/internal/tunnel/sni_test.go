package tunnel

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
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
