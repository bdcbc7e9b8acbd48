// Package app holds the kubesplit command line.
package app

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/kubesplit/kubesplit/pkg/version"
)

// Main runs the command line and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	root := &cobra.Command{
		Use:           "kubesplit",
		Short:         "kubesplit: Kubernetes with one slim program per control-plane role",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetArgs(args)
	root.AddCommand(initCommand(), runCommand(), tokenCommand(), upgradeCommand(), statusCommand(), certsCommand(), kubeconfigCommand(), snapshotCommand(), imageCommand(), versionCommand())
	if err := root.Execute(); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			return ee.code
		}
		fmt.Fprintf(stderr, "kubesplit: %v\n", err)
		return 1
	}
	return 0
}

// exitError ends the program with a code after the message was already printed.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

func versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the kubesplit and Kubernetes versions",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), version.Info("cli"))
		},
	}
}
