package bootstrap

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"slices"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kubesplit/kubesplit/pkg/jointoken"
	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/pki"
	"github.com/kubesplit/kubesplit/pkg/tokenstore"
)

func ensureCA(name string, p layout.Pair, dependents []string) (*pki.KeyPair, bool, error) {
	certOK, keyOK := exists(p.Cert), exists(p.Key)
	switch {
	case certOK && keyOK:
		kp, err := pki.LoadKeyPair(p.Cert, p.Key)
		if err != nil {
			return nil, false, corrupt(p.Cert, err)
		}
		if !kp.Cert.IsCA {
			return nil, false, corrupt(p.Cert, fmt.Errorf("not a CA certificate: %w", pki.ErrCorrupt))
		}
		return kp, false, nil
	case certOK != keyOK:
		missing := p.Key
		if !certOK {
			missing = p.Cert
		}
		return nil, false, corrupt(missing, errors.New("missing while its other half exists"))
	}
	for _, dep := range dependents {
		if exists(dep) {
			return nil, false, corrupt(p.Cert, fmt.Errorf("missing, but %s was signed by it", dep))
		}
	}
	kp, err := pki.NewCA("kubesplit-" + name + "-ca")
	if err != nil {
		return nil, false, err
	}
	if err := kp.Write(p.Cert, p.Key); err != nil {
		return nil, false, fmt.Errorf("writing %s: %w", p.Cert, err)
	}
	return kp, true, nil
}

func ensureLeaf(ca *pki.KeyPair, p layout.Pair, spec pki.Spec, r Renewal) (outcome, error) {
	// (a due certificate is renewed as Renew does it, with init's names added)
	spec.Validity = r.Validity
	if exists(p.Cert) || exists(p.Key) {
		kp, err := pki.LoadKeyPair(p.Cert, p.Key)
		if err != nil {
			return kept, corrupt(p.Cert, err)
		}
		if r.Due(kp.Cert.NotAfter) {
			if err := kp.Cert.CheckSignatureFrom(ca.Cert); err != nil {
				return kept, corrupt(p.Cert, fmt.Errorf("not signed by %q: %w", ca.Cert.Subject.CommonName, pki.ErrCorrupt))
			}
			if _, err := leafIdentity(leafSpec{pair: p}).renew(ca, withNamesOf(spec, kp.Cert)); err != nil {
				return kept, fmt.Errorf("renewing %s: %w", p.Cert, err)
			}
			return renewed, nil
		}
		err = pki.VerifyLeaf(kp.Cert, ca.Cert, spec)
		if errors.Is(err, pki.ErrMissingName) {
			// a SAN asked for since (--apiserver-san, a hosted control
			// plane's new public address): reissue with the old names and the new
			if _, err := leafIdentity(leafSpec{pair: p}).renew(ca, withNamesOf(spec, kp.Cert)); err != nil {
				return kept, fmt.Errorf("reissuing %s with new names: %w", p.Cert, err)
			}
			return renewed, nil
		}
		if err != nil {
			return kept, corrupt(p.Cert, err)
		}
		return kept, nil
	}
	kp, err := ca.Issue(spec)
	if err != nil {
		return kept, err
	}
	if err := kp.Write(p.Cert, p.Key); err != nil {
		return kept, fmt.Errorf("writing %s: %w", p.Cert, err)
	}
	return created, nil
}

// withNamesOf adds the names old was issued for to spec, so a renewal at an
// init that was not given an earlier --apiserver-san keeps it.
func withNamesOf(spec pki.Spec, old *x509.Certificate) pki.Spec {
	for _, n := range old.DNSNames {
		if !slices.Contains(spec.DNSNames, n) {
			spec.DNSNames = append(slices.Clip(spec.DNSNames), n)
		}
	}
	for _, ip := range old.IPAddresses {
		if !slices.ContainsFunc(spec.IPs, ip.Equal) {
			spec.IPs = append(slices.Clip(spec.IPs), ip)
		}
	}
	return spec
}

