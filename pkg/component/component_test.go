package component

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kubesplit/kubesplit/pkg/version"
)

// fakeAPIServer answers /version with v1.36.3 until upgraded is set, then v1.38.0.
func fakeAPIServer(t *testing.T, upgraded *atomic.Bool) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := "v1.36.3"
		if upgraded.Load() {
			v = "v1.38.0"
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"major":"1","minor":"%s","gitVersion":"%s"}`, strings.Split(v, ".")[1], v)
	}))
	t.Cleanup(srv.Close)
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := fmt.Sprintf("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: %q}}]\nusers: [{name: u, user: {}}]\n"+
		"contexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n", srv.URL)
	if err := os.WriteFile(kc, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return kc
}

func TestCheckSkewWaitsForAnUpgradedAPIServer(t *testing.T) {
	waitNewerPoll = 50 * time.Millisecond
	var upgraded atomic.Bool
	kc := fakeAPIServer(t, &upgraded)

	// without the flag a newer role is refused at once
	c := Common{Role: "scheduler", SkewRole: version.RoleScheduler, Kubeconfig: kc, FakeVersion: "v1.38.0"}
	var se *version.SkewError
	if err := c.CheckSkew(context.Background(), &bytes.Buffer{}); !errors.As(err, &se) {
		t.Fatalf("newer scheduler without --wait-for-apiserver-upgrade: %v, want a SkewError", err)
	}

	// with it, the role waits until the apiserver is upgraded
	c.WaitNewer = true
	go func() { time.Sleep(300 * time.Millisecond); upgraded.Store(true) }()
	var log bytes.Buffer
	start := time.Now()
	if err := c.CheckSkew(context.Background(), &log); err != nil {
		t.Fatalf("after the apiserver's upgrade: %v", err)
	}
	if time.Since(start) < 250*time.Millisecond || !strings.Contains(log.String(), "waiting for the apiserver to be upgraded first") {
		t.Fatalf("did not wait (%v): %q", time.Since(start), log.String())
	}

	// a role too old is not helped by waiting: refused at once
	upgraded.Store(true)
	c.FakeVersion = "v1.36.3"
	done := make(chan error, 1)
	go func() { done <- c.CheckSkew(context.Background(), &bytes.Buffer{}) }()
	select {
	case err := <-done:
		if !errors.As(err, &se) {
			t.Fatalf("an older role: %v, want a SkewError", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an older role waited")
	}
}
