// Command servicelb is ServiceLB's forwarder (the kubesplit/servicelb
// image): it carries a LoadBalancer Service's ports from the node to the
// Service. See package servicelb.
package main

import (
	"os"

	"github.com/kubesplit/kubesplit/pkg/servicelb"
)

func main() { os.Exit(servicelb.Main(os.Args[1:], os.Stderr)) }
