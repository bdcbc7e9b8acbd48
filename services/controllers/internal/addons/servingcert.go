package addons

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/pkg/pki"
)

// ServingCertAnnotation on a Service in kube-system asks the controllers
// for a serving certificate for the Service's DNS names, signed by the
// cluster CA and kept (and renewed) in the Secret the annotation names:
// type kubernetes.io/tls, with tls.crt, tls.key and ca.crt (the cluster CA).
//
// This is how the apiserver verifies a bundled addon it calls, such as
// metrics-server behind its APIService, without insecureSkipTLSVerify (what
// upstream's manifest does). The alternatives were a self-signed certificate
// per addon with its caBundle injected into the APIService after every
// renewal (cert-manager's cainjector), or a CA of its own. The cluster CA
// is simpler and as tight: the controllers hold its key already (they sign
// CSRs with it), the apiserver trusts what it signs for kubelets already,
// and the caBundle (the cluster CA) is known when the manifest is rendered,
// so it never changes when a certificate is renewed. It is only for
// kube-system, where only cluster admins create Services, and the names are
// always the Service's own, for server auth only, so nobody obtains a
// certificate for a name that is not theirs.
const ServingCertAnnotation = "kubesplit.io/serving-cert-secret"

// servingCertLabel marks the Secrets ServingCerts keeps, with the Service's
// name; a Secret without it is never overwritten.
const servingCertLabel = "kubesplit.io/serving-cert-for"

// ServingCerts keeps the Secrets that ServingCertAnnotation asks for. A
// Secret is owned by its Service, so deleting the Service (as --disable
// does) deletes the Secret.
type ServingCerts struct {
	Client kubernetes.Interface
	CA     *pki.KeyPair
	Domain string // cluster domain
	Log    *slog.Logger
}

// Run keeps the Secrets until ctx ends. Every Service is looked at again
// every hour, which renews a certificate with a third of its life left.
func (s *ServingCerts) Run(ctx context.Context) error {
	ns := metav1.NamespaceSystem
	svcs := informers.NewSharedInformerFactoryWithOptions(s.Client, time.Hour, informers.WithNamespace(ns))
	secrets := informers.NewSharedInformerFactoryWithOptions(s.Client, time.Hour, informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = servingCertLabel }))
	q := newQueue(ctx)
	defer q.ShutDown()
	onService := func(obj any) {
		if svc, ok := obj.(*corev1.Service); ok && svc.Annotations[ServingCertAnnotation] != "" {
			q.Add(svc.Name)
		}
	}
	onSecret := func(obj any) { // a deleted or edited Secret is put back
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if sec, ok := obj.(*corev1.Secret); ok && sec.Labels[servingCertLabel] != "" {
			q.Add(sec.Labels[servingCertLabel])
		}
	}
	svcInf := svcs.Core().V1().Services()
	if _, err := svcInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: onService, UpdateFunc: func(_, n any) { onService(n) },
	}); err != nil {
		return err
	}
	if _, err := secrets.Core().V1().Secrets().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, n any) { onSecret(n) }, DeleteFunc: onSecret,
	}); err != nil {
		return err
	}
	svcs.Start(ctx.Done())
	secrets.Start(ctx.Done())
	defer svcs.Shutdown()
	defer secrets.Shutdown()
	work(q, s.Log, "serving certificate", "service", func(name string) error {
		svc, err := svcInf.Lister().Services(ns).Get(name)
		if apierrors.IsNotFound(err) {
			return nil // its Secret goes with it (owner reference)
		}
		if err != nil {
			return err
		}
		return s.Sync(ctx, svc)
	})
	return nil
}

// Sync makes svc's Secret hold a current certificate for svc's names.
func (s *ServingCerts) Sync(ctx context.Context, svc *corev1.Service) error {
	name := svc.Annotations[ServingCertAnnotation]
	if name == "" || svc.Namespace != metav1.NamespaceSystem {
		return nil
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		s.Log.Warn("serving certificate: the annotation does not name a Secret", "service", svc.Name, "annotation", ServingCertAnnotation, "value", name, "reason", errs[0])
		return nil
	}
	spec := servingSpec(svc, s.Domain)
	secrets := s.Client.CoreV1().Secrets(svc.Namespace)
	cur, err := secrets.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		cur = nil
	case err != nil:
		return err
	case cur.Labels[servingCertLabel] != svc.Name:
		s.Log.Warn("serving certificate: Secret exists and is not ours; delete it to have it issued", "service", svc.Name, "secret", name)
		return nil
	case s.current(cur, spec, time.Now()) && metav1.IsControlledBy(cur, svc):
		return nil
	}
	kp, err := s.CA.Issue(spec)
	if err != nil {
		return err
	}
	key, err := pki.KeyPEM(kp.Key)
	if err != nil {
		return err
	}
	want := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: svc.Namespace, Labels: map[string]string{servingCertLabel: svc.Name},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID, Controller: ptr.To(true)}},
		},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{
			corev1.TLSCertKey: pki.CertPEM(kp.Cert), corev1.TLSPrivateKeyKey: key, corev1.ServiceAccountRootCAKey: pki.CertPEM(s.CA.Cert),
		},
	}
	if cur == nil {
		_, err = secrets.Create(ctx, want, metav1.CreateOptions{})
	} else {
		want.ResourceVersion = cur.ResourceVersion // a concurrent writer makes this a conflict, retried
		_, err = secrets.Update(ctx, want, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("writing Secret %s/%s: %w", svc.Namespace, name, err)
	}
	s.Log.Info("serving certificate issued", "service", svc.Name, "secret", name, "names", spec.DNSNames, "notAfter", kp.Cert.NotAfter.Format(time.RFC3339))
	return nil
}

// servingSpec is the certificate of a Service: its DNS names alone.
func servingSpec(svc *corev1.Service, domain string) pki.Spec {
	svcName := svc.Name + "." + svc.Namespace + ".svc"
	return pki.Spec{
		CommonName: svcName,
		DNSNames:   []string{svc.Name, svc.Name + "." + svc.Namespace, svcName, svcName + "." + domain},
		Usage:      pki.UsageServer,
	}
}

// current reports whether sec holds a certificate from the CA for exactly
// spec's names with more than a third of its life left at now.
func (s *ServingCerts) current(sec *corev1.Secret, spec pki.Spec, now time.Time) bool {
	kp, err := pki.ParseKeyPair(sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey], "Secret "+sec.Name)
	if err != nil || pki.VerifyLeaf(kp.Cert, s.CA.Cert, spec) != nil {
		return false
	}
	if !slices.Equal(slices.Sorted(slices.Values(kp.Cert.DNSNames)), slices.Sorted(slices.Values(spec.DNSNames))) {
		return false
	}
	c := kp.Cert
	return c.NotAfter.Sub(now) > c.NotAfter.Sub(c.NotBefore)/3
}
