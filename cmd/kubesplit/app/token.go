package app

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/pki"
	"github.com/kubesplit/kubesplit/pkg/tokenstore"
)

func tokenCommand() *cobra.Command {
	var kubeconfig string
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke the tokens nodes join with",
		Example: `  kubesplit token create --ttl 24h --description rack-3
  kubesplit token list
  kubesplit token revoke abcdef`,
	}
	cmd.PersistentFlags().StringVar(&kubeconfig, "kubeconfig", layout.Dir(".kubesplit").Kubeconfig(layout.Admin), "admin kubeconfig")

	var ttl time.Duration
	var description string
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a join token (printed once: it holds a secret)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ttl < 0 {
				return fmt.Errorf("--ttl %s is negative; use 0 for a token that never expires", ttl)
			}
			return withAdmin(cmd, kubeconfig, func(ctx context.Context, cs kubernetes.Interface, caHash string) error {
				tok, err := tokenstore.Create(ctx, cs, caHash, ttl, description)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), tok.String())
				return nil
			})
		},
	}
	create.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid (0: never expires)")
	create.Flags().StringVar(&description, "description", "", "a note shown by 'token list'")

	list := &cobra.Command{
		Use:   "list",
		Short: "List join tokens (ids and expiry, never secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var infos []tokenstore.Info
			err := withAdmin(cmd, kubeconfig, func(ctx context.Context, cs kubernetes.Interface, _ string) (err error) {
				infos, err = tokenstore.List(ctx, cs)
				return err
			})
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tEXPIRES\tDESCRIPTION")
			for _, i := range infos {
				exp := "never"
				if !i.Expires.IsZero() {
					exp = i.Expires.Format(time.RFC3339)
					if time.Now().After(i.Expires) {
						exp += " (expired)"
					}
				}
				fmt.Fprintf(w, "%s\t%s\t%s\n", i.ID, exp, i.Description)
			}
			return w.Flush()
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a join token by id (or by the whole token)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, kubeconfig, func(ctx context.Context, cs kubernetes.Interface, _ string) error {
				id, err := tokenstore.Revoke(ctx, cs, args[0])
				if errors.Is(err, tokenstore.ErrNotFound) {
					return fmt.Errorf("%w; see 'kubesplit token list'", err)
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "token %s revoked\n", id)
				return nil
			})
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

// withAdmin runs f with an admin client, the CA pin and a 30s deadline.
func withAdmin(cmd *cobra.Command, kubeconfig string, f func(ctx context.Context, cs kubernetes.Interface, caHash string) error) error {
	cs, caHash, err := adminClient(kubeconfig)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
	defer cancel()
	return f(ctx, cs, caHash)
}

// adminClient loads the admin kubeconfig and returns a client and the
// SHA-256 of the cluster CA it trusts (the join token's pin).
func adminClient(path string) (kubernetes.Interface, string, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, "", fmt.Errorf("loading kubeconfig %s: %w; pass --kubeconfig", path, err)
	}
	ca, err := pki.ParseCert(cfg.CAData, path)
	if err != nil {
		return nil, "", fmt.Errorf("kubeconfig %s has no embedded CA certificate: %w", path, err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, "", err
	}
	return cs, pki.Fingerprint(ca), nil
}
