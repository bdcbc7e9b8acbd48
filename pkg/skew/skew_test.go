package skew

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/kubesplit/kubesplit/pkg/version"
)

// server answers /version with status codes from codes, then with gitVersion.
func server(t *testing.T, gitVersion string, codes ...int) (string, *atomic.Int32) {
	t.Helper()
	var calls atomic.Int32
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(calls.Add(1))
		if n <= len(codes) {
			http.Error(w, http.StatusText(codes[n-1]), codes[n-1])
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"gitVersion":%q}`, gitVersion)
	}))
	t.Cleanup(ts.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw})
	kc := filepath.Join(t.TempDir(), "role.kubeconfig")
	err := os.WriteFile(kc, fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q, certificate-authority-data: %q}}]
users: [{name: u, user: {}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`, ts.URL, base64.StdEncoding.EncodeToString(ca)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	return kc, &calls
}

func TestCheckRetriesTransientErrors(t *testing.T) {
	t.Parallel()
	kc, calls := server(t, "v1.36.3", http.StatusServiceUnavailable, http.StatusForbidden)
	got, err := Check(context.Background(), kc, version.RoleScheduler, "v1.35.0", nil)
	if err != nil || got != "v1.36.3" {
		t.Fatalf("Check: %q, %v", got, err)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}
}

func TestCheckRefusesSkew(t *testing.T) {
	t.Parallel()
	kc, _ := server(t, "v1.36.3")
	_, err := Check(context.Background(), kc, version.RoleScheduler, "v1.37.0", nil)
	var skewErr *version.SkewError
	if !errors.As(err, &skewErr) || skewErr.APIServerVersion != "v1.36.3" {
		t.Fatalf("Check: %v, want a *version.SkewError", err)
	}
}

func TestCheckDoesNotRetryRefusedCredentials(t *testing.T) {
	t.Parallel()
	kc, calls := server(t, "v1.36.3", http.StatusUnauthorized)
	_, err := Check(context.Background(), kc, version.RoleScheduler, "v1.36.0", nil)
	if !errors.Is(err, ErrUnauthorized) || calls.Load() != 1 {
		t.Fatalf("Check: %v after %d requests, want ErrUnauthorized after 1", err, calls.Load())
	}
}

func TestCheckStopsWithContext(t *testing.T) {
	t.Parallel()
	kc, _ := server(t, "v1.36.3", http.StatusServiceUnavailable, http.StatusServiceUnavailable, http.StatusServiceUnavailable)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Check(ctx, kc, version.RoleScheduler, "v1.36.0", nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Check: %v, want context.Canceled", err)
	}
}

func TestWaitHealthyWaitsForOK(t *testing.T) {
	t.Parallel()
	// what a starting apiserver answers while a post-start hook is not done
	kc, calls := server(t, "v1.36.3", http.StatusInternalServerError, http.StatusInternalServerError, http.StatusServiceUnavailable)
	var reported atomic.Int32
	if err := WaitHealthy(context.Background(), kc, func(error) { reported.Add(1) }); err != nil {
		t.Fatalf("WaitHealthy: %v", err)
	}
	if n := calls.Load(); n != 4 {
		t.Errorf("%d requests, want 4 (three unhealthy answers, then ok)", n)
	}
}

func TestWaitHealthyStopsWithContextAndRefusedCredentials(t *testing.T) {
	t.Parallel()
	kc, _ := server(t, "v1.36.3", http.StatusInternalServerError, http.StatusInternalServerError, http.StatusInternalServerError)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := WaitHealthy(ctx, kc, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitHealthy: %v, want context.Canceled", err)
	}
	kc, calls := server(t, "v1.36.3", http.StatusUnauthorized)
	if err := WaitHealthy(context.Background(), kc, nil); !errors.Is(err, ErrUnauthorized) || calls.Load() != 1 {
		t.Fatalf("WaitHealthy: %v after %d requests, want ErrUnauthorized after 1", err, calls.Load())
	}
}
