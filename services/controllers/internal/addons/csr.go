package addons

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/kubesplit/kubesplit/pkg/nodeidentity"
)

// ServingApprover approves kubelet serving certificate requests
// (kubernetes.io/kubelet-serving) that really come from the node they name:
// the upstream controller-manager approves only client certificates. A CSR
// is approved when its requester is system:node:NAME, a SubjectAccessReview
// says that requester may create certificatesigningrequests/selfnodeserver,
// the subject is exactly that node, the usages are a server's, and every
// IP and DNS name is one of the node's own addresses. Anything else is denied
// with the reason.
type ServingApprover struct {
	Client kubernetes.Interface
	Log    *slog.Logger
}

// Run approves until ctx ends.
func (a *ServingApprover) Run(ctx context.Context) error {
	factory := informers.NewSharedInformerFactory(a.Client, 10*time.Minute)
	inf := factory.Certificates().V1().CertificateSigningRequests()
	q := newQueue(ctx)
	defer q.ShutDown()
	add := func(obj any) {
		if csr, ok := obj.(*certificatesv1.CertificateSigningRequest); ok && pending(csr) && csr.Spec.SignerName == certificatesv1.KubeletServingSignerName {
			q.Add(csr.Name)
		}
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: add, UpdateFunc: func(_, n any) { add(n) }}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	work(q, a.Log, "kubelet serving CSR", "csr", func(name string) error {
		csr, err := inf.Lister().Get(name)
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case err != nil || !pending(csr):
			return err
		}
		return a.handle(ctx, csr)
	})
	return nil
}

func pending(csr *certificatesv1.CertificateSigningRequest) bool {
	for _, c := range csr.Status.Conditions {
		if c.Type == certificatesv1.CertificateApproved || c.Type == certificatesv1.CertificateDenied {
			return false
		}
	}
	return true
}

func (a *ServingApprover) handle(ctx context.Context, csr *certificatesv1.CertificateSigningRequest) error {
	node, reason := a.check(ctx, csr)
	if reason == errRetry {
		return errors.New("could not check the request yet")
	}
	cond := certificatesv1.CertificateSigningRequestCondition{
		Status: corev1.ConditionTrue, LastUpdateTime: metav1.Now(),
	}
	if reason == nil {
		cond.Type, cond.Reason, cond.Message = certificatesv1.CertificateApproved, "KubesplitNodeServingApproved", "requester is node "+node
		a.Log.Info("approved kubelet serving certificate", "csr", csr.Name, "node", node)
	} else {
		cond.Type, cond.Reason, cond.Message = certificatesv1.CertificateDenied, "KubesplitNodeServingDenied", reason.Error()
		a.Log.Warn("denied kubelet serving certificate", "csr", csr.Name, "requester", csr.Spec.Username, "reason", reason)
	}
	csr = csr.DeepCopy()
	csr.Status.Conditions = append(csr.Status.Conditions, cond)
	_, err := a.Client.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil // someone else decided, or it is gone
	}
	return err
}

var errRetry = errors.New("retry")

// check returns the node name, or why the request must be denied.
func (a *ServingApprover) check(ctx context.Context, csr *certificatesv1.CertificateSigningRequest) (string, error) {
	node, ok := strings.CutPrefix(csr.Spec.Username, nodeidentity.CommonName(""))
	if !ok || node == "" || !slices.Contains(csr.Spec.Groups, nodeidentity.Group) {
		return "", fmt.Errorf("requester %q is not a node", csr.Spec.Username)
	}
	block, _ := pem.Decode(csr.Spec.Request)
	if block == nil {
		return node, errors.New("request is not PEM")
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return node, fmt.Errorf("request does not parse: %v", err)
	}
	if req.Subject.CommonName != csr.Spec.Username || !slices.Equal(req.Subject.Organization, []string{nodeidentity.Group}) {
		return node, fmt.Errorf("subject %q does not name the requesting node", req.Subject.String())
	}
	if len(req.EmailAddresses) > 0 || len(req.URIs) > 0 || len(req.IPAddresses)+len(req.DNSNames) == 0 {
		return node, errors.New("names must be the node's IPs and DNS names only")
	}
	allowed := []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageKeyEncipherment, certificatesv1.UsageServerAuth}
	for _, u := range csr.Spec.Usages {
		if !slices.Contains(allowed, u) {
			return node, fmt.Errorf("usage %q is not a server's", u)
		}
	}
	if !slices.Contains(csr.Spec.Usages, certificatesv1.UsageServerAuth) {
		return node, errors.New("usages lack server auth")
	}
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: csr.Spec.Username, UID: csr.Spec.UID, Groups: csr.Spec.Groups,
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Group: "certificates.k8s.io", Resource: "certificatesigningrequests", Subresource: SelfNodeServerSubresource, Verb: "create",
		},
	}}
	res, err := a.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return node, errRetry
	}
	if !res.Status.Allowed {
		return node, fmt.Errorf("%s may not create certificatesigningrequests/%s", csr.Spec.Username, SelfNodeServerSubresource)
	}
	n, err := a.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return node, errRetry // the kubelet registers its Node before it asks; wait for it
	}
	if len(n.Status.Addresses) == 0 {
		return node, errRetry
	}
	ips, dns := map[string]bool{}, map[string]bool{node: true}
	for _, addr := range n.Status.Addresses {
		switch addr.Type {
		case corev1.NodeInternalIP, corev1.NodeExternalIP:
			if ip := net.ParseIP(addr.Address); ip != nil {
				ips[ip.String()] = true
			}
		case corev1.NodeHostName, corev1.NodeInternalDNS, corev1.NodeExternalDNS:
			dns[addr.Address] = true
		}
	}
	for _, ip := range req.IPAddresses {
		if !ips[ip.String()] {
			return node, fmt.Errorf("IP %s is not an address of node %s", ip, node)
		}
	}
	for _, d := range req.DNSNames {
		if !dns[d] {
			return node, fmt.Errorf("DNS name %q is not a name of node %s", d, node)
		}
	}
	return node, nil
}
