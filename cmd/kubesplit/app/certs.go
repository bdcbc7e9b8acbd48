package app

import (
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubesplit/kubesplit/pkg/bootstrap"
	"github.com/kubesplit/kubesplit/pkg/box"
	"github.com/kubesplit/kubesplit/pkg/layout"
)

// defaultDataDir is ./.kubesplit (init's default, `make run`) where it
// exists, else a box's data directory where that exists.
func defaultDataDir() string {
	if _, err := os.Stat(".kubesplit"); err != nil {
		if d := string(box.Default().DataDir); d != "" {
			if _, err := os.Stat(d); err == nil {
				return d
			}
		}
	}
	return ".kubesplit"
}

func certsCommand() *cobra.Command {
	var dataDir string
	var r bootstrap.Renewal
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "List the cluster's certificates with their expiry, and renew them",
		Long: `Leaf certificates are renewed by themselves when less than --renew-before is left:
by 'kubesplit init' (and so by every start of a compose cluster or a box) and, while
the cluster runs, by the controllers (their --cert-renew-before, checked every
--cert-check-interval). The roles pick renewed files up without a restart. CAs are
not renewed (they last 10 years).

Exit codes: 0 fine; 1 an error; 3 (check) a certificate is due or expired.`,
		Example: `  kubesplit certs check --data-dir /var/lib/kubesplit
  kubesplit certs rotate                      # every leaf certificate, now
  kubesplit certs rotate apiserver.crt admin.kubeconfig
  # compose: docker compose -f deploy/compose/docker-compose.yml run --rm init certs check --data-dir /var/lib/kubesplit`,
	}
	cmd.PersistentFlags().StringVar(&dataDir, "data-dir", defaultDataDir(), "the cluster's data directory")
	cmd.PersistentFlags().DurationVar(&r.Before, "renew-before", bootstrap.DefaultRenewBefore, "a certificate with less than this left is due")

	check := &cobra.Command{
		Use:   "check",
		Short: "List every certificate: what it is, who signed it, when it expires",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := os.Stat(layout.Dir(dataDir).PKI()); err != nil {
				return fmt.Errorf("%s has no pki directory: %w; pass the cluster's --data-dir", dataDir, err)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tSIGNED BY\tEXPIRES\tLEFT\tSTATE")
			bad := false
			for _, c := range bootstrap.Certificates(layout.Dir(dataDir)) {
				if c.Err != nil {
					fmt.Fprintf(w, "%s\t%s\t-\t-\t%v\n", c.Name, orSelf(c.CA), c.Err)
					bad = bad || !errors.Is(c.Err, os.ErrNotExist)
					continue
				}
				state := "ok"
				switch {
				case time.Now().After(c.NotAfter):
					state, bad = "EXPIRED", true
				case c.IsCA:
					state = "ok (CA, not renewed)"
				case r.Due(c.NotAfter):
					state, bad = "due for renewal", true
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", c.Name, orSelf(c.CA), c.NotAfter.UTC().Format(time.RFC3339), left(c.NotAfter), state)
			}
			w.Flush()
			if bad {
				return exitError{3}
			}
			return nil
		},
	}
	var validity time.Duration
	rotate := &cobra.Command{
		Use:   "rotate [NAME...]",
		Short: "Renew leaf certificates now: every one, or those named (see 'certs check')",
		RunE: func(cmd *cobra.Command, names []string) error {
			d := layout.Dir(dataDir)
			if _, err := os.Stat(d.PKI()); err != nil {
				return fmt.Errorf("%s has no pki directory: %w; pass the cluster's --data-dir", dataDir, err)
			}
			if len(names) == 0 {
				for _, c := range bootstrap.Certificates(d) {
					if !c.IsCA && c.Err == nil {
						names = append(names, c.Name)
					}
				}
			}
			r.Validity = validity
			done, err := bootstrap.Renew(d, r, names...)
			for _, x := range done {
				fmt.Fprintf(cmd.OutOrStdout(), "renewed %s: until %s\n", x.Name, x.After.UTC().Format(time.RFC3339))
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "the roles load the new files by themselves (the apiserver within a minute, clients at their next connection)")
			return nil
		},
	}
	rotate.Flags().DurationVar(&validity, "validity", 0, "lifetime of the new certificates (testing; default one year)")
	_ = rotate.Flags().MarkHidden("validity")
	cmd.AddCommand(check, rotate)
	return cmd
}

func orSelf(ca string) string {
	if ca == "" {
		return "(itself)"
	}
	return ca + "-ca"
}

// left is a rough duration: days, or hours and minutes under two days.
func left(t time.Time) string {
	d := time.Until(t)
	switch {
	case d < 0:
		return "0"
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	default:
		return d.Truncate(time.Minute).String()
	}
}
