package bootstrap

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/pki"
)

// DefaultRenewBefore is how long before its expiry a leaf certificate is
// renewed (k3s and kubeadm use the same 90 days).
const DefaultRenewBefore = 90 * 24 * time.Hour

// Renewal says when leaf certificates are renewed and for how long.
type Renewal struct {
	// Before: a certificate with less than this left is due (0: DefaultRenewBefore).
	Before time.Duration
	// Validity of a renewed or new certificate (0: pki.LeafValidity).
	Validity time.Duration
}

func (r Renewal) before() time.Duration {
	if r.Before <= 0 {
		return DefaultRenewBefore
	}
	return r.Before
}

// Due reports whether a certificate ending at notAfter must be renewed now.
func (r Renewal) Due(notAfter time.Time) bool { return time.Until(notAfter) < r.before() }

// Cert is one certificate of a data directory.
type Cert struct {
	// Name identifies it for `kubesplit certs rotate NAME`: the file's base
	// name for a pair in pki/, NAME.kubeconfig for a kubeconfig's client.
	Name string
	// CA is the name of the CA that signed it ("" for a CA).
	CA string
	// Path is the file it is read from (a kubeconfig for an embedded one).
	Path     string
	Subject  string
	Serial   string // decimal, as the apiserver logs it
	NotAfter time.Time
	IsCA     bool
	// Err is set when the certificate could not be read.
	Err error
}

// identity is one leaf certificate init made and renewal keeps: a pair in
// pki/ or a client embedded in a kubeconfig.
type identity struct {
	name string
	ca   string
	pair layout.Pair // empty for an embedded kubeconfig client
	// kubeconfig is set for a kubeconfig's client; with pair set, the
	// kubeconfig refers to the pair's files, so client-go reloads them.
	kubeconfig string
}

// identities lists every leaf of the data directory, from the same lists
// init creates them from.
func identities(d layout.Dir) []identity {
	var ids []identity
	for _, l := range leafSpecs(d, Options{}, nil) {
		ids = append(ids, leafIdentity(l))
	}
	for _, k := range kubeconfigSpecs(Options{}) {
		ids = append(ids, kubeconfigIdentity(d, k.name))
	}
	return ids
}

func leafIdentity(l leafSpec) identity {
	return identity{name: filepath.Base(l.pair.Cert), ca: l.ca, pair: l.pair}
}

func kubeconfigIdentity(d layout.Dir, name string) identity {
	id := identity{name: name + ".kubeconfig", ca: "cluster", kubeconfig: d.Kubeconfig(name)}
	if !embedsClient(name) {
		id.pair = d.KubeconfigClient(name)
	}
	return id
}

// embedsClient reports whether a kubeconfig carries its client certificate
// inside: the admin's, which is handed to people and copied around.
// The roles' kubeconfigs refer to files instead, which client-go reloads.
func embedsClient(name string) bool { return name == layout.Admin }

// Certificates lists the CAs and leaf certificates of a data directory.
func Certificates(d layout.Dir) []Cert {
	var out []Cert
	for _, c := range caSpecs(d) {
		cert, err := pki.LoadCert(c.pair.Cert)
		out = append(out, describe(c.name+"-ca", "", c.pair.Cert, cert, err))
	}
	for _, id := range identities(d) {
		path, cert, err := id.load()
		out = append(out, describe(id.name, id.ca, path, cert, err))
	}
	return out
}

func describe(name, ca, path string, cert *x509.Certificate, err error) Cert {
	c := Cert{Name: name, CA: ca, Path: path, Err: err}
	if cert != nil {
		c.Subject, c.Serial, c.NotAfter, c.IsCA = cert.Subject.String(), cert.SerialNumber.String(), cert.NotAfter, cert.IsCA
	}
	return c
}

// load reads the identity's certificate and returns the file it came from.
func (id identity) load() (string, *x509.Certificate, error) {
	if id.kubeconfig == "" {
		c, err := pki.LoadCert(id.pair.Cert)
		return id.pair.Cert, c, err
	}
	_, ai, err := loadKubeconfig(id.kubeconfig)
	if err != nil {
		return id.kubeconfig, nil, err
	}
	if len(ai.ClientCertificateData) > 0 {
		c, err := pki.ParseCert(ai.ClientCertificateData, id.kubeconfig)
		return id.kubeconfig, c, err
	}
	path := resolve(id.kubeconfig, ai.ClientCertificate)
	c, err := pki.LoadCert(path)
	return path, c, err
}

