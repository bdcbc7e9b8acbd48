package suite

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/testcluster"
)

const (
	hooksNS  = "e2e-hooks"  // the webhook pods
	hookedNS = "e2e-hooked" // where the webhooks act (and nowhere else)
)

var (
	crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	apiSvc = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}
)

// webhooks: admission webhooks (validating and mutating), a CRD conversion
// webhook and an aggregated API, all served by pods on the nodes, which the
// apiserver reaches only through the nodes' tunnels.
func webhooks(t *testing.T, c *testcluster.Cluster) {
	ctx := context.Background()
	cs := c.Client()
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	caPEM, mount := hookTLS(t, cs)
	onePodPerNode(t, cs, hooksNS, "hooks", hookCommand, 8443, mount)
	// everything cluster-wide this scenario makes goes before its namespaces
	defer func() {
		_ = cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(ctx, "e2e-validate", metav1.DeleteOptions{})
		_ = cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx, "e2e-mutate", metav1.DeleteOptions{})
		_ = dyn.Resource(apiSvc).Delete(ctx, "v1.aggregated.e2e.kubesplit.io", metav1.DeleteOptions{})
		_ = dyn.Resource(crdGVR).Delete(ctx, "paints.e2e.kubesplit.io", metav1.DeleteOptions{})
		deleteNamespace(t, cs, hookedNS)
		deleteNamespace(t, cs, hooksNS)
	}()

	t.Run("admission", func(t *testing.T) { admission(t, c, caPEM) })
	t.Run("conversion", func(t *testing.T) { conversion(t, dyn, caPEM) })
	t.Run("aggregated-api", func(t *testing.T) { aggregated(t, c, dyn, caPEM) })
}

// hookCommand serves the webhooks (e2e/cmd/testapp/webhook.go).
var hookCommand = []string{"/testapp", "webhook", "8443", "/tls"}

// hookTLS creates hooksNS and a serving certificate for the Service
// hooks.e2e-hooks.svc in it; mount puts it where hookCommand reads it.
func hookTLS(t *testing.T, cs kubernetes.Interface) (caPEM []byte, mount func(*corev1.PodSpec)) {
	t.Helper()
	ctx := context.Background()
	caPEM, certPEM, keyPEM := servingCert(t, "hooks."+hooksNS+".svc")
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: hooksNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hooks-tls", Namespace: hooksNS}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM}}
	if _, err := cs.CoreV1().Secrets(hooksNS).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return caPEM, func(s *corev1.PodSpec) {
		s.Volumes = []corev1.Volume{{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "hooks-tls"}}}}
		s.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "tls", MountPath: "/tls", ReadOnly: true}}
	}
}

// mutatingHook labels ConfigMaps created in namespaces labelled
// e2e-webhooks=selector, served by the Service hooks in hooksNS.
func mutatingHook(name, selector string, caPEM []byte, policy admissionv1.FailurePolicyType) *admissionv1.MutatingWebhookConfiguration {
	none := admissionv1.SideEffectClassNone
	return &admissionv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionv1.MutatingWebhook{{Name: name + ".e2e.kubesplit.io",
			ClientConfig: admissionv1.WebhookClientConfig{CABundle: caPEM,
				Service: &admissionv1.ServiceReference{Namespace: hooksNS, Name: "hooks", Path: ptr.To("/mutate"), Port: ptr.To[int32](443)}},
			Rules: []admissionv1.RuleWithOperations{{Operations: []admissionv1.OperationType{admissionv1.Create},
				Rule: admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}}}},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"e2e-webhooks": selector}},
			FailurePolicy:     &policy, SideEffects: &none, AdmissionReviewVersions: []string{"v1"}, TimeoutSeconds: ptr.To[int32](5)}},
	}
}

