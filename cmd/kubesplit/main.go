// Command kubesplit is the operator's tool: init, run, version and, later,
// tokens, snapshots and status.
package main

import (
	"os"

	"github.com/kubesplit/kubesplit/cmd/kubesplit/app"
)

func main() { os.Exit(app.Main(os.Args[1:], os.Stdout, os.Stderr)) }
