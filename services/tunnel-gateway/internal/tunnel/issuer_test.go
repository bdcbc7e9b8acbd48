package tunnel

import (
	"crypto/tls"
	"crypto/x509"
	"testing"

	"github.com/kubesplit/kubesplit/pkg/pki"
)

// testIssuer makes a CA for one test: issue signs a certificate with it,
// pool trusts it.
func testIssuer(tb testing.TB) (issue func(pki.Spec) tls.Certificate, pool *x509.CertPool) {
	tb.Helper()
	ca, err := pki.NewCA("test-ca")
	if err != nil {
		tb.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return func(spec pki.Spec) tls.Certificate {
		kp, err := ca.Issue(spec)
		if err != nil {
			tb.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{kp.Cert.Raw}, PrivateKey: kp.Key, Leaf: kp.Cert}
	}, pool
}
