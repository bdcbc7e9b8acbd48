package agent

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kubesplit/kubesplit/pkg/version"
)

// fakeAPIServer serves /version with gitVersion, after answering 503 to the
// first failFirst requests (an apiserver still starting, or the gateway's
// relay not up yet).
func fakeAPIServer(t *testing.T, gitVersion string, failFirst int32) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var calls atomic.Int32
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/version" {
			http.NotFound(w, r)
			return
		}
		if calls.Add(1) <= failFirst {
			http.Error(w, "the apiserver is starting", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"major":"1","minor":"36","gitVersion":%q,"platform":"linux/amd64"}`, gitVersion)
	}))
	t.Cleanup(ts.Close)
	return ts, &calls
}

// joinedConfig is an agent config whose kubelet.kubeconfig points at ts, as
// bootstrapClient leaves it (a CA file, no token).
func joinedConfig(t *testing.T, ts *httptest.Server) Config {
	t.Helper()
	c := Config{DataDir: t.TempDir()}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["kubesplit"] = &clientcmdapi.Cluster{
		Server:                   ts.URL,
		CertificateAuthorityData: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}),
	}
	kc.AuthInfos["node"] = &clientcmdapi.AuthInfo{}
	kc.Contexts["node"] = &clientcmdapi.Context{Cluster: "kubesplit", AuthInfo: "node"}
	kc.CurrentContext = "node"
	if err := clientcmd.WriteToFile(*kc, c.kubeletKubeconfig()); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCheckSkewRefusesTooOldKubeletAfterRetrying(t *testing.T) {
	t.Parallel()
	ts, calls := fakeAPIServer(t, "v1.36.3", 1)
	c := joinedConfig(t, ts)
	c.FakeKubernetesVersion = "v1.32.0"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := c.checkSkew(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var skewErr *version.SkewError
	if !errors.As(err, &skewErr) {
		t.Fatalf("checkSkew: %v, want a *version.SkewError", err)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("/version was asked %d times, want 2 (the 503 retried once)", n)
	}
	for _, want := range []string{"kubelet v1.32.0", "apiserver v1.36.3", "more than three minors older", "upgrade the node agent"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}

	// Main's exit path: one plain line, and the code the supervisor does not restart
	var stderr, logs bytes.Buffer
	if code := exitCode(fmt.Errorf("starting: %w", err), &stderr, slog.New(slog.NewTextHandler(&logs, nil))); code != ExitConfig {
		t.Errorf("exit code %d, want %d", code, ExitConfig)
	}
	if got, want := stderr.String(), "kubesplit-node: "+err.Error()+"\n"; got != want {
		t.Errorf("stderr %q, want %q", got, want)
	}
}

func TestCheckSkewRefusesNewerKubelet(t *testing.T) {
	t.Parallel()
	ts, _ := fakeAPIServer(t, "v1.36.3", 0)
	c := joinedConfig(t, ts)
	c.FakeKubernetesVersion = "v1.37.0"
	err := c.checkSkew(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "kubelet v1.37.0 is newer than apiserver v1.36.3") {
		t.Fatalf("checkSkew: %v, want a refusal naming both versions", err)
	}
}

func TestCheckSkewAcceptsKubeletThreeMinorsOlder(t *testing.T) {
	t.Parallel()
	ts, _ := fakeAPIServer(t, "v1.36.3", 0)
	c := joinedConfig(t, ts)
	c.FakeKubernetesVersion = "v1.33.2"
	var logs bytes.Buffer
	if err := c.checkSkew(context.Background(), slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatalf("checkSkew: %v", err)
	}
	if !strings.Contains(logs.String(), `msg="version skew checked" kubelet=v1.33.2 apiserver=v1.36.3`) {
		t.Errorf("log %q lacks the check's line", logs.String())
	}
}

func TestExitCodeOfOtherFailures(t *testing.T) {
	t.Parallel()
	var stderr bytes.Buffer
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if code := exitCode(errors.New("containerd exited"), &stderr, log); code != 1 {
		t.Errorf("exit code %d, want 1 (the supervisor restarts the agent)", code)
	}
	if code := exitCode(nil, &stderr, log); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

func TestFakeKubernetesVersionFlagIsHidden(t *testing.T) {
	t.Parallel()
	c := parse(t, "--fake-kubernetes-version", "v1.30.0")
	if c.FakeKubernetesVersion != "v1.30.0" {
		t.Fatalf("--fake-kubernetes-version: got %q", c.FakeKubernetesVersion)
	}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	(&Config{}).AddFlags(fs)
	if strings.Contains(fs.FlagUsages(), "fake-kubernetes-version") {
		t.Error("--fake-kubernetes-version shows in the usage; it is for tests only")
	}
}
