// Command apiserver runs the upstream kube-apiserver with kubesplit's secure,
// slim defaults, configured from a `kubesplit init` data directory.
package main

import (
	"os"

	"github.com/kubesplit/kubesplit/pkg/gctune"
	"github.com/kubesplit/kubesplit/services/apiserver/internal/app"
)

func main() {
	gctune.Default(gctune.ControlPlanePercent)
	os.Exit(app.Main(os.Args[1:], os.Stdout, os.Stderr))
}
