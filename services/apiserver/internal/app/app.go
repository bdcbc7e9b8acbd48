// Package app turns kubesplit's few apiserver flags into the upstream
// kube-apiserver command line and runs it in-process.
package app

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"k8s.io/kubernetes/cmd/kube-apiserver/app"

	"github.com/kubesplit/kubesplit/pkg/bootstrap"
	"github.com/kubesplit/kubesplit/pkg/config"
	"github.com/kubesplit/kubesplit/pkg/health"
	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/pki"
	"github.com/kubesplit/kubesplit/pkg/version"
)

const summary = `kubesplit apiserver: upstream kube-apiserver with RBAC+Node authorization,
NodeRestriction and PodSecurity admission, no anonymous access beyond health,
secrets encrypted at rest. Arguments after "--" go to kube-apiserver unchanged.`

// Options are kubesplit's apiserver flags.
type Options struct {
	DataDir           string
	DatastoreEndpoint string
	BindAddress       string
	SecurePort        int
	AdvertiseAddress  string
	ServiceCIDR       string
	AuditLog          bool
	AuditLogPath      string
	EgressConfig      string
	EgressGateway     string
	EgressDirect      bool // one mTLS connection to the gateway per dial, no relay (--egress-relay=false)
	EgressWait        bool // the relay answers no CONNECT before the gateway has (--egress-relay-early=false)
	ShowVersion       bool
	HealthAddress     string // IP:port relaying health in plain HTTP (empty: off)
}

// Main runs the apiserver and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	ours, extra := config.SplitPassthrough(args)
	var o Options
	fs := config.NewFlagSet("apiserver")
	fs.StringVar(&o.DataDir, "data-dir", "", "data directory written by 'kubesplit init' (required)")
	fs.StringVar(&o.DatastoreEndpoint, "datastore-endpoint", "https://127.0.0.1:2379", "URL of the kubesplit datastore (etcd v3 API, mutual TLS)")
	fs.StringVar(&o.BindAddress, "bind-address", "0.0.0.0", "address to serve on")
	fs.IntVar(&o.SecurePort, "secure-port", 6443, "HTTPS port")
	fs.StringVar(&o.AdvertiseAddress, "advertise-address", "", "IP advertised to the cluster as the kubernetes Service endpoint (default: the host's primary IP)")
	fs.StringVar(&o.ServiceCIDR, "service-cidr", bootstrap.DefaultServiceCIDR, "Service IP range")
	fs.BoolVar(&o.AuditLog, "audit-log", false, "write an audit log (policy: config/audit-policy.yaml in the data dir)")
	fs.StringVar(&o.AuditLogPath, "audit-log-path", "", "where the audit log goes (default: logs/audit.log in the data dir; '-' for stdout)")
	fs.StringVar(&o.EgressGateway, "egress-gateway", "", "https://HOST:PORT of the tunnel gateway's egress: kubelet traffic (logs, exec, port-forward) goes through node tunnels")
	relay := fs.Bool("egress-relay", true, "carry egress connections as streams of one HTTP/2 connection to the gateway (false: a new mTLS connection per dial, as upstream does)")
	early := fs.Bool("egress-relay-early", true, "the relay answers a CONNECT before the gateway does when the gateway accepted one to the same target in the last 2 minutes (one round trip less per exec, log and port-forward; false: always wait for the gateway)")
	fs.StringVar(&o.EgressConfig, "egress-selector-config", "", "your own EgressSelectorConfiguration file (instead of --egress-gateway)")
	fs.StringVar(&o.HealthAddress, "health-address", "", "IP:port serving /healthz, /livez and /readyz (nothing else) in plain HTTP for container health checks, e.g. 127.0.0.1:PORT (empty: off)")
	fs.BoolVar(&o.ShowVersion, "version", false, "print the version and exit")
	if err := config.Parse(fs, ours); err != nil {
		if errors.Is(err, config.ErrHelp) {
			config.PrintUsage(stdout, fs, summary)
			return 0
		}
		fmt.Fprintf(stderr, "apiserver: %v\n", err)
		return 1
	}
	o.EgressDirect, o.EgressWait = !*relay, !*early
	if o.ShowVersion {
		fmt.Fprintln(stdout, version.Info("apiserver"))
		return 0
	}
	upstream, err := o.UpstreamArgs()
	if err != nil {
		fmt.Fprintf(stderr, "apiserver: %v\n", err)
		return 1
	}
	if o.HealthAddress != "" {
		if err := health.StartLocalRelay(o.HealthAddress, "--health-address", o.BindAddress, o.SecurePort); err != nil {
			fmt.Fprintf(stderr, "apiserver: %v\n", err)
			return 1
		}
	}
	if o.EgressGateway != "" && !o.EgressDirect {
		if err := o.startEgressRelay(stderr); err != nil {
			fmt.Fprintf(stderr, "apiserver: %v\n", err)
			return 1
		}
	}
	cmd := app.NewAPIServerCommand()
	cmd.SetArgs(append(upstream, extra...))
	if err := cmd.Execute(); err != nil {
		fmt.Fprintf(stderr, "apiserver: %v\n", err)
		return 1
	}
	return 0
}

