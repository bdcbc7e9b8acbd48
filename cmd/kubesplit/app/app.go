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
	root := newRoot()
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetArgs(args)
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

// newRoot is the command tree; the completion command (bash, zsh, fish,
// powershell) comes with cobra.
func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "kubesplit",
		Short: "kubesplit: Kubernetes with one slim program per control-plane role",
		Long: `kubesplit: Kubernetes with one slim program per control-plane role.

Exit codes: 0 done; 1 an error (one line naming the problem and its fix);
3 'certs check' found a certificate due or expired.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(initCommand(), runCommand(), tokenCommand(), upgradeCommand(), upgradeCheckCommand(), upgradeRolloutCommand(), statusCommand(), certsCommand(),
		kubeconfigCommand(), snapshotCommand(), imageCommand(), versionCommand())
	return root
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
