// Command tunnel-gateway is the only endpoint a node needs. This release
// serves its health endpoint only; the relay and reverse tunnels come with
// the node work.
package main

import (
	"os"

	"github.com/kubesplit/kubesplit/services/tunnel-gateway/internal/app"
)

func main() { os.Exit(app.Main(os.Args[1:], os.Stdout, os.Stderr)) }
