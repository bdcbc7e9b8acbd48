// Package localpath holds no code: this module exists to pin
// github.com/rancher/local-path-provisioner, whose main package is its
// module root (a program, so not importable), as a tool of go.mod, with the
// Kubernetes client libraries of the cluster. hack/build.sh builds it with
// `go build github.com/rancher/local-path-provisioner` here.
package localpath

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The bundled addon (services/controllers/internal/addons/bundled/
// local-storage.yaml) starts the provisioner with these flags; an upgrade
// that renamed one would leave the Deployment crash-looping.
var manifestFlags = []string{"--config", "--helper-pod-file", "--configmap-name", "--service-account-name", "--helper-image"}

func TestProvisionerTakesTheManifestsFlags(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "local-path-provisioner")
	// go test puts its GOROOT/bin first in PATH; GOFLAGS and CGO_ENABLED
	// are kept, so the build cache is shared
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "github.com/rancher/local-path-provisioner")
	build.Env = append(os.Environ(), "GOWORK=off") // this module is not in go.work
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(t.Context(), bin, "start", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("local-path-provisioner start --help: %v\n%s", err, out)
	}
	for _, f := range manifestFlags {
		if !strings.Contains(string(out), f+" ") {
			t.Errorf("local-path-provisioner start has no flag %s:\n%s", f, out)
		}
	}
}
