package addons

import (
	"context"
	"crypto/x509"
	"log/slog"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kubesplit/kubesplit/pkg/pki"
)

func annotatedService(name, secret string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{
		Name: name, Namespace: metav1.NamespaceSystem, UID: types.UID("uid-" + name),
		Annotations: map[string]string{ServingCertAnnotation: secret},
	}}
}

func servingCerts(t *testing.T) (*ServingCerts, *fake.Clientset) {
	t.Helper()
	ca, err := pki.NewCA("test-cluster-ca")
	if err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset()
	return &ServingCerts{Client: client, CA: ca, Domain: "cluster.local", Log: slog.New(slog.DiscardHandler)}, client
}

func secretCert(t *testing.T, c *fake.Clientset, name string) (*corev1.Secret, *x509.Certificate) {
	t.Helper()
	sec, err := c.CoreV1().Secrets(metav1.NamespaceSystem).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("Secret %s: %v", name, err)
	}
	kp, err := pki.ParseKeyPair(sec.Data["tls.crt"], sec.Data["tls.key"], name)
	if err != nil {
		t.Fatalf("Secret %s: %v", name, err)
	}
	return sec, kp.Cert
}

// The certificate verifies as the apiserver checks an APIService's
// service: against the cluster CA, for NAME.NAMESPACE.svc, for server auth.
func TestServingCertIssuedForTheServiceNames(t *testing.T) {
	t.Parallel()
	s, c := servingCerts(t)
	svc := annotatedService("metrics-server", "metrics-server-tls")
	if err := s.Sync(context.Background(), svc); err != nil {
		t.Fatal(err)
	}
	sec, cert := secretCert(t, c, "metrics-server-tls")
	if sec.Type != corev1.SecretTypeTLS || string(sec.Data["ca.crt"]) != string(pki.CertPEM(s.CA.Cert)) {
		t.Errorf("Secret type %s, ca.crt %q: want kubernetes.io/tls with the cluster CA", sec.Type, sec.Data["ca.crt"])
	}
	if !metav1.IsControlledBy(sec, svc) || sec.Labels[servingCertLabel] != "metrics-server" {
		t.Errorf("Secret owners %v, labels %v: want the Service as controller and our label", sec.OwnerReferences, sec.Labels)
	}
	roots := x509.NewCertPool()
	roots.AddCert(s.CA.Cert)
	if _, err := cert.Verify(x509.VerifyOptions{DNSName: "metrics-server.kube-system.svc", Roots: roots,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("certificate does not verify for metrics-server.kube-system.svc: %v", err)
	}
	want := []string{"metrics-server", "metrics-server.kube-system", "metrics-server.kube-system.svc", "metrics-server.kube-system.svc.cluster.local"}
	if !slices.Equal(cert.DNSNames, want) || len(cert.IPAddresses) > 0 {
		t.Errorf("names %v %v, want %v and no IPs", cert.DNSNames, cert.IPAddresses, want)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("the serving certificate is also good for client auth")
	}
}

func TestServingCertKeptRenewedAndReplaced(t *testing.T) {
	t.Parallel()
	s, c := servingCerts(t)
	ctx := context.Background()
	svc := annotatedService("metrics-server", "metrics-server-tls")
	if err := s.Sync(ctx, svc); err != nil {
		t.Fatal(err)
	}
	_, first := secretCert(t, c, "metrics-server-tls")
	// current: left alone
	if err := s.Sync(ctx, svc); err != nil {
		t.Fatal(err)
	}
	if _, again := secretCert(t, c, "metrics-server-tls"); !again.Equal(first) {
		t.Fatal("a current certificate was replaced")
	}
	// signed by another CA (the cluster CA was replaced): issued again
	other, _ := pki.NewCA("old-ca")
	old, _ := other.Issue(servingSpec(svc, "cluster.local"))
	writeCert(t, c, "metrics-server-tls", old)
	if err := s.Sync(ctx, svc); err != nil {
		t.Fatal(err)
	}
	if _, cert := secretCert(t, c, "metrics-server-tls"); cert.CheckSignatureFrom(s.CA.Cert) != nil {
		t.Fatal("a certificate from another CA was kept")
	}
	// renewed with a third of its life left
	sec, cert := secretCert(t, c, "metrics-server-tls")
	life := cert.NotAfter.Sub(cert.NotBefore)
	if spec := servingSpec(svc, "cluster.local"); !s.current(sec, spec, cert.NotBefore.Add(life/2)) || s.current(sec, spec, cert.NotAfter.Add(-life/4)) {
		t.Error("current at half its life, or not renewed with a quarter left")
	}
	// names of another Service: issued again
	wrong, _ := s.CA.Issue(servingSpec(annotatedService("other", "x"), "cluster.local"))
	writeCert(t, c, "metrics-server-tls", wrong)
	if err := s.Sync(ctx, svc); err != nil {
		t.Fatal(err)
	}
	if _, cert := secretCert(t, c, "metrics-server-tls"); cert.Subject.CommonName != "metrics-server.kube-system.svc" {
		t.Fatalf("certificate for %s kept", cert.Subject.CommonName)
	}
}

func writeCert(t *testing.T, c *fake.Clientset, name string, kp *pki.KeyPair) {
	t.Helper()
	sec, err := c.CoreV1().Secrets(metav1.NamespaceSystem).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec.Data["tls.crt"], sec.Data["tls.key"] = pki.CertPEM(kp.Cert), keyPEM(t, kp)
	if _, err := c.CoreV1().Secrets(metav1.NamespaceSystem).Update(context.Background(), sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func keyPEM(t *testing.T, kp *pki.KeyPair) []byte {
	t.Helper()
	b, err := pki.KeyPEM(kp.Key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A Secret someone else made, a Service outside kube-system and a bad
// Secret name are left alone.
func TestServingCertLeavesOthersAlone(t *testing.T) {
	t.Parallel()
	s, c := servingCerts(t)
	ctx := context.Background()
	mine := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "users-tls", Namespace: metav1.NamespaceSystem}, Data: map[string][]byte{"tls.crt": []byte("mine")}}
	if _, err := c.CoreV1().Secrets(metav1.NamespaceSystem).Create(ctx, mine, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx, annotatedService("web", "users-tls")); err != nil {
		t.Fatal(err)
	}
	if sec, _ := c.CoreV1().Secrets(metav1.NamespaceSystem).Get(ctx, "users-tls", metav1.GetOptions{}); string(sec.Data["tls.crt"]) != "mine" {
		t.Fatal("a Secret without our label was overwritten")
	}
	elsewhere := annotatedService("web", "web-tls")
	elsewhere.Namespace = "default"
	if err := s.Sync(ctx, elsewhere); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx, annotatedService("web", "Not_A_Name")); err != nil {
		t.Fatal(err)
	}
	all, _ := c.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
	if len(all.Items) != 1 {
		t.Fatalf("Secrets %v, want only the user's", all.Items)
	}
}
