// Command controllers runs the upstream kube-controller-manager (no cloud
// loops), leader-elected, with the bootstrap-token and CSR controllers on so
// nodes can join.
package main

import (
	"os"

	"github.com/kubesplit/kubesplit/pkg/gctune"
	"github.com/kubesplit/kubesplit/services/controllers/internal/app"
)

func main() {
	gctune.Default(gctune.ControlPlanePercent)
	os.Exit(app.Main(os.Args[1:], os.Stdout, os.Stderr))
}
