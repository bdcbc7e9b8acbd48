// Package multiarch proves that the arm64 control-plane images run: the
// datastore and apiserver arm64 images start on this (amd64) machine under
// Debian's qemu-user-static and the apiserver becomes ready.
//
// hack/test.sh builds the images first (PLATFORMS=linux/arm64
// IMAGES="apiserver datastore" hack/build.sh and hack/images.sh, which load
// them as kubesplit/NAME:TAG-arm64) and registers the emulator
// (hack/binfmt.sh arm64). Missing images or emulation fail the test: only
// -short skips it.
package multiarch

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kubesplit/kubesplit/e2e/dockercluster"
)

const arch = "arm64"

// emulated checks that the kernel runs aarch64 binaries through qemu, with
// the F flag: the emulator is opened at registration, so containers, which
// do not hold it, can use it too.
func emulated() error {
	b, err := os.ReadFile("/proc/sys/fs/binfmt_misc/qemu-aarch64")
	if err != nil {
		return err
	}
	lines := strings.Split(string(b), "\n")
	if lines[0] != "enabled" {
		return fmt.Errorf("the qemu-aarch64 binfmt handler is %s", lines[0])
	}
	for _, l := range lines {
		if flags, ok := strings.CutPrefix(l, "flags: "); ok && strings.Contains(flags, "F") {
			return nil
		}
	}
	return fmt.Errorf("the qemu-aarch64 binfmt handler lacks the F flag")
}

func TestArm64ControlPlaneUnderEmulation(t *testing.T) {
	if testing.Short() {
		t.Skip("starts arm64 containers under emulation, which takes minutes")
	}
	if runtime.GOARCH != arch {
		if err := emulated(); err != nil {
			t.Fatalf("arm64 binaries cannot run in containers here: %v; run `hack/binfmt.sh arm64` as root "+
				"(make deps installs qemu-user-static)", err)
		}
	}
	tag := dockercluster.DefaultTag() + "-" + arch
	roles := []string{"datastore", "apiserver"}
	ctx := context.Background()
	for _, r := range roles {
		img := "kubesplit/" + r + ":" + tag
		got, err := dockercluster.Docker(ctx, "image", "inspect", "-f", "{{.Os}}/{{.Architecture}}", img)
		if err != nil {
			t.Fatalf("image %s is missing: build it with PLATFORMS=linux/arm64 IMAGES=%q hack/build.sh and hack/images.sh (%v)",
				img, strings.Join(roles, " "), err)
		}
		if got != "linux/"+arch {
			t.Fatalf("image %s is for %s, not linux/%s", img, got, arch)
		}
	}

	start := time.Now()
	c := dockercluster.Start(t, dockercluster.Options{Tag: tag, Roles: roles, ReadyTimeout: 5 * time.Minute})
	t.Logf("arm64 datastore and apiserver answered after %s", time.Since(start).Round(time.Second))

	rc := c.Client.Discovery().RESTClient()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		body, err := rc.Get().AbsPath("/readyz").DoRaw(rctx)
		cancel()
		if err == nil && string(body) == "ok" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz: %v: %s", err, body)
		}
		time.Sleep(2 * time.Second)
	}

	// the process answering is the arm64 build: /version reports the
	// platform the binary was compiled for
	body, err := rc.Get().AbsPath("/version").DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var v struct{ Platform, GitVersion string }
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	if v.Platform != "linux/"+arch {
		t.Errorf("apiserver /version says platform %q, want linux/%s", v.Platform, arch)
	}
	t.Logf("/readyz ok from apiserver %s on %s (emulated on %s/%s)", v.GitVersion, v.Platform, runtime.GOOS, runtime.GOARCH)
}
