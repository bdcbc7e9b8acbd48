package addons

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestParseManifestsOrdersAndRejects(t *testing.T) {
	t.Parallel()
	objs, err := ParseManifests([]byte(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: demo}
---
---
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web", "namespace": "demo"}}
`))
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, o.GetKind())
	}
	if got := strings.Join(kinds, ","); got != "Namespace,ServiceAccount,Deployment" {
		t.Fatalf("apply order %s, want the namespace, then the account, then the workload", got)
	}
	for name, bad := range map[string]string{
		"no name":  "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
		"no kind":  "apiVersion: v1\nmetadata: {name: x}\n",
		"a list":   "apiVersion: v1\nkind: List\nmetadata: {name: x}\nitems: []\n",
		"not yaml": "apiVersion: v1\nkind: [\n",
	} {
		if _, err := ParseManifests([]byte(bad)); err == nil || !strings.Contains(err.Error(), "document 1") {
			t.Errorf("%s: err %v, want one naming document 1", name, err)
		}
	}
}

func TestAddonName(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"coredns.yaml": "coredns", "/x/My_App.v2.yml": "my-app-v2", "traefik.json": "traefik"} {
		if got := AddonName(in); got != want {
			t.Errorf("AddonName(%q) = %q, want %q", in, got, want)
		}
	}
}

// testBundledParams are what the controllers render the bundled addons with.
func testBundledParams() BundledParams {
	return BundledParams{ClusterDNS: "10.43.0.10", ClusterDomain: "cluster.local", ImageTag: "test",
		ClusterCA: []byte("-----BEGIN CERTIFICATE-----\ntest\n-----END CERTIFICATE-----\n")}
}

func TestWriteBundledDisableAndSkip(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := testBundledParams()
	if err := WriteBundled(dir, p, nil); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "coredns.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"clusterIP: 10.43.0.10", "kubernetes cluster.local in-addr.arpa", "image: kubesplit/coredns:test"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("rendered coredns.yaml lacks %q", want)
		}
	}
	if _, err := ParseManifests(b); err != nil {
		t.Fatalf("rendered coredns.yaml does not parse: %v", err)
	}
	// a .skip file keeps the user's edit
	path := filepath.Join(dir, "coredns.yaml")
	if err := os.WriteFile(path, []byte("# mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".skip", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteBundled(dir, p, nil); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "# mine\n" {
		t.Fatalf("coredns.yaml overwritten despite .skip: %q", b)
	}
	os.Remove(path + ".skip")
	// --disable removes the file (the deployer then deletes the objects)
	if err := WriteBundled(dir, p, []string{"coredns"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("coredns.yaml still there after --disable coredns: %v", err)
	}
	if err := WriteBundled(dir, p, []string{"kube-dns"}); err == nil || !strings.Contains(err.Error(), "bundled: coredns") {
		t.Fatalf("unknown --disable name: err %v, want one listing the bundled addons", err)
	}
}

// metrics-server's manifest: its image, an APIService that verifies it with
// the cluster CA, the Service annotation that gets it a serving certificate,
// and kubelet scraping through the apiserver, never without TLS checks.
func TestBundledMetricsServer(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := testBundledParams()
	if err := WriteBundled(dir, p, nil); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "metrics-server.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := ParseManifests(b)
	if err != nil {
		t.Fatalf("rendered metrics-server.yaml does not parse: %v", err)
	}
	kinds := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		kinds[o.GetKind()+"/"+o.GetName()] = o
	}
	api := kinds["APIService/v1beta1.metrics.k8s.io"]
	if api == nil {
		t.Fatalf("no APIService v1beta1.metrics.k8s.io in %v", kinds)
	}
	ca, _, _ := unstructured.NestedString(api.Object, "spec", "caBundle")
	if want := base64.StdEncoding.EncodeToString(p.ClusterCA); ca != want {
		t.Errorf("APIService caBundle %q, want the cluster CA %q", ca, want)
	}
	if skip, _, _ := unstructured.NestedBool(api.Object, "spec", "insecureSkipTLSVerify"); skip {
		t.Error("APIService skips TLS verification")
	}
	svc := kinds["Service/metrics-server"]
	if svc == nil || svc.GetAnnotations()[ServingCertAnnotation] != "metrics-server-tls" {
		t.Fatalf("Service metrics-server does not ask for its serving certificate (%s)", ServingCertAnnotation)
	}
	dep := kinds["Deployment/metrics-server"]
	if dep == nil {
		t.Fatal("no Deployment metrics-server")
	}
	containers, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	c := containers[0].(map[string]any)
	if c["image"] != "kubesplit/metrics-server:test" {
		t.Errorf("image %v, want kubesplit/metrics-server:test", c["image"])
	}
	args := fmt.Sprint(c["args"])
	for _, want := range []string{"--kubelet-via-apiserver", "--tls-cert-file=/etc/metrics-server/tls/tls.crt"} {
		if !strings.Contains(args, want) {
			t.Errorf("args %s lack %s", args, want)
		}
	}
	if strings.Contains(args, "insecure") {
		t.Errorf("args %s turn a TLS check off", args)
	}
	if kinds["ValidatingAdmissionPolicy/kubesplit-metrics-server-node-proxy"] == nil || kinds["ValidatingAdmissionPolicyBinding/kubesplit-metrics-server-node-proxy"] == nil {
		t.Error("no policy (and binding) narrowing metrics-server's nodes/proxy")
	}
	// no CA, no manifest: an APIService must never be rendered unverifiable
	p.ClusterCA = nil
	if _, err := RenderBundled("metrics-server", p); err == nil || !strings.Contains(err.Error(), "cluster CA") {
		t.Errorf("rendering without a cluster CA: err %v, want one naming the cluster CA", err)
	}
	if err := WriteBundled(dir, testBundledParams(), []string{"metrics-server"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("metrics-server.yaml still there after --disable metrics-server: %v", err)
	}
}
