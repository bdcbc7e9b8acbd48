// Command imagebuild builds the kubesplit images for one or more platforms
// from hack/build.sh's binaries, offline, into one archive that `docker
// load` and `ctr images import` read, and optionally pushes them
// (hack/images.sh runs it; -h lists the flags).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/kubesplit/kubesplit/hack/imagebuild/internal/build"
)

func main() {
	cfg := build.DefaultConfig()
	fs := flag.NewFlagSet("imagebuild", flag.ExitOnError)
	cfg.AddFlags(fs)
	_ = fs.Parse(os.Args[1:])
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := build.Run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "imagebuild:", err)
		os.Exit(1)
	}
}
