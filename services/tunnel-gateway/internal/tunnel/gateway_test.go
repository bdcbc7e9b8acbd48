package tunnel

import (
	"io"
	"log/slog"
	"testing"
)

func TestDeclaredIPs(t *testing.T) {
	t.Parallel()
	ips, err := declaredIPs(" 10.0.0.1, fd00::1 ,")
	if err != nil || len(ips) != 2 || ips[0] != "10.0.0.1" || ips[1] != "fd00::1" {
		t.Fatalf("got %v %v", ips, err)
	}
	if _, err := declaredIPs("10.0.0.1,node-b"); err == nil {
		t.Fatal("a host name was accepted as an address")
	}
}

func TestClaimAndRoute(t *testing.T) {
	t.Parallel()
	g := New([]int{10250}, "egress", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := g.claim("a", []string{"10.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	if got := g.nodeFor("10.0.0.1"); got != "a" {
		t.Fatalf("10.0.0.1 routes to %q", got)
	}
	// node a has no live session here, so b may take the address over
	if err := g.claim("b", []string{"10.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	if got := g.nodeFor("10.0.0.1"); got != "b" {
		t.Fatalf("10.0.0.1 routes to %q after b claimed it", got)
	}
	// a re-claiming a new address drops its old ones only
	if err := g.claim("a", []string{"10.0.0.2"}); err != nil {
		t.Fatal(err)
	}
	if g.nodeFor("10.0.0.1") != "b" || g.nodeFor("10.0.0.2") != "a" {
		t.Fatal("claims mixed up")
	}
	// an unknown host is taken as a node name
	if got := g.nodeFor("node-c"); got != "node-c" {
		t.Fatalf("got %q", got)
	}
}
