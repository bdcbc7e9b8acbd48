package app

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// TestIssueClientCert runs the CSR flow against a fake API whose "signer"
// signs what was approved: the key stays here, the request carries the user
// and groups, approval comes before signing, and the CSR is deleted after.
func TestIssueClientCert(t *testing.T) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, IsCA: true,
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	api := fake.NewClientset()
	var approved, deleted bool
	var seen *certv1.CertificateSigningRequest
	api.PrependReactor("update", "certificatesigningrequests", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "approval" {
			return false, nil, nil
		}
		csr := a.(k8stesting.UpdateAction).GetObject().(*certv1.CertificateSigningRequest)
		approved = slices.ContainsFunc(csr.Status.Conditions, func(c certv1.CertificateSigningRequestCondition) bool {
			return c.Type == certv1.CertificateApproved
		})
		seen = csr.DeepCopy()
		b, _ := pem.Decode(csr.Spec.Request)
		req, err := x509.ParseCertificateRequest(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: req.Subject, NotBefore: time.Now(),
			NotAfter: time.Now().Add(time.Duration(*csr.Spec.ExpirationSeconds) * time.Second), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, req.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		csr.Status.Certificate = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		// store it as the controllers would
		if _, err := api.Tracker().Get(a.GetResource(), "", csr.Name); err == nil {
			_ = api.Tracker().Update(a.GetResource(), csr, "")
		}
		return true, csr, nil
	})
	api.PrependReactor("create", "certificatesigningrequests", func(a k8stesting.Action) (bool, runtime.Object, error) {
		csr := a.(k8stesting.CreateAction).GetObject().(*certv1.CertificateSigningRequest)
		csr.Name = csr.GenerateName + "x1"
		return false, nil, nil
	})
	api.PrependReactor("delete", "certificatesigningrequests", func(k8stesting.Action) (bool, runtime.Object, error) {
		deleted = true
		return false, nil, nil
	})
	cert, keyPEM, err := issueClientCert(context.Background(), api, "dev", []string{"viewers", "ops"}, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !approved || !deleted {
		t.Errorf("approved %v, deleted %v: want both", approved, deleted)
	}
	if seen.Spec.SignerName != certv1.KubeAPIServerClientSignerName || *seen.Spec.ExpirationSeconds != 86400 ||
		!slices.Contains(seen.Spec.Usages, certv1.UsageClientAuth) || !strings.HasPrefix(seen.Name, "kubesplit-kubeconfig-dev-") {
		t.Errorf("request %+v", seen.Spec)
	}
	c, err := x509.ParseCertificate(cert)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject.CommonName != "dev" || !slices.Equal(slices.Sorted(slices.Values(c.Subject.Organization)), []string{"ops", "viewers"}) {
		t.Errorf("subject %v", c.Subject)
	}
	b, _ := pem.Decode(keyPEM)
	key, err := x509.ParseECPrivateKey(b.Bytes)
	if err != nil || !key.PublicKey.Equal(c.PublicKey) {
		t.Errorf("the key does not match the certificate: %v", err)
	}
	if _, err := api.CertificatesV1().CertificateSigningRequests().Get(context.Background(), seen.Name, metav1.GetOptions{}); err == nil {
		t.Error("the CSR is still there")
	}
}

func TestKubeconfigBadInput(t *testing.T) {
	for _, tc := range []struct {
		o    kubeconfigOptions
		want string
	}{
		{kubeconfigOptions{groups: []string{"g"}, validity: 365 * 24 * time.Hour}, "--group and --validity go with --user"},
		{kubeconfigOptions{user: "dev", validity: time.Minute}, "at least 10m"},
		{kubeconfigOptions{dataDir: t.TempDir(), validity: 365 * 24 * time.Hour}, "--data-dir"},
	} {
		var out, errb bytes.Buffer
		err := runKubeconfig(context.Background(), &out, &errb, tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.o, err, tc.want)
		}
	}
	if s := safeName("Dev.User_1@corp"); s != "dev-user-1-corp" {
		t.Errorf("safeName = %s", s)
	}
}