func loadKubeconfig(path string) (*clientcmdapi.Config, *clientcmdapi.AuthInfo, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, nil, err // a missing file stays fs.ErrNotExist: renewal skips it, init makes it
	}
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w: %v", path, pki.ErrCorrupt, err)
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	if ctx == nil || cfg.Clusters[ctx.Cluster] == nil || cfg.AuthInfos[ctx.AuthInfo] == nil {
		return nil, nil, fmt.Errorf("%s: current context is incomplete: %w", path, pki.ErrCorrupt)
	}
	return cfg, cfg.AuthInfos[ctx.AuthInfo], nil
}

// resolve makes a path in a kubeconfig absolute, as client-go does: relative
// to the kubeconfig's own directory.
func resolve(kubeconfig, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(kubeconfig), p)
}

// Renewed is one certificate a renewal replaced.
type Renewed struct {
	Name          string
	Before, After time.Time
}

// ErrUnknownCert is returned for a name `certs rotate` does not know.
var ErrUnknownCert = errors.New("no such certificate")

// Renew replaces the leaf certificates that are due, or, with names, those
// named, whether due or not. A renewed certificate keeps its subject, names,
// usages and key; kubeconfigs of the roles are rewritten to
// refer to their pair's files. CAs are never touched. Files are replaced
// atomically under a lock on the pki directory, so init, the controllers and
// the CLI can renew at the same time; a certificate whose CA key is not in
// this data directory is skipped.
func Renew(d layout.Dir, r Renewal, names ...string) ([]Renewed, error) {
	ids := identities(d)
	for _, n := range names {
		if !slices.ContainsFunc(ids, func(id identity) bool { return id.name == n }) {
			known := make([]string, 0, len(ids))
			for _, id := range ids {
				known = append(known, id.name)
			}
			return nil, fmt.Errorf("%w: %q; one of %v", ErrUnknownCert, n, known)
		}
	}
	unlock, err := lockPKI(d)
	if err != nil {
		return nil, err
	}
	defer unlock()
	cas := map[string]*pki.KeyPair{}
	var done []Renewed
	for _, id := range ids {
		if len(names) > 0 && !slices.Contains(names, id.name) {
			continue
		}
		_, cert, err := id.load()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // init makes missing files
			}
			return done, err
		}
		if len(names) == 0 && !r.Due(cert.NotAfter) && !id.migrates() {
			continue
		}
		ca, err := loadCA(d, id.ca, cas)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return done, err
		}
		spec := pki.SpecOf(cert)
		spec.Validity = r.Validity
		after, err := id.renew(ca, spec)
		if err != nil {
			return done, fmt.Errorf("renewing %s: %w", id.name, err)
		}
		done = append(done, Renewed{Name: id.name, Before: cert.NotAfter, After: after})
	}
	return done, nil
}

// migrates reports a role's kubeconfig that still embeds its client
// certificate (written by an older init): it moves to files at the next
// renewal check, so the role reloads it from then on.
func (id identity) migrates() bool {
	if id.kubeconfig == "" || id.pair.Cert == "" {
		return false
	}
	_, ai, err := loadKubeconfig(id.kubeconfig)
	return err == nil && len(ai.ClientCertificateData) > 0
}

func loadCA(d layout.Dir, name string, cache map[string]*pki.KeyPair) (*pki.KeyPair, error) {
	if ca := cache[name]; ca != nil {
		return ca, nil
	}
	for _, c := range caSpecs(d) {
		if c.name == name {
			ca, err := pki.LoadKeyPair(c.pair.Cert, c.pair.Key)
			if err != nil {
				return nil, err
			}
			cache[name] = ca
			return ca, nil
		}
	}
	return nil, fmt.Errorf("unknown CA %q", name)
}

