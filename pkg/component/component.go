// Package component holds what the scheduler and controllers wrappers share:
// the flags every upstream client role has (data dir, kubeconfig, serving
// address, leader election), their checks, and the skew check at start.
package component

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/spf13/pflag"

	"github.com/kubesplit/kubesplit/pkg/config"
	"github.com/kubesplit/kubesplit/pkg/health"
	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/skew"
	"github.com/kubesplit/kubesplit/pkg/version"
)

// Common are the flags of a leader-elected upstream client role.
type Common struct {
	Role        string
	DataDir     string
	Kubeconfig  string
	BindAddress string
	SecurePort  int
	// HealthAddress is an IP:port serving the role's health (alone) in
	// plain HTTP for container health checks (empty: off).
	HealthAddress string
	LeaderElect   bool
	ShowVersion   bool
	// SkewRole is the rule the role's version is checked against.
	SkewRole version.Role
	// FakeVersion replaces the role's Kubernetes version in the skew check (tests only).
	FakeVersion string
	// WaitNewer: a role newer than the apiserver waits for the apiserver to
	// be upgraded instead of exiting (a rolling upgrade of several roles at
	// once, as the Helm chart does: the roles then start in the policy's order).
	WaitNewer bool
}

// AddFlags registers the common flags.
func (c *Common) AddFlags(fs *pflag.FlagSet, defaultPort int) {
	fs.StringVar(&c.DataDir, "data-dir", "", "data directory written by 'kubesplit init' (required)")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", "", "kubeconfig of this role (default: "+c.Role+".kubeconfig in the data dir)")
	fs.StringVar(&c.BindAddress, "bind-address", "0.0.0.0", "address of the HTTPS health and metrics port")
	fs.IntVar(&c.SecurePort, "secure-port", defaultPort, "HTTPS port for /healthz and /metrics")
	fs.StringVar(&c.HealthAddress, "health-address", "", "IP:port serving /healthz, /livez and /readyz (nothing else) in plain HTTP for container health checks, e.g. 127.0.0.1:PORT (empty: off)")
	fs.BoolVar(&c.LeaderElect, "leader-elect", true, "take a lease so only one instance is active")
	fs.BoolVar(&c.ShowVersion, "version", false, "print the version and exit")
	fs.StringVar(&c.FakeVersion, "fake-kubernetes-version", "", "pretend to be this Kubernetes version in the skew check and --version (testing only)")
	_ = fs.MarkHidden("fake-kubernetes-version")
	fs.BoolVar(&c.WaitNewer, "wait-for-apiserver-upgrade", false, "when this role is newer than the apiserver, wait (up to 30 minutes) for the apiserver to be upgraded instead of exiting: for rolling upgrades that change several roles at once")
}

// Validate checks the data dir, the kubeconfig and the port.
func (c *Common) Validate() (layout.Dir, error) {
	if err := config.CheckDataDir(c.DataDir, true); err != nil {
		return "", err
	}
	d := layout.Dir(c.DataDir)
	if c.Kubeconfig == "" {
		c.Kubeconfig = d.Kubeconfig(c.Role)
	}
	if err := config.RequireFiles(c.Kubeconfig); err != nil {
		return "", err
	}
	if c.SecurePort <= 0 || c.SecurePort > 65535 {
		return "", fmt.Errorf("--secure-port %d is out of range 1-65535", c.SecurePort)
	}
	if err := config.CheckListen(net.JoinHostPort(c.BindAddress, strconv.Itoa(c.SecurePort)), "--secure-port"); err != nil {
		return "", err
	}
	certDir := d.RoleState(c.Role)
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return "", fmt.Errorf("creating %s: %w", certDir, err)
	}
	return d, nil
}

// UpstreamArgs are the upstream flags every such role takes.
func (c *Common) UpstreamArgs(d layout.Dir) []string {
	args := []string{
		"--kubeconfig=" + c.Kubeconfig,
		"--authentication-kubeconfig=" + c.Kubeconfig,
		"--authorization-kubeconfig=" + c.Kubeconfig,
		"--bind-address=" + c.BindAddress,
		"--secure-port=" + strconv.Itoa(c.SecurePort),
		"--leader-elect=" + strconv.FormatBool(c.LeaderElect),
		"--profiling=false",
	}
	// the serving certificate init issues (upstream reloads it when it is
	// renewed); a data directory from before it existed keeps upstream's
	// self-signed one in the role's state directory
	if p := d.RoleServing(c.Role); config.RequireFiles(p.Cert, p.Key) == nil {
		return append(args, "--tls-cert-file="+p.Cert, "--tls-private-key-file="+p.Key)
	}
	return append(args, "--cert-dir="+d.RoleState(c.Role))
}

