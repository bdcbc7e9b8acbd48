// Package app builds the upstream kube-controller-manager command line from
// kubesplit's flags.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/kubernetes/cmd/kube-controller-manager/app"

	"github.com/kubesplit/kubesplit/pkg/bootstrap"
	"github.com/kubesplit/kubesplit/pkg/component"
	"github.com/kubesplit/kubesplit/pkg/config"
	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/logging"
	"github.com/kubesplit/kubesplit/pkg/version"
	"github.com/kubesplit/kubesplit/services/controllers/internal/addons"
	"github.com/kubesplit/kubesplit/services/controllers/internal/helmchart"
	"github.com/kubesplit/kubesplit/services/controllers/internal/servicelb"
)

const summary = `kubesplit controllers: upstream kube-controller-manager, leader-elected,
with the bootstrap-token signer and cleaner and CSR signing and approval on.
Arguments after "--" go to kube-controller-manager unchanged.`

// Main runs the controllers and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	ours, extra := config.SplitPassthrough(args)
	c := component.Common{Role: "controllers", SkewRole: version.RoleControllers}
	var lease component.Lease
	var clusterCIDR, serviceCIDR, manifestsDir string
	var nodeMask int
	var disabled []string
	var renewal bootstrap.Renewal
	var renewEvery time.Duration
	bundled := addons.BundledParams{ClusterDomain: bootstrap.DefaultClusterDNS, ImageTag: version.Version}
	fs := config.NewFlagSet("controllers")
	c.AddFlags(fs, 10257)
	lease.AddFlags(fs)
	fs.StringVar(&clusterCIDR, "cluster-cidr", bootstrap.DefaultClusterCIDR, "pod IP range; each node gets a slice of it as spec.podCIDR")
	fs.IntVar(&nodeMask, "node-cidr-mask-size", 24, "prefix length of each node's pod range")
	fs.StringVar(&serviceCIDR, "service-cidr", bootstrap.DefaultServiceCIDR, "Service IP range (must match the apiserver's)")
	fs.StringVar(&manifestsDir, "manifests-dir", "", "directory of manifests applied and kept in sync (default: DATA_DIR/manifests); bundled addons are written there")
	fs.StringSliceVar(&disabled, "disable", nil, "bundled addons not to deploy, removed if deployed (one of: "+strings.Join(addons.Known(), ", ")+")")
	fs.StringVar(&bundled.ClusterDNS, "cluster-dns", "", "IP of the DNS Service (default: the 10th address of --service-cidr, as the node agents assume)")
	fs.StringVar(&bundled.ClusterDomain, "cluster-domain", bundled.ClusterDomain, "cluster DNS domain")
	fs.StringVar(&bundled.ImageTag, "addon-image-tag", bundled.ImageTag, "tag of the bundled addons' images kubesplit/NAME (preloaded on nodes under it)")
	fs.StringToStringVar(&bundled.Images, "addon-image", nil, "NAME=IMAGE: use IMAGE for the bundled image kubesplit/NAME (repeatable)")
	fs.DurationVar(&renewal.Before, "cert-renew-before", bootstrap.DefaultRenewBefore, "renew a leaf certificate of the data directory when less than this is left (the roles reload renewed files)")
	fs.DurationVar(&renewEvery, "cert-check-interval", time.Hour, "how often certificates are checked for renewal (0: never, e.g. when another controllers instance or an outside tool renews them)")
	fs.DurationVar(&renewal.Validity, "cert-validity", 0, "lifetime of renewed certificates (testing; default one year)")
	_ = fs.MarkHidden("cert-validity")
	if err := config.Parse(fs, ours); err != nil {
		if errors.Is(err, config.ErrHelp) {
			config.PrintUsage(stdout, fs, summary)
			return 0
		}
		fmt.Fprintf(stderr, "controllers: %v\n", err)
		return 1
	}
	if c.ShowVersion {
		fmt.Fprintln(stdout, c.VersionInfo())
		return 0
	}
	fail := func(err error) int { fmt.Fprintf(stderr, "controllers: %v\n", err); return 1 }
	for flag, v := range map[string]string{"--cluster-cidr": clusterCIDR, "--service-cidr": serviceCIDR} {
		if _, _, err := net.ParseCIDR(v); err != nil {
			return fail(fmt.Errorf("%s %q is not a CIDR", flag, v))
		}
	}
	if bundled.ClusterDNS == "" {
		ip, err := tenthAddress(serviceCIDR)
		if err != nil {
			return fail(err)
		}
		bundled.ClusterDNS = ip
	} else if net.ParseIP(bundled.ClusterDNS) == nil {
		return fail(fmt.Errorf("--cluster-dns %q is not an IP address", bundled.ClusterDNS))
	}
	d, err := c.Validate()
	if err != nil {
		return fail(err)
	}
	if manifestsDir == "" {
		manifestsDir = d.Manifests()
	}
	if err := config.RequireFiles(d.ClusterCA().Cert, d.ClusterCA().Key, d.ServiceAccountKey(), d.Kubeconfig(layout.Addons)); err != nil {
		return fail(err)
	}
	if renewEvery < 0 {
		return fail(fmt.Errorf("--cert-check-interval %s is negative; use 0 to turn renewal off", renewEvery))
	}
	if renewEvery > 0 {
		// before anything waits for the apiserver: its own certificate may
		// be the one that expired while the cluster was off
		go bootstrap.KeepRenewed(context.Background(), d, renewal, renewEvery, logging.New("controllers", stderr, slog.LevelInfo).With("part", "certs"))
	}
	if err := c.WaitForAPIServer(context.Background(), stderr); err != nil {
		return fail(err)
	}
	upstream := append(c.UpstreamArgs(d), lease.UpstreamArgs()...)
	upstream = append(upstream,
		"--use-service-account-credentials=true",
		// each controller's own service-account client is made at start
		// (a ServiceAccount and a token request apiece) through the root
		// client: at upstream's 20 QPS that alone held the CSR signer, so
		// every node's join, ~5 s after the lease; a small control plane
		// can take the burst
		"--kube-api-qps=100",
		"--kube-api-burst=200",
		"--service-account-private-key-file="+d.ServiceAccountKey(),
		"--root-ca-file="+d.ClusterCA().Cert,
		"--cluster-signing-cert-file="+d.ClusterCA().Cert,
		"--cluster-signing-key-file="+d.ClusterCA().Key,
		// all default controllers plus the two that let nodes join with a bootstrap token
		"--controllers=*,bootstrap-signer-controller,token-cleaner-controller",
		"--allocate-node-cidrs=true",
		"--cluster-cidr="+clusterCIDR,
		"--node-cidr-mask-size="+strconv.Itoa(nodeMask),
		"--service-cluster-ip-range="+serviceCIDR,
		// hand the leader lease over on SIGTERM (the scheduler always does):
		// a restarted or upgraded controllers container takes over at once
		// instead of waiting for its predecessor's lease to expire (alpha in 1.36)
		"--feature-gates=ControllerManagerReleaseLeaderElectionLockOnExit=true",
	)
	log := logging.New("controllers", stderr, slog.LevelInfo)
	go func() {
		o := addons.Options{Kubeconfig: d.Kubeconfig(layout.Addons), ManifestsDir: manifestsDir, Disabled: disabled,
			Bundled: bundled, NodeTokenFile: d.NodeToken(), ClusterCA: d.ClusterCA()}
		if err := addons.Run(context.Background(), o, log.With("part", "addons")); err != nil {
			log.Error("addons stopped", "err", err)
		}
	}()
	lbImage, err := bundled.Image(servicelb.Name)
	if err != nil {
		return fail(err)
	}
	go func() {
		o := servicelb.Options{Kubeconfig: d.Kubeconfig(layout.Addons), Image: lbImage, Lease: lease,
			Disabled: slices.Contains(disabled, servicelb.Name)}
		if err := servicelb.Run(context.Background(), o, log.With("part", "servicelb")); err != nil {
			log.Error("servicelb stopped", "err", err)
		}
	}()
	go func() {
		o := helmchart.Options{Kubeconfig: d.Kubeconfig(layout.Addons), ManifestsDir: manifestsDir, Lease: lease,
			Disabled: slices.Contains(disabled, helmchart.Name)}
		if err := helmchart.Run(context.Background(), o, log.With("part", "helm-controller")); err != nil {
			log.Error("helm controller stopped", "err", err)
		}
	}()
	if err := c.StartHealthRelay(); err != nil {
		return fail(err)
	}
	cmd := app.NewControllerManagerCommand()
	cmd.SetArgs(append(upstream, extra...))
	if err := cmd.Execute(); err != nil {
		return fail(err)
	}
	return 0
}

// tenthAddress is the conventional cluster DNS IP of an IPv4 Service range.
func tenthAddress(cidr string) (string, error) {
	_, n, _ := net.ParseCIDR(cidr)
	ip := n.IP.To4()
	if ip == nil {
		return "", fmt.Errorf("--cluster-dns is required with an IPv6 --service-cidr %s", cidr)
	}
	return net.IPv4(ip[0], ip[1], ip[2], ip[3]+10).String(), nil
}
