package app

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParsePause(t *testing.T) {
	got, err := parsePause("apiserver=2,scheduler=1")
	if err != nil || len(got) != 2 || got[0] != (pauseTarget{"apiserver", 2}) || got[1] != (pauseTarget{"scheduler", 1}) {
		t.Errorf("got %v, %v", got, err)
	}
	for _, bad := range []string{"apiserver", "apiserver=", "=2", "apiserver=-1", "apiserver=two"} {
		if _, err := parsePause(bad); err == nil || !strings.Contains(err.Error(), "DEPLOYMENT=REPLICAS") {
			t.Errorf("%q: %v, want the expected form named", bad, err)
		}
	}
}

// fakeDeployments serves the three calls the pause makes: a Deployment's
// pods go away one second after it is scaled to zero and are available one
// second after it is scaled up.
type fakeDeployments struct {
	mu       sync.Mutex
	replicas map[string]int
	changed  map[string]time.Time
	auth     []string
}

func (f *fakeDeployments) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.auth = append(f.auth, r.Header.Get("Authorization"))
	const prefix = "/apis/apps/v1/namespaces/cp/deployments/"
	settled := func(name string) bool { return time.Since(f.changed[name]) > time.Second }
	switch {
	case r.Method == http.MethodPatch && strings.HasPrefix(r.URL.Path, prefix) && strings.HasSuffix(r.URL.Path, "/scale"):
		name := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, prefix), "/scale")
		if _, ok := f.replicas[name]; !ok {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, `{"message":"deployments.apps %s not found"}`, name)
			return
		}
		var patch struct{ Spec struct{ Replicas int } }
		b, _ := io.ReadAll(r.Body)
		if r.Header.Get("Content-Type") != "application/merge-patch+json" || json.Unmarshal(b, &patch) != nil {
			http.Error(w, "bad patch", http.StatusBadRequest)
			return
		}
		f.replicas[name], f.changed[name] = patch.Spec.Replicas, time.Now()
		fmt.Fprint(w, "{}")
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, prefix):
		name := strings.TrimPrefix(r.URL.Path, prefix)
		if _, ok := f.replicas[name]; !ok {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, `{"message":"deployments.apps %s not found"}`, name)
			return
		}
		avail := 0
		if settled(name) {
			avail = f.replicas[name]
		}
		fmt.Fprintf(w, `{"spec":{"selector":{"matchLabels":{"app":%q}}},"status":{"availableReplicas":%d}}`, name, avail)
	case r.Method == http.MethodGet && r.URL.Path == "/api/v1/namespaces/cp/pods":
		name := strings.TrimPrefix(r.URL.Query().Get("labelSelector"), "app=")
		n := 1
		if f.replicas[name] == 0 && settled(name) {
			n = 0
		}
		fmt.Fprintf(w, `{"items":[%s]}`, strings.TrimSuffix(strings.Repeat("{},", n), ","))
	default:
		http.NotFound(w, r)
	}
}

func TestPauseStopsAndStartsDeployments(t *testing.T) {
	fake := &fakeDeployments{replicas: map[string]int{"apiserver": 2, "scheduler": 2}, changed: map[string]time.Time{}}
	srv := httptest.NewTLSServer(fake)
	defer srv.Close()
	dir := t.TempDir()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	for name, content := range map[string][]byte{"token": []byte("tok\n"), "namespace": []byte("cp"), "ca.crt": ca} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "https://"))
	t.Setenv("KUBERNETES_SERVICE_HOST", host)
	t.Setenv("KUBERNETES_SERVICE_PORT", port)
	api, err := inClusterAPI(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	targets := []pauseTarget{{"apiserver", 2}, {"scheduler", 1}}
	var log strings.Builder
	start := time.Now()
	if err := api.stop(ctx, targets, &log); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < time.Second {
		t.Errorf("stop returned before the pods were gone")
	}
	fake.mu.Lock()
	if fake.replicas["apiserver"] != 0 || fake.replicas["scheduler"] != 0 {
		t.Errorf("after stop: %v", fake.replicas)
	}
	fake.mu.Unlock()
	if err := api.start(ctx, targets, &log); err != nil {
		t.Fatal(err)
	}
	fake.mu.Lock()
	if fake.replicas["apiserver"] != 2 || fake.replicas["scheduler"] != 1 {
		t.Errorf("after start: %v, want the replicas asked for", fake.replicas)
	}
	for _, a := range fake.auth {
		if a != "Bearer tok" {
			t.Errorf("a request authorized with %q", a)
		}
	}
	fake.mu.Unlock()
	t.Log(log.String())

	// a Deployment that is not there: named in the error
	err = api.stop(ctx, []pauseTarget{{"controllers", 2}}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "controllers") || !strings.Contains(err.Error(), "not found") {
		t.Errorf("a missing Deployment: %v", err)
	}
	if _, err := inClusterAPI(t.TempDir()); err == nil || !strings.Contains(err.Error(), "service account") {
		t.Errorf("outside a pod: %v", err)
	}
}