// CheckSkew waits for the apiserver to answer and refuses to start a role the
// version-skew policy forbids (a *version.SkewError).
func (c *Common) CheckSkew(ctx context.Context, log io.Writer) error {
	own := version.Kubernetes
	if c.FakeVersion != "" {
		own = c.FakeVersion
	}
	waiting := func(err error) {
		fmt.Fprintf(log, "%s: waiting for the apiserver to check version skew: %v\n", c.Role, err)
	}
	_, err := skew.Check(ctx, c.Kubeconfig, c.SkewRole, own, waiting)
	if !c.WaitNewer {
		return err
	}
	deadline := time.Now().Add(waitNewerFor)
	var lastReport time.Time
	for newerThanAPIServer(err) && time.Now().Before(deadline) {
		if time.Since(lastReport) >= 10*time.Second {
			fmt.Fprintf(log, "%s: waiting for the apiserver to be upgraded first: %v\n", c.Role, err)
			lastReport = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(waitNewerPoll):
		}
		_, err = skew.Check(ctx, c.Kubeconfig, c.SkewRole, own, waiting)
	}
	return err
}

// WaitForAPIServer is what the role checks before upstream starts: the
// version skew (CheckSkew), then the apiserver's /healthz (skew.WaitHealthy).
// Upstream's scheduler and controller-manager exit when the apiserver's
// default RBAC is not there yet (they read the
// extension-apiserver-authentication ConfigMap at start), and the
// controller-manager also when /healthz is not ok 10 s after it took its
// lease: on a new cluster on a busy machine both happened, and where nothing
// restarts the container the cluster then had no controllers, so no node
// could ever join.
func (c *Common) WaitForAPIServer(ctx context.Context, log io.Writer) error {
	if err := c.CheckSkew(ctx, log); err != nil {
		return err
	}
	return skew.WaitHealthy(ctx, c.Kubeconfig, func(err error) {
		fmt.Fprintf(log, "%s: waiting for the apiserver to be healthy: %v\n", c.Role, err)
	})
}

// How long and how often WaitNewer asks the apiserver again.
var (
	waitNewerFor  = 30 * time.Minute
	waitNewerPoll = 2 * time.Second
)

// newerThanAPIServer reports whether err is a skew refusal because the role
// is newer than the apiserver (the case an apiserver upgrade resolves).
func newerThanAPIServer(err error) bool {
	var se *version.SkewError
	if !errors.As(err, &se) {
		return false
	}
	r, err1 := version.ParseMinor(se.RoleVersion)
	a, err2 := version.ParseMinor(se.APIServerVersion)
	return err1 == nil && err2 == nil && (r.Major > a.Major || (r.Major == a.Major && r.Minor > a.Minor))
}

// VersionInfo is what --version prints: version.Info, with the Kubernetes
// version --fake-kubernetes-version claims (so a test can give a chart's
// upgrade check a role of another version without building one).
func (c *Common) VersionInfo() string {
	if c.FakeVersion != "" {
		return version.InfoOf(c.Role, c.FakeVersion)
	}
	return version.Info(c.Role)
}

// Lease holds the leader-election timings (upstream defaults: 15s/10s/2s).
type Lease struct {
	Duration, RenewDeadline, RetryPeriod time.Duration
}

// AddFlags registers the lease flags.
func (l *Lease) AddFlags(fs *pflag.FlagSet) {
	fs.DurationVar(&l.Duration, "leader-elect-lease-duration", 15*time.Second, "how long a non-leader waits before taking over an unrenewed lease")
	fs.DurationVar(&l.RenewDeadline, "leader-elect-renew-deadline", 10*time.Second, "how long the leader keeps trying to renew before it gives up")
	fs.DurationVar(&l.RetryPeriod, "leader-elect-retry-period", 2*time.Second, "how often candidates try to acquire or renew")
}

// UpstreamArgs are the matching upstream flags.
func (l *Lease) UpstreamArgs() []string {
	return []string{
		"--leader-elect-lease-duration=" + l.Duration.String(),
		"--leader-elect-renew-deadline=" + l.RenewDeadline.String(),
		"--leader-elect-retry-period=" + l.RetryPeriod.String(),
	}
}

// StartHealthRelay serves --health-address, if set.
func (c *Common) StartHealthRelay() error {
	if c.HealthAddress == "" {
		return nil
	}
	return health.StartLocalRelay(c.HealthAddress, "--health-address", c.BindAddress, c.SecurePort)
}