func admission(t *testing.T, c *testcluster.Cluster, caPEM []byte) {
	ctx := context.Background()
	cs := c.Client()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: hookedNS,
		Labels: map[string]string{"e2e-webhooks": "on"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	client := func(path string) admissionv1.WebhookClientConfig {
		return admissionv1.WebhookClientConfig{CABundle: caPEM,
			Service: &admissionv1.ServiceReference{Namespace: hooksNS, Name: "hooks", Path: ptr.To(path), Port: ptr.To[int32](443)}}
	}
	rules := []admissionv1.RuleWithOperations{{Operations: []admissionv1.OperationType{admissionv1.Create},
		Rule: admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}}}}
	scope := &metav1.LabelSelector{MatchLabels: map[string]string{"e2e-webhooks": "on"}}
	fail, none := admissionv1.Fail, admissionv1.SideEffectClassNone
	if _, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, &admissionv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-validate"},
		Webhooks: []admissionv1.ValidatingWebhook{{Name: "validate.e2e.kubesplit.io", ClientConfig: client("/validate"), Rules: rules,
			NamespaceSelector: scope, FailurePolicy: &fail, SideEffects: &none, AdmissionReviewVersions: []string{"v1"}, TimeoutSeconds: ptr.To[int32](5)}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mutatingHook("e2e-mutate", "on", caPEM, fail), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// a new webhook configuration takes a moment to reach the apiserver's cache
	var mutated int
	waitFor(t, "the mutating webhook to act", time.Minute, func(ctx context.Context) (bool, error) {
		mutated++
		cm, err := cs.CoreV1().ConfigMaps(hookedNS).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("probe-%d", mutated)}}, metav1.CreateOptions{})
		if err != nil {
			return false, err
		}
		return cm.Labels["e2e-mutated"] == "true", fmt.Errorf("labels %v", cm.Labels)
	})
	// every allowed create is mutated, every labelled one denied, by pods on either node
	for i := range 10 {
		cm, err := cs.CoreV1().ConfigMaps(hookedNS).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("allowed-%d", i)}}, metav1.CreateOptions{})
		if err != nil || cm.Labels["e2e-mutated"] != "true" {
			t.Fatalf("allowed create %d: %v %v", i, cm, err)
		}
		_, err = cs.CoreV1().ConfigMaps(hookedNS).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("denied-%d", i),
			Labels: map[string]string{"e2e-deny": "true"}}}, metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), "denied by the e2e webhook on hooks-") {
			t.Fatalf("a labelled create was not denied by the webhook: %v", err)
		}
	}
	// outside the selected namespace the webhooks are not called
	cm, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "not-hooked",
		Labels: map[string]string{"e2e-deny": "true"}}}, metav1.CreateOptions{})
	if err != nil || cm.Labels["e2e-mutated"] != "" {
		t.Fatalf("a configmap outside the webhooks' namespace: %v %v", cm, err)
	}
	_ = cs.CoreV1().ConfigMaps("default").Delete(ctx, "not-hooked", metav1.DeleteOptions{})
}

