package app

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubesplit/kubesplit/pkg/bootstrap"
	"github.com/kubesplit/kubesplit/pkg/layout"
)

func initCommand() *cobra.Command {
	var o bootstrap.Options
	var dataDir, owner, copyAdmin, copyToken, secret, kubeconfig string
	var pub publicAddress
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Write the PKI, keys, configs and kubeconfigs a cluster needs into a data directory",
		Long: `init writes the cluster CA, front-proxy CA, datastore CA, the service-account key
pair, the encryption-at-rest key, a client certificate and kubeconfig per role and
an admin kubeconfig. Run again, it keeps every file that exists after checking it,
renewing leaf certificates with less than --cert-renew-before left; a corrupt or
mismatched file is reported and left alone.`,
		Example: `  kubesplit init                                   # ./.kubesplit, for kubesplit run
  kubesplit init --data-dir /var/lib/kubesplit --owner 65532:65532 --server https://10.0.0.5:6443
  kubesplit init --data-dir /tmp/k --cert-renew-before 720h
  kubesplit init --secret kubesplit/pki --server https://203.0.113.7:6443   # in a Job (hosted control plane)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			uid, gid, err := parseOwner(owner)
			if err != nil {
				return err
			}
			if copyToken != "" {
				o.NodeToken = true
			}
			if secret != "" {
				for _, f := range []string{"data-dir", "owner", "copy-admin-kubeconfig", "copy-node-token"} {
					if cmd.Flags().Changed(f) {
						return fmt.Errorf("--secret keeps the files in a Secret; --%s does not apply with it", f)
					}
				}
				return initSecret(cmd, secret, kubeconfig, o, pub)
			}
			for _, f := range []string{"public-address", "public-address-from-service"} {
				if cmd.Flags().Changed(f) {
					return fmt.Errorf("--%s is for --secret (a hosted control plane); in a data directory use --apiserver-san, --gateway-san and --server", f)
				}
			}
			o.DataDir = layout.Dir(dataDir)
			rep, err := bootstrap.Run(o)
			if err != nil {
				return err
			}
			if uid >= 0 {
				// the roles run as this user (their images' non-root user)
				if err := bootstrap.Chown(dataDir, uid, gid); err != nil {
					return fmt.Errorf("--owner: %w", err)
				}
			}
			for _, c := range []struct{ from, to string }{{o.DataDir.Kubeconfig(layout.Admin), copyAdmin}, {o.DataDir.NodeToken(), copyToken}} {
				if c.to != "" {
					if err := copyOwnedLikeDir(c.from, c.to); err != nil {
						return err
					}
				}
			}
			for _, f := range rep.Renewed {
				fmt.Fprintf(cmd.OutOrStdout(), "renewed %s (less than %s left)\n", f, o.Renewal.Before)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "data directory %s: %d files created, %d renewed, %d kept\nadmin kubeconfig: %s\n",
				dataDir, len(rep.Created), len(rep.Renewed), len(rep.Kept), o.DataDir.Kubeconfig(layout.Admin))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", ".kubesplit", "directory to write the cluster's files into")
	f.StringVar(&o.Server, "server", "https://127.0.0.1:6443", "apiserver URL for the admin kubeconfig")
	f.StringVar(&o.ServerName, "server-name", "", "the apiserver's TLS server name at --server, for an SNI router in front of it that routes by name: the admin kubeconfig's tls-server-name, and it joins the apiserver certificate")
	f.StringVar(&o.InternalServer, "internal-server", "", "apiserver URL for the scheduler's and controllers' kubeconfigs (default: --server)")
	f.StringSliceVar(&o.APIServerSANs, "apiserver-san", nil, "extra host names or IPs for the apiserver certificate")
	f.StringSliceVar(&o.DatastoreSANs, "datastore-san", nil, "extra host names or IPs for the datastore certificate")
	f.StringSliceVar(&o.GatewaySANs, "gateway-san", nil, "extra host names or IPs nodes use to reach the tunnel gateway")
	f.StringVar(&o.ServiceCIDR, "service-cidr", bootstrap.DefaultServiceCIDR, "Service IP range (its first address joins the apiserver certificate)")
	f.BoolVar(&o.NodeToken, "node-token", false, "also write a default join token that never expires (config/node-token); the controllers store it in the cluster")
	f.DurationVar(&o.Renewal.Before, "cert-renew-before", bootstrap.DefaultRenewBefore, "renew a leaf certificate that has less than this left")
	f.DurationVar(&o.Renewal.Validity, "cert-validity", 0, "lifetime of new leaf certificates (testing; default one year)")
	_ = f.MarkHidden("cert-validity")
	f.StringVar(&owner, "owner", "", "UID:GID to own the data directory's files (the user the roles run as, e.g. 65532:65532 for the images)")
	f.StringVar(&copyAdmin, "copy-admin-kubeconfig", "", "also copy the admin kubeconfig to this path, owned like its directory (e.g. a host bind mount)")
	f.StringVar(&copyToken, "copy-node-token", "", "write the default join token (implies --node-token) to this path too, owned like its directory")
	f.StringVar(&secret, "secret", "", "NAMESPACE/NAME: keep the PKI, configs and kubeconfigs in this Secret instead of a data directory (created, or read, completed and renewed, and written back; a CA is never regenerated)")
	f.StringVar(&kubeconfig, "kubeconfig", "", "with --secret: the cluster that holds the Secret (default: in-cluster, else $KUBECONFIG)")
	f.StringVar(&pub.address, "public-address", "", "with --secret: the IP or name nodes and users reach the control plane at (the gateway's Service); it joins the apiserver and gateway certificates, is the admin kubeconfig's server (port --public-api-port) unless --server is given, and is kept in the Secret as config/public-address")
	f.StringVar(&pub.service, "public-address-from-service", "", "with --secret: wait for this Service (in the Secret's namespace) to have an address, a LoadBalancer's ingress or else an external IP, and use it as --public-address")
	f.IntVar(&pub.apiPort, "public-api-port", 6443, "with --public-address: the port of the apiserver at that address")
	f.DurationVar(&pub.timeout, "public-address-timeout", 5*time.Minute, "how long --public-address-from-service waits")
	return cmd
}

// parseOwner reads "UID:GID"; an empty string is (-1, -1): leave ownership alone.
func parseOwner(s string) (uid, gid int, err error) {
	if s == "" {
		return -1, -1, nil
	}
	u, g, ok := strings.Cut(s, ":")
	uid, err1 := strconv.Atoi(u)
	gid, err2 := strconv.Atoi(g)
	if !ok || err1 != nil || err2 != nil || uid < 0 || gid < 0 {
		return -1, -1, fmt.Errorf("--owner %q: want numeric UID:GID, e.g. 65532:65532", s)
	}
	return uid, gid, nil
}

// copyOwnedLikeDir copies a secret file (mode 0600) into to, owned by
// whoever owns to's directory: init runs as root in a container, the file is
// for the user whose directory it lands in.
func copyOwnedLikeDir(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	dir, err := os.Stat(filepath.Dir(to))
	if err != nil {
		return fmt.Errorf("cannot copy %s: %w", filepath.Base(from), err)
	}
	tmp := to + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	if uid, gid, ok := statOwner(dir); ok {
		_ = os.Chown(tmp, uid, gid) // best effort: not root, it is ours already
	}
	return os.Rename(tmp, to)
}
