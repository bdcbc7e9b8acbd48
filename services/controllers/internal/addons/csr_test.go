package addons

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"net"
	"strings"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func csrFor(t *testing.T, requester, cn string, orgs []string, ips []string, dns []string, usages ...certificatesv1.KeyUsage) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn, Organization: orgs}, DNSNames: dns}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(usages) == 0 {
		usages = []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth}
	}
	return &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "csr-" + cn},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			SignerName: certificatesv1.KubeletServingSignerName, Usages: usages,
			Username: requester, Groups: []string{"system:nodes", "system:authenticated"},
		},
	}
}

func TestServingApproverChecks(t *testing.T) {
	n1 := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: "172.18.0.3"}, {Type: corev1.NodeHostName, Address: "node-1"}}}}
	allowSAR := func(allowed bool) k8stesting.ReactionFunc {
		return func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, &authorizationv1.SubjectAccessReview{Status: authorizationv1.SubjectAccessReviewStatus{Allowed: allowed}}, nil
		}
	}
	cases := []struct {
		name    string
		csr     *certificatesv1.CertificateSigningRequest
		sar     bool
		wantErr string // "" approves
	}{
		{"own node", csrFor(t, "system:node:node-1", "system:node:node-1", []string{"system:nodes"}, []string{"172.18.0.3"}, []string{"node-1"}), true, ""},
		{"another node's name", csrFor(t, "system:node:node-2", "system:node:node-1", []string{"system:nodes"}, []string{"172.18.0.3"}, nil), true, "does not name the requesting node"},
		{"not a node", csrFor(t, "alice", "system:node:node-1", []string{"system:nodes"}, []string{"172.18.0.3"}, nil), true, "is not a node"},
		{"foreign IP", csrFor(t, "system:node:node-1", "system:node:node-1", []string{"system:nodes"}, []string{"10.0.0.9"}, nil), true, "is not an address of node node-1"},
		{"foreign DNS", csrFor(t, "system:node:node-1", "system:node:node-1", []string{"system:nodes"}, []string{"172.18.0.3"}, []string{"kubernetes"}), true, "is not a name of node"},
		{"client usage", csrFor(t, "system:node:node-1", "system:node:node-1", []string{"system:nodes"}, []string{"172.18.0.3"}, nil, certificatesv1.UsageClientAuth), true, "is not a server's"},
		{"SAR denies", csrFor(t, "system:node:node-1", "system:node:node-1", []string{"system:nodes"}, []string{"172.18.0.3"}, nil), false, "may not create"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset(n1)
			client.PrependReactor("create", "subjectaccessreviews", allowSAR(tc.sar))
			a := &ServingApprover{Client: client, Log: slog.New(slog.DiscardHandler)}
			_, err := a.check(context.Background(), tc.csr)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("want approval, got %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("want denial %q, got %v", tc.wantErr, err)
			}
		})
	}
}