func conversion(t *testing.T, dyn dynamic.Interface, caPEM []byte) {
	ctx := context.Background()
	schemaWith := func(field string) map[string]any {
		return map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "properties": map[string]any{
			"spec": map[string]any{"type": "object", "properties": map[string]any{field: map[string]any{"type": "string"}}}}}}
	}
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "paints.e2e.kubesplit.io"},
		"spec": map[string]any{
			"group": "e2e.kubesplit.io", "scope": "Namespaced",
			"names": map[string]any{"plural": "paints", "singular": "paint", "kind": "Paint"},
			"versions": []any{
				map[string]any{"name": "v1", "served": true, "storage": true, "schema": schemaWith("color")},
				map[string]any{"name": "v2", "served": true, "storage": false, "schema": schemaWith("colour")},
			},
			"conversion": map[string]any{"strategy": "Webhook", "webhook": map[string]any{
				"conversionReviewVersions": []any{"v1"},
				"clientConfig": map[string]any{"caBundle": base64.StdEncoding.EncodeToString(caPEM),
					"service": map[string]any{"namespace": hooksNS, "name": "hooks", "path": "/convert", "port": int64(443)}},
			}},
		},
	}}
	if _, err := dyn.Resource(crdGVR).Create(ctx, crd, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	v1 := schema.GroupVersionResource{Group: "e2e.kubesplit.io", Version: "v1", Resource: "paints"}
	v2 := v1
	v2.Version = "v2"
	obj := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "e2e.kubesplit.io/v1", "kind": "Paint",
		"metadata": map[string]any{"name": "wall"}, "spec": map[string]any{"color": "teal"}}}
	waitFor(t, "the CRD to serve", time.Minute, func(ctx context.Context) (bool, error) {
		_, err := dyn.Resource(v1).Namespace(hooksNS).Create(ctx, obj, metav1.CreateOptions{})
		return err == nil || apierrors.IsAlreadyExists(err), err
	})
	// stored as v1, read as v2: the webhook renamed the field
	var got *unstructured.Unstructured
	waitFor(t, "reading the v1 object as v2", time.Minute, func(ctx context.Context) (bool, error) {
		var err error
		got, err = dyn.Resource(v2).Namespace(hooksNS).Get(ctx, "wall", metav1.GetOptions{})
		return err == nil, err
	})
	if colour, _, _ := unstructured.NestedString(got.Object, "spec", "colour"); colour != "teal" {
		t.Fatalf("as v2: %v", got.Object)
	}
	// written as v2, read back as v1
	obj2 := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "e2e.kubesplit.io/v2", "kind": "Paint",
		"metadata": map[string]any{"name": "door"}, "spec": map[string]any{"colour": "amber"}}}
	if _, err := dyn.Resource(v2).Namespace(hooksNS).Create(ctx, obj2, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	back, err := dyn.Resource(v1).Namespace(hooksNS).Get(ctx, "door", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if color, _, _ := unstructured.NestedString(back.Object, "spec", "color"); color != "amber" {
		t.Fatalf("as v1: %v", back.Object)
	}
}

func aggregated(t *testing.T, c *testcluster.Cluster, dyn dynamic.Interface, caPEM []byte) {
	ctx := context.Background()
	svc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
		"metadata": map[string]any{"name": "v1.aggregated.e2e.kubesplit.io"},
		"spec": map[string]any{"group": "aggregated.e2e.kubesplit.io", "version": "v1",
			"service":  map[string]any{"namespace": hooksNS, "name": "hooks", "port": int64(443)},
			"caBundle": base64.StdEncoding.EncodeToString(caPEM), "groupPriorityMinimum": int64(1000), "versionPriority": int64(15)},
	}}
	if _, err := dyn.Resource(apiSvc).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the APIService to be Available", 2*time.Minute, func(ctx context.Context) (bool, error) {
		got, err := dyn.Resource(apiSvc).Get(ctx, "v1.aggregated.e2e.kubesplit.io", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		for _, cnd := range conds {
			m, _ := cnd.(map[string]any)
			if m["type"] == "Available" {
				return m["status"] == "True", fmt.Errorf("Available: %v", m)
			}
		}
		return false, fmt.Errorf("no Available condition yet")
	})
	// `kubectl get --raw /apis/aggregated.e2e.kubesplit.io/v1/hello`
	servedBy := map[string]bool{}
	for range 20 {
		b, err := c.Client().CoreV1().RESTClient().Get().AbsPath("/apis/aggregated.e2e.kubesplit.io/v1/hello").DoRaw(ctx)
		if err != nil || !strings.Contains(string(b), `"servedBy":"hooks-`) {
			t.Fatalf("the aggregated API: %q %v", b, err)
		}
		servedBy[string(b)] = true
	}
	t.Logf("the aggregated API answered from %d pods", len(servedBy))
}

// servingCert makes a throwaway CA and a serving certificate for dnsName,
// as cert-manager would for an operator's webhook.
func servingCert(t *testing.T, dnsName string) (caPEM, certPEM, keyPEM []byte) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e-webhook-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: dnsName}, DNSNames: []string{dnsName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}