func ensureServiceAccountKey(d layout.Dir) (bool, error) {
	keyPath, pubPath := d.ServiceAccountKey(), d.ServiceAccountPub()
	if exists(keyPath) || exists(pubPath) {
		key, err := pki.LoadKey(keyPath)
		if err != nil {
			return false, corrupt(keyPath, err)
		}
		pub, err := os.ReadFile(pubPath)
		if err != nil {
			return false, corrupt(pubPath, err)
		}
		if !pki.SamePublicKey(pub, key) {
			return false, corrupt(pubPath, fmt.Errorf("not the public half of %s: %w", keyPath, pki.ErrCorrupt))
		}
		return false, nil
	}
	key, err := pki.NewKey()
	if err != nil {
		return false, err
	}
	keyPEM, err := pki.KeyPEM(key)
	if err != nil {
		return false, err
	}
	pubPEM, err := pki.PublicKeyPEM(key.Public())
	if err != nil {
		return false, err
	}
	if err := pki.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return false, err
	}
	return true, pki.WriteFile(pubPath, pubPEM, 0o644)
}

type configFile struct {
	path     string
	mode     os.FileMode
	generate func() ([]byte, error)
	// valid checks an existing file; nil accepts any content.
	valid func([]byte) error
}

func configFiles(d layout.Dir) []configFile {
	return []configFile{
		{d.EncryptionConfig(), 0o600, encryptionConfig, func(b []byte) error {
			if !bytes.Contains(b, []byte("kind: EncryptionConfiguration")) || !bytes.Contains(b, []byte("secret:")) {
				return fmt.Errorf("not an EncryptionConfiguration with a key: %w", pki.ErrCorrupt)
			}
			return nil
		}},
		{d.AuthenticationConfig(), 0o644, static(authenticationConfig), nil},
		{d.AuditPolicy(), 0o644, static(auditPolicy), nil},
	}
}

// nodeTokenFile is the default join token for the CA with hash caHash.
func nodeTokenFile(d layout.Dir, caHash string) configFile {
	return configFile{d.NodeToken(), 0o600,
		func() ([]byte, error) {
			tok, err := tokenstore.Generate(caHash)
			return []byte(tok.String() + "\n"), err
		},
		func(b []byte) error {
			tok, err := jointoken.Parse(string(b))
			if err != nil {
				return fmt.Errorf("%w: %w", err, pki.ErrCorrupt)
			}
			if tok.CAHash != caHash {
				return fmt.Errorf("the token pins another cluster CA: %w", pki.ErrCorrupt)
			}
			return nil
		}}
}

func static(s string) func() ([]byte, error) { return func() ([]byte, error) { return []byte(s), nil } }

func ensureConfig(f configFile) (bool, error) {
	if exists(f.path) {
		b, err := os.ReadFile(f.path)
		if err != nil {
			return false, corrupt(f.path, err)
		}
		if f.valid != nil {
			if err := f.valid(b); err != nil {
				return false, corrupt(f.path, err)
			}
		}
		return false, nil
	}
	b, err := f.generate()
	if err != nil {
		return false, err
	}
	return true, pki.WriteFile(f.path, b, f.mode)
}

