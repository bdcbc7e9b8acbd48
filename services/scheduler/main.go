// Command scheduler runs the upstream kube-scheduler, leader-elected, with its
// own kubeconfig and client certificate from a `kubesplit init` data directory.
package main

import (
	"os"

	"github.com/kubesplit/kubesplit/pkg/gctune"
	"github.com/kubesplit/kubesplit/services/scheduler/internal/app"
)

func main() {
	gctune.Default(gctune.ControlPlanePercent)
	os.Exit(app.Main(os.Args[1:], os.Stdout, os.Stderr))
}
