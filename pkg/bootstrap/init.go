// Package bootstrap implements `kubesplit init`: it writes everything a
// cluster needs into a data directory and, when run again, keeps what is
// there after checking it. A file that exists but is corrupt or does not match
// the rest is reported, never replaced.
package bootstrap

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"slices"

	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/pki"
)

// Options are the cluster-wide facts init bakes into certificates and kubeconfigs.
type Options struct {
	DataDir layout.Dir
	// Server is the apiserver URL written into admin.kubeconfig.
	Server string
	// ServerName, when set, is admin.kubeconfig's tls-server-name: the
	// apiserver's name at Server when an SNI router in front of Server
	// routes by it (it joins the apiserver certificate).
	ServerName string
	// InternalServer is the apiserver URL the scheduler and controllers use.
	InternalServer string
	// APIServerSANs and DatastoreSANs are extra host names or IPs for the serving certificates.
	APIServerSANs []string
	DatastoreSANs []string
	// GatewaySANs are extra names or IPs nodes use to reach the tunnel gateway.
	GatewaySANs []string
	// ServiceCIDR's first address is the in-cluster `kubernetes` Service IP.
	ServiceCIDR string
	// NodeToken writes a never-expiring default join token (layout NodeToken);
	// the controllers store it in the cluster. For dev clusters (compose),
	// where nodes read it from a shared volume.
	NodeToken bool
	// Renewal says when an existing leaf certificate is renewed and how
	// long new ones last.
	Renewal Renewal
}

// Defaults fills unset options.
func (o *Options) Defaults() {
	if o.Server == "" {
		o.Server = "https://127.0.0.1:6443"
	}
	if o.InternalServer == "" {
		o.InternalServer = o.Server
	}
	if o.ServiceCIDR == "" {
		o.ServiceCIDR = DefaultServiceCIDR
	}
	if o.ServerName != "" && !slices.Contains(o.APIServerSANs, o.ServerName) {
		o.APIServerSANs = append(slices.Clip(o.APIServerSANs), o.ServerName)
	}
}

// Cluster-wide defaults, shared with the roles' flags.
const (
	DefaultServiceCIDR = "10.43.0.0/16"
	DefaultClusterCIDR = "10.42.0.0/16"
	DefaultClusterDNS  = "cluster.local"
)

// Report lists what init created, renewed and kept.
type Report struct {
	Created, Renewed, Kept []string
}

type outcome int

const (
	kept outcome = iota
	created
	renewed
)

// add records a file that is either new or kept (CAs, keys, configs: never renewed).
func (r *Report) add(isNew bool, what string) {
	o := kept
	if isNew {
		o = created
	}
	r.addOutcome(o, what)
}

func (r *Report) addOutcome(o outcome, what string) {
	switch o {
	case created:
		r.Created = append(r.Created, what)
	case renewed:
		r.Renewed = append(r.Renewed, what)
	default:
		r.Kept = append(r.Kept, what)
	}
}

// Run creates or checks every file of the data directory.
func Run(o Options) (*Report, error) {
	o.Defaults()
	d := o.DataDir
	if err := checkDir(string(d)); err != nil {
		return nil, err
	}
	svcIP, err := firstServiceIP(o.ServiceCIDR)
	if err != nil {
		return nil, err
	}
	unlock, err := lockPKI(d)
	if err != nil {
		return nil, err
	}
	defer unlock()
	rep := &Report{}
	cas := map[string]*pki.KeyPair{}
	for _, c := range caSpecs(d) {
		kp, created, err := ensureCA(c.name, c.pair, c.dependents)
		if err != nil {
			return nil, err
		}
		cas[c.name] = kp
		rep.add(created, c.pair.Cert)
	}
	for _, l := range leafSpecs(d, o, svcIP) {
		out, err := ensureLeaf(cas[l.ca], l.pair, l.spec, o.Renewal)
		if err != nil {
			return nil, err
		}
		rep.addOutcome(out, l.pair.Cert)
	}
	created, err := ensureServiceAccountKey(d)
	if err != nil {
		return nil, err
	}
	rep.add(created, d.ServiceAccountKey())
	for _, f := range configFiles(d) {
		created, err := ensureConfig(f)
		if err != nil {
			return nil, err
		}
		rep.add(created, f.path)
	}
	if o.NodeToken {
		f := nodeTokenFile(d, pki.Fingerprint(cas["cluster"].Cert))
		created, err := ensureConfig(f)
		if err != nil {
			return nil, err
		}
		rep.add(created, f.path)
	}
	for _, k := range kubeconfigSpecs(o) {
		out, err := ensureKubeconfig(d, cas["cluster"], k, o.Renewal)
		if err != nil {
			return nil, err
		}
		rep.addOutcome(out, d.Kubeconfig(k.name))
	}
	return rep, nil
}

// checkDir makes sure the data directory exists and is writable, so a bad
// path fails with one clear line instead of a wall of missing-file errors.
func checkDir(dir string) error {
	if dir == "" {
		return errors.New("no data directory given: pass --data-dir DIR")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cannot create data directory %s: %w; choose a writable --data-dir", dir, unwrapPath(err))
	}
	probe, err := os.CreateTemp(dir, ".write-probe-*")
	if err != nil {
		return fmt.Errorf("data directory %s is not writable: %w; fix its permissions or choose another --data-dir", dir, unwrapPath(err))
	}
	probe.Close()
	return os.Remove(probe.Name())
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func firstServiceIP(cidr string) (net.IP, error) {
	_, n, err := net.ParseCIDR(cidr)
	if err != nil {
		return nil, fmt.Errorf("service CIDR %q is not a CIDR (example: %s)", cidr, DefaultServiceCIDR)
	}
	ip := make(net.IP, len(n.IP))
	copy(ip, n.IP)
	ip[len(ip)-1]++
	return ip, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// corrupt formats the error for a file init will not touch.
func corrupt(path string, err error) error {
	return fmt.Errorf("%s: %w; init never replaces an existing file: restore it from a backup, or delete it (and what it signed) to create a new one", path, err)
}