// encryptionConfig encrypts Secrets at rest with secretbox (XSalsa20+Poly1305),
// which upstream recommends over aescbc for a locally held key.
func encryptionConfig() ([]byte, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources: [secrets]
  providers:
  - secretbox:
      keys:
      - name: key1
        secret: %s
  - identity: {}
`, base64.StdEncoding.EncodeToString(key)), nil
}

// authenticationConfig allows anonymous requests to the health endpoints only.
const authenticationConfig = `apiVersion: apiserver.config.k8s.io/v1
kind: AuthenticationConfiguration
anonymous:
  enabled: true
  conditions:
  - path: /livez
  - path: /readyz
  - path: /healthz
`

const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  nonResourceURLs: ["/healthz*", "/readyz*", "/livez*", "/version"]
- level: None
  resources: [{group: "coordination.k8s.io", resources: [leases]}]
- level: Metadata
`

func ensureKubeconfig(d layout.Dir, ca *pki.KeyPair, k kubeconfigSpec, r Renewal) (outcome, error) {
	path := d.Kubeconfig(k.name)
	caPEM := pki.CertPEM(ca.Cert)
	spec := k.spec
	spec.Validity = r.Validity
	var pair layout.Pair
	if !embedsClient(k.name) {
		pair = d.KubeconfigClient(k.name)
	}
	if exists(path) {
		cfg, ai, err := loadKubeconfig(path)
		if err != nil {
			return kept, corrupt(path, err)
		}
		cl := cfg.Clusters[cfg.Contexts[cfg.CurrentContext].Cluster]
		if !bytes.Equal(cl.CertificateAuthorityData, caPEM) {
			return kept, corrupt(path, fmt.Errorf("its CA is not %s: %w", d.ClusterCA().Cert, pki.ErrCorrupt))
		}
		if cl.Server != k.server {
			return kept, corrupt(path, fmt.Errorf("points at %s, not the requested %s: %w", cl.Server, k.server, pki.ErrCorrupt))
		}
		if cl.TLSServerName != k.serverName {
			return kept, corrupt(path, fmt.Errorf("names the apiserver %q (tls-server-name), not the requested %q: %w", cl.TLSServerName, k.serverName, pki.ErrCorrupt))
		}
		client, err := clientOf(path, ai)
		if err != nil {
			return kept, corrupt(path, err)
		}
		if err := client.Cert.CheckSignatureFrom(ca.Cert); err != nil {
			return kept, corrupt(path, fmt.Errorf("its client is not signed by %q: %w", ca.Cert.Subject.CommonName, pki.ErrCorrupt))
		}
		if err := pki.VerifyLeaf(client.Cert, ca.Cert, k.spec); err != nil && !r.Due(client.Cert.NotAfter) {
			return kept, corrupt(path, err)
		}
		embedded := len(ai.ClientCertificateData) > 0
		if !r.Due(client.Cert.NotAfter) && embedded == (pair.Cert == "") {
			return kept, nil
		}
		// due, or a role's kubeconfig from an older init that embeds its
		// client: renewed as Renew does it, into files the role reloads
		if _, err := kubeconfigIdentity(d, k.name).renew(ca, spec); err != nil {
			return kept, fmt.Errorf("renewing %s: %w", path, err)
		}
		return renewed, nil
	}
	kp, err := ca.Issue(spec)
	if err != nil {
		return kept, err
	}
	if pair.Cert != "" {
		if err := kp.Write(pair.Cert, pair.Key); err != nil {
			return kept, err
		}
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubesplit"] = &clientcmdapi.Cluster{Server: k.server, TLSServerName: k.serverName, CertificateAuthorityData: caPEM}
	ai := &clientcmdapi.AuthInfo{}
	if err := setClient(ai, path, pair, kp); err != nil {
		return kept, err
	}
	cfg.AuthInfos[k.name] = ai
	cfg.Contexts[k.name+"@kubesplit"] = &clientcmdapi.Context{Cluster: "kubesplit", AuthInfo: k.name}
	cfg.CurrentContext = k.name + "@kubesplit"
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		return kept, err
	}
	return created, pki.WriteFile(path, b, 0o600)
}

// clientOf loads a kubeconfig user's client certificate and key, embedded or
// from the files it names (relative to the kubeconfig).
func clientOf(kubeconfig string, ai *clientcmdapi.AuthInfo) (*pki.KeyPair, error) {
	if len(ai.ClientCertificateData) > 0 || len(ai.ClientKeyData) > 0 {
		return pki.ParseKeyPair(ai.ClientCertificateData, ai.ClientKeyData, "embedded client")
	}
	if ai.ClientCertificate == "" {
		return nil, fmt.Errorf("no client certificate: %w", pki.ErrCorrupt)
	}
	return pki.LoadKeyPair(resolve(kubeconfig, ai.ClientCertificate), resolve(kubeconfig, ai.ClientKey))
}
