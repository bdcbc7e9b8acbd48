// Command scheduler runs the upstream kube-scheduler, leader-elected, with its
// own kubeconfig and client certificate from a `kubesplit init` data directory.
package main

import (
	"os"

	"github.com/kubesplit/kubesplit/pkg/gctune"
	"github.com/kubesplit/kubesplit/pkg/health"
	"github.com/kubesplit/kubesplit/services/scheduler/internal/app"
)

func main() {
	if code, ok := health.MaybeProbe(os.Args[1:], os.Stderr); ok { // the image's health check
		os.Exit(code)
	}
	gctune.Default(gctune.ControlPlanePercent)
	os.Exit(app.Main(os.Args[1:], os.Stdout, os.Stderr))
}