// UpstreamArgs checks the options and builds kube-apiserver's command line.
func (o Options) UpstreamArgs() ([]string, error) {
	if err := config.CheckDataDir(o.DataDir, true); err != nil {
		return nil, err
	}
	d := layout.Dir(o.DataDir)
	u, err := url.Parse(o.DatastoreEndpoint)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("--datastore-endpoint %q must be an https://HOST:PORT URL (the datastore always uses TLS)", o.DatastoreEndpoint)
	}
	if _, _, err := net.ParseCIDR(o.ServiceCIDR); err != nil {
		return nil, fmt.Errorf("--service-cidr %q is not a CIDR (example: %s)", o.ServiceCIDR, bootstrap.DefaultServiceCIDR)
	}
	if o.AdvertiseAddress != "" && net.ParseIP(o.AdvertiseAddress) == nil {
		return nil, fmt.Errorf("--advertise-address %q is not an IP address", o.AdvertiseAddress)
	}
	if o.SecurePort <= 0 || o.SecurePort > 65535 {
		return nil, fmt.Errorf("--secure-port %d is out of range 1-65535", o.SecurePort)
	}
	files := []string{
		d.ClusterCA().Cert, d.APIServerServing().Cert, d.APIServerServing().Key,
		d.DatastoreCA().Cert, d.DatastoreClient().Cert, d.DatastoreClient().Key,
		d.FrontProxyCA().Cert, d.FrontProxyClient().Cert, d.FrontProxyClient().Key,
		d.APIServerKubeletClient().Cert, d.APIServerKubeletClient().Key,
		d.ServiceAccountKey(), d.ServiceAccountPub(),
		d.EncryptionConfig(), d.AuthenticationConfig(), d.AuditPolicy(),
	}
	if o.EgressConfig != "" && o.EgressGateway != "" {
		return nil, errors.New("--egress-gateway and --egress-selector-config exclude each other; pass one")
	}
	if o.EgressConfig != "" {
		files = append(files, o.EgressConfig)
	}
	if o.EgressGateway != "" {
		if u, err := url.Parse(o.EgressGateway); err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("--egress-gateway %q must be an https://HOST:PORT URL", o.EgressGateway)
		}
		files = append(files, d.APIServerEgressClient().Cert, d.APIServerEgressClient().Key)
	}
	if err := config.RequireFiles(files...); err != nil {
		return nil, err
	}
	if err := config.CheckListen(net.JoinHostPort(o.BindAddress, strconv.Itoa(o.SecurePort)), "--secure-port"); err != nil {
		return nil, err
	}
	certDir := d.RoleState("apiserver")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", certDir, err)
	}
	issuer := "https://kubernetes.default.svc." + bootstrap.DefaultClusterDNS
	args := []string{
		"--etcd-servers=" + o.DatastoreEndpoint,
		"--etcd-cafile=" + d.DatastoreCA().Cert,
		"--etcd-certfile=" + d.DatastoreClient().Cert,
		"--etcd-keyfile=" + d.DatastoreClient().Key,
		"--bind-address=" + o.BindAddress,
		"--secure-port=" + strconv.Itoa(o.SecurePort),
		"--cert-dir=" + certDir,
		"--tls-cert-file=" + d.APIServerServing().Cert,
		"--tls-private-key-file=" + d.APIServerServing().Key,
		"--client-ca-file=" + d.ClusterCA().Cert,
		// anonymous requests only for /livez, /readyz and /healthz
		"--authentication-config=" + d.AuthenticationConfig(),
		"--enable-bootstrap-token-auth=true",
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction,PodSecurity",
		"--service-account-key-file=" + d.ServiceAccountPub(),
		"--service-account-signing-key-file=" + d.ServiceAccountKey(),
		"--service-account-issuer=" + issuer,
		"--api-audiences=" + issuer,
		"--service-cluster-ip-range=" + o.ServiceCIDR,
		"--encryption-provider-config=" + d.EncryptionConfig(),
		"--encryption-provider-config-automatic-reload=false",
		"--requestheader-client-ca-file=" + d.FrontProxyCA().Cert,
		"--requestheader-allowed-names=" + bootstrap.FrontProxyClientCN,
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + d.FrontProxyClient().Cert,
		"--proxy-client-key-file=" + d.FrontProxyClient().Key,
		"--kubelet-client-certificate=" + d.APIServerKubeletClient().Cert,
		"--kubelet-client-key=" + d.APIServerKubeletClient().Key,
		// kubelet serving certificates come from CSRs the cluster CA signs: verify them
		"--kubelet-certificate-authority=" + d.ClusterCA().Cert,
		// IPs first: a Hostname address makes the apiserver resolve node names in DNS
		"--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
		// webhooks, conversion webhooks and aggregated APIs (metrics-server)
		// are dialled at their Service's endpoint (pod) addresses, not the
		// ClusterIP: the apiserver has no Service proxy, and the egress
		// gateway routes a pod address through the tunnel of the node that
		// owns it (one resolver serves the aggregator and the webhooks)
		"--enable-aggregator-routing=true",
		"--allow-privileged=true",
		"--profiling=false",
		// On SIGTERM the apiserver ends its open watches (their clients
		// watch again, at another apiserver or this one restarted) and so
		// exits in about a second. Upstream's default waits for them to
		// end by themselves, which they never do: every stop ran into the
		// 60 s shutdown timeout and, under Kubernetes' 30 s grace period
		// or Docker's, a SIGKILL.
		"--shutdown-watch-termination-grace-period=5s",
		"--storage-backend=etcd3",
	}
	if o.AdvertiseAddress != "" {
		args = append(args, "--advertise-address="+o.AdvertiseAddress)
	}
	if o.EgressGateway != "" {
		path := filepath.Join(certDir, "egress-selector.yaml")
		conf := egressSelector(o.EgressSocket())
		if o.EgressDirect {
			conf = egressSelectorDirect(d, strings.TrimPrefix(o.EgressGateway, "https://"))
		}
		if err := pki.WriteFile(path, conf, 0o644); err != nil {
			return nil, fmt.Errorf("writing %s: %w", path, err)
		}
		o.EgressConfig = path
	}
	if o.EgressConfig != "" {
		args = append(args, "--egress-selector-config-file="+o.EgressConfig)
	}
	if o.AuditLog || o.AuditLogPath != "" {
		path := o.AuditLogPath
		if path == "" {
			path = d.AuditLog()
		}
		args = append(args,
			"--audit-policy-file="+d.AuditPolicy(),
			"--audit-log-path="+path,
			"--audit-log-maxage=7",
			"--audit-log-maxbackup=3",
			"--audit-log-maxsize=100",
		)
	}
	return args, nil
}
