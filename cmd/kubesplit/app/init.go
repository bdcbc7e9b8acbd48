package app

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kubesplit/kubesplit/pkg/bootstrap"
	"github.com/kubesplit/kubesplit/pkg/layout"
)

func initCommand() *cobra.Command {
	var o bootstrap.Options
	var dataDir string
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Write the PKI, keys, configs and kubeconfigs a cluster needs into a data directory",
		Long: `init writes the cluster CA, front-proxy CA, datastore CA, the service-account key
pair, the encryption-at-rest key, a client certificate and kubeconfig per role and
an admin kubeconfig. Run again, it keeps every file that exists after checking it;
a corrupt or mismatched file is reported and left alone.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.DataDir = layout.Dir(dataDir)
			rep, err := bootstrap.Run(o)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "data directory %s: %d files created, %d kept\nadmin kubeconfig: %s\n",
				dataDir, len(rep.Created), len(rep.Kept), o.DataDir.Kubeconfig(layout.Admin))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", ".kubesplit", "directory to write the cluster's files into")
	f.StringVar(&o.Server, "server", "https://127.0.0.1:6443", "apiserver URL for the admin kubeconfig")
	f.StringVar(&o.InternalServer, "internal-server", "", "apiserver URL for the scheduler's and controllers' kubeconfigs (default: --server)")
	f.StringSliceVar(&o.APIServerSANs, "apiserver-san", nil, "extra host names or IPs for the apiserver certificate")
	f.StringSliceVar(&o.DatastoreSANs, "datastore-san", nil, "extra host names or IPs for the datastore certificate")
	f.StringSliceVar(&o.GatewaySANs, "gateway-san", nil, "extra host names or IPs nodes use to reach the tunnel gateway")
	f.StringVar(&o.ServiceCIDR, "service-cidr", bootstrap.DefaultServiceCIDR, "Service IP range (its first address joins the apiserver certificate)")
	return cmd
}
