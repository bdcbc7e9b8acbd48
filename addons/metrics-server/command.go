package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/client-go/pkg/version"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/component-base/logs"
	"k8s.io/component-base/term"
	"sigs.k8s.io/metrics-server/cmd/metrics-server/app/options"
)

// newCommand is metrics-server's own command (its app.NewMetricsServerCommand
// and runCommand: the same options, flags, validation and server) with
// --kubelet-via-apiserver added. Upstream's command keeps its options to
// itself, so the kubelet client cannot be changed from outside it.
func newCommand(stop <-chan struct{}) *cobra.Command {
	opts := options.NewOptions()
	var viaAPIServer bool
	cmd := &cobra.Command{
		Use:          "metrics-server",
		Short:        "Launch metrics-server",
		Long:         "Launch metrics-server (kubesplit build: see --kubelet-via-apiserver)",
		SilenceUsage: true,
		RunE: func(*cobra.Command, []string) error {
			if opts.ShowVersion {
				fmt.Println(version.Get().GitVersion)
				return nil
			}
			return run(opts, viaAPIServer, stop)
		},
	}
	nfs := opts.Flags()
	nfs.FlagSet("kubesplit").BoolVar(&viaAPIServer, "kubelet-via-apiserver", false,
		"scrape each kubelet through the apiserver's node proxy (GET /api/v1/nodes/NODE/proxy/metrics/resource) "+
			"instead of dialling it: for kubelets only the apiserver can reach. The apiserver verifies the kubelet's "+
			"serving certificate; the --kubelet-* TLS and address flags do not apply")
	local := flag.NewFlagSet(os.Args[0], flag.ExitOnError)
	logs.AddGoFlags(local)
	// as upstream: honour -stderrthreshold with -logtostderr (kubernetes/klog#212)
	_ = local.Set("legacy_stderr_threshold_behavior", "false")
	_ = local.Set("stderrthreshold", "INFO")
	nfs.FlagSet("logging").AddGoFlagSet(local)
	for _, name := range nfs.Order {
		cmd.Flags().AddFlagSet(nfs.FlagSet(name))
	}
	cols, _, _ := term.TerminalSize(cmd.OutOrStdout())
	cmd.SetUsageFunc(func(cmd *cobra.Command) error {
		fmt.Fprintf(cmd.OutOrStderr(), "Usage:\n  %s\n", cmd.UseLine())
		cliflag.PrintSections(cmd.OutOrStderr(), nfs, cols)
		return nil
	})
	cmd.SetHelpFunc(func(cmd *cobra.Command, _ []string) {
		fmt.Fprintf(cmd.OutOrStdout(), "%s\n\nUsage:\n  %s\n", cmd.Long, cmd.UseLine())
		cliflag.PrintSections(cmd.OutOrStdout(), nfs, cols)
	})
	return cmd
}

// run is upstream's runCommand, with the kubelet client pointed at the
// apiserver when asked.
func run(o *options.Options, viaAPIServer bool, stop <-chan struct{}) error {
	if errs := o.Validate(); len(errs) > 0 {
		return errors.Join(errs...)
	}
	if viaAPIServer {
		if err := checkViaAPIServer(o.KubeletClient); err != nil {
			return err
		}
	}
	config, err := o.ServerConfig()
	if err != nil {
		return err
	}
	if viaAPIServer {
		if err := kubeletViaAPIServer(config.Kubelet, config.Rest); err != nil {
			return err
		}
	}
	s, err := config.Complete()
	if err != nil {
		return err
	}
	return s.RunUntil(stop)
}
