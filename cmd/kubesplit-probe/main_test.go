package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestProbe(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.Error(w, "[-]etcd failed", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	if err := probe(host + "/readyz"); err != nil {
		t.Fatalf("healthy endpoint: %v", err)
	}
	if err := probe("http://" + host + "/readyz"); err != nil {
		t.Fatalf("with scheme: %v", err)
	}
	if err := probe(host + "/livez"); err == nil || !strings.Contains(err.Error(), "500") {
		t.Fatalf("failing endpoint: %v, want the 500 status", err)
	}
	if err := probe("127.0.0.1:1/readyz"); err == nil {
		t.Fatal("closed port accepted")
	}
}
