// Package app builds the upstream kube-scheduler command line from kubesplit's flags.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"

	"k8s.io/kubernetes/cmd/kube-scheduler/app"

	"github.com/kubesplit/kubesplit/pkg/component"
	"github.com/kubesplit/kubesplit/pkg/config"
	"github.com/kubesplit/kubesplit/pkg/version"
)

const summary = `kubesplit scheduler: upstream kube-scheduler, leader-elected.
Arguments after "--" go to kube-scheduler unchanged.`

// Main runs the scheduler and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	ours, extra := config.SplitPassthrough(args)
	c := component.Common{Role: "scheduler", SkewRole: version.RoleScheduler}
	var lease component.Lease
	fs := config.NewFlagSet("scheduler")
	c.AddFlags(fs, 10259)
	lease.AddFlags(fs)
	if err := config.Parse(fs, ours); err != nil {
		if errors.Is(err, config.ErrHelp) {
			config.PrintUsage(stdout, fs, summary)
			return 0
		}
		fmt.Fprintf(stderr, "scheduler: %v\n", err)
		return 1
	}
	if c.ShowVersion {
		fmt.Fprintln(stdout, c.VersionInfo())
		return 0
	}
	d, err := c.Validate()
	if err != nil {
		fmt.Fprintf(stderr, "scheduler: %v\n", err)
		return 1
	}
	if err := c.WaitForAPIServer(context.Background(), stderr); err != nil {
		fmt.Fprintf(stderr, "scheduler: %v\n", err)
		return 1
	}
	if err := c.StartHealthRelay(); err != nil {
		fmt.Fprintf(stderr, "scheduler: %v\n", err)
		return 1
	}
	cmd := app.NewSchedulerCommand()
	cmd.SetArgs(append(append(c.UpstreamArgs(d), lease.UpstreamArgs()...), extra...))
	if err := cmd.Execute(); err != nil {
		fmt.Fprintf(stderr, "scheduler: %v\n", err)
		return 1
	}
	return 0
}
