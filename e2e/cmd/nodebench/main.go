// Command nodebench measures the node side on a containerised cluster (two
// nodes behind the tunnel gateway, as the node tests run it), in phases:
//
//	startup   pod startup latency, one at a time and in a burst (image preloaded)
//	exec      exec round trips through the apiserver and the tunnel against a
//	          second apiserver with a route to the nodes, interleaved, and
//	          exec straight to the kubelet
//	webhook   API calls answered after a validating and a mutating webhook
//	          served by pods on the nodes, against calls without webhooks,
//	          interleaved (and through the directly routed apiserver if it
//	          can reach pod addresses)
//	memory    the node agent's idle RSS and each kube-system (addon) pod's
//	          idle memory from its pod cgroup
//	restarts  how long tunnels take to come back after the gateway restarts
//
// `-only exec,webhook -per-dial` runs just those, with a third apiserver
// whose egress dials the gateway anew per connection (--egress-relay=false)
// interleaved with the others: the egress relay's A/B in one run. It
// prints a table and writes JSON under results/.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// phases in the order they run (restarts last: it disrupts the tunnels).
var phases = []string{"startup", "exec", "webhook", "memory", "restarts"}

type options struct {
	pods, execs, webhooks, restarts int
	settle                          time.Duration
	perDial                         bool
	gatewayShares                   int
	only                            []string
}

func (o options) has(phase string) bool { return slices.Contains(o.only, phase) }

func main() {
	var o options
	flag.IntVar(&o.pods, "pods", 20, "pods in the startup burst")
	flag.IntVar(&o.execs, "execs", 100, "exec round trips per path")
	flag.IntVar(&o.webhooks, "webhooks", 200, "API calls per path in the webhook phase")
	flag.IntVar(&o.restarts, "gateway-restarts", 3, "gateway restarts timed")
	flag.DurationVar(&o.settle, "settle", 20*time.Second, "idle time before reading memory")
	only := flag.String("only", strings.Join(phases, ","), "phases to run, comma-separated, of: "+strings.Join(phases, ", "))
	flag.BoolVar(&o.perDial, "per-dial", false, "exec and webhook phases: also through an apiserver whose egress opens a new mTLS connection to the gateway per dial (--egress-relay=false), interleaved with the others")
	flag.IntVar(&o.gatewayShares, "gateway-cpu-shares", 0, "override the gateway container's CPU weight (docker update --cpu-shares; 0: the role's own from roles/, 8192; 1024 is Docker's default): its priority for the CPU against the nodes' work")
	out := flag.String("out", "results", "folder for the JSON results")
	flag.Parse()
	for _, p := range strings.Split(*only, ",") {
		if p = strings.TrimSpace(p); !slices.Contains(phases, p) {
			fmt.Fprintf(os.Stderr, "nodebench: unknown phase %q in -only: use a comma-separated list of %s\n", p, strings.Join(phases, ", "))
			os.Exit(2)
		}
		o.only = append(o.only, p)
	}

	tb := &benchTB{}
	defer tb.cleanup()
	r, err := run(tb, o)
	if err != nil {
		tb.cleanup()
		fmt.Fprintln(os.Stderr, "nodebench:", err)
		os.Exit(1)
	}
	printTable(r)
	if err := os.MkdirAll(*out, 0o755); err == nil {
		name := filepath.Join(*out, "nodes-"+time.Now().UTC().Format("20060102T150405Z")+".json")
		b, _ := json.MarshalIndent(r, "", "  ")
		if err := os.WriteFile(name, b, 0o644); err == nil {
			fmt.Println("results:", name)
		}
	}
}