// renew issues the identity's certificate again for its current key and
// stores it. The key stays, so writing the certificate alone (one atomic
// rename) is the whole change a role can observe.
func (id identity) renew(ca *pki.KeyPair, spec pki.Spec) (time.Time, error) {
	key, err := id.key()
	if err != nil {
		return time.Time{}, err
	}
	kp, err := ca.IssueFor(spec, key)
	if err != nil {
		return time.Time{}, err
	}
	if id.pair.Cert != "" {
		if err := pki.WriteFile(id.pair.Cert, pki.CertPEM(kp.Cert), 0o644); err != nil {
			return time.Time{}, err
		}
	}
	if id.kubeconfig != "" {
		if err := rewriteClient(id.kubeconfig, id.pair, kp); err != nil {
			return time.Time{}, err
		}
	}
	return kp.Cert.NotAfter, nil
}

// key is the identity's private key: its pair's, or its kubeconfig's
// embedded one (for a role's kubeconfig from an older init, the embedded
// key moves to the pair's file, written before the kubeconfig refers to it).
func (id identity) key() (crypto.Signer, error) {
	if id.kubeconfig != "" {
		_, ai, err := loadKubeconfig(id.kubeconfig)
		if err != nil {
			return nil, err
		}
		if len(ai.ClientKeyData) > 0 {
			key, err := pki.ParseKey(ai.ClientKeyData, id.kubeconfig)
			if err != nil || id.pair.Key == "" {
				return key, err
			}
			b, err := pki.KeyPEM(key)
			if err != nil {
				return nil, err
			}
			return key, pki.WriteFile(id.pair.Key, b, 0o600)
		}
	}
	return pki.LoadKey(id.pair.Key)
}

// rewriteClient points a kubeconfig's current user at pair's files, or,
// with no pair, embeds kp in it.
func rewriteClient(path string, pair layout.Pair, kp *pki.KeyPair) error {
	cfg, ai, err := loadKubeconfig(path)
	if err != nil {
		return err
	}
	if err := setClient(ai, path, pair, kp); err != nil {
		return err
	}
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	return pki.WriteFile(path, b, 0o600)
}

func setClient(ai *clientcmdapi.AuthInfo, kubeconfig string, pair layout.Pair, kp *pki.KeyPair) error {
	if pair.Cert != "" {
		ai.ClientCertificateData, ai.ClientKeyData = nil, nil
		ai.ClientCertificate, ai.ClientKey = relTo(kubeconfig, pair.Cert), relTo(kubeconfig, pair.Key)
		return nil
	}
	keyPEM, err := pki.KeyPEM(kp.Key)
	if err != nil {
		return err
	}
	ai.ClientCertificate, ai.ClientKey = "", ""
	ai.ClientCertificateData, ai.ClientKeyData = pki.CertPEM(kp.Cert), keyPEM
	return nil
}

// relTo writes p relative to the kubeconfig's directory, so a data directory
// works wherever it is mounted (the host's .kubesplit, /var/lib/kubesplit).
func relTo(kubeconfig, p string) string {
	if r, err := filepath.Rel(filepath.Dir(kubeconfig), p); err == nil {
		return r
	}
	return p
}

// lockPKI takes an exclusive lock on the pki directory (flock: it holds
// across containers sharing the volume, and goes with the process).
func lockPKI(d layout.Dir) (func(), error) {
	if err := os.MkdirAll(d.PKI(), 0o700); err != nil {
		return nil, err
	}
	// read-only, world-readable: the roles (uid 65532) lock a file root made
	f, err := os.OpenFile(filepath.Join(d.PKI(), ".lock"), os.O_CREATE|os.O_RDONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("locking %s: %w", d.PKI(), err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", d.PKI(), err)
	}
	return func() { f.Close() }, nil
}

// KeepRenewed renews what is due now and then every interval until ctx
// ends, logging each renewal (names and dates, never key material). The
// controllers run it, so a cluster that is never restarted keeps valid
// certificates; each role reloads its files by itself.
func KeepRenewed(ctx context.Context, d layout.Dir, r Renewal, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		done, err := Renew(d, r)
		for _, x := range done {
			log.Info("renewed certificate", "name", x.Name, "was-valid-until", x.Before.UTC().Format(time.RFC3339), "now-valid-until", x.After.UTC().Format(time.RFC3339))
		}
		if err != nil {
			log.Error("renewing certificates", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
