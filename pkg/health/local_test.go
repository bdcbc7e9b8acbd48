package health

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestLocalRelayPassesTheRolesHealthThrough(t *testing.T) {
	t.Parallel()
	ready := false
	role := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" && !ready {
			http.Error(w, "[-]informer-sync failed", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	defer role.Close()
	l, err := Listen("127.0.0.1:0", "--health-address")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = (&LocalRelay{Listener: l, Target: role.URL}).Run(ctx) }()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + l.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/readyz"); code != 500 || !strings.Contains(body, "informer-sync") {
		t.Fatalf("not ready: %d %q", code, body)
	}
	ready = true
	if code, body := get("/readyz"); code != 200 || body != "ok" {
		t.Fatalf("ready: %d %q", code, body)
	}
	if code, _ := get("/metrics"); code != 404 {
		t.Fatalf("/metrics relayed (%d): only health paths are", code)
	}
	for _, bad := range []string{"localhost:0", "6080", "[::1]"} {
		if _, err := Listen(bad, "--health-address"); err == nil || !strings.Contains(err.Error(), "--health-address") || !strings.Contains(err.Error(), "IP:port") {
			t.Fatalf("Listen(%q): %v, want an error naming the flag and the form", bad, err)
		}
	}
}
