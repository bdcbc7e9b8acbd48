package suite

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/kubesplit/kubesplit/testcluster"
)

var helmChartGVR = schema.GroupVersionResource{Group: "helm.cattle.io", Version: "v1", Resource: "helmcharts"}
var helmChartConfigGVR = schema.GroupVersionResource{Group: "helm.cattle.io", Version: "v1", Resource: "helmchartconfigs"}

// chartArchive is a chart .tgz with one ConfigMap template.
func chartArchive(t *testing.T, name, template string) []byte {
	t.Helper()
	files := map[string]string{
		name + "/Chart.yaml":          "apiVersion: v2\nname: " + name + "\nversion: 0.1.0\n",
		name + "/values.yaml":         "greeting: default\n",
		name + "/templates/data.yaml": template,
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, n := range []string{name + "/Chart.yaml", name + "/values.yaml", name + "/templates/data.yaml"} {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), ModTime: time.Unix(0, 0)}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(files[n]))
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

const greetingTemplate = `apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-data
data:
  greeting: {{ .Values.greeting | quote }}
`

// helmCharts: the HelmChart controller installs a chart from chartContent
// and one named by k3s's static-charts URL from a .tgz in the manifests
// directory (a k3s manifest copied as is); a values change upgrades (a new
// revision), a HelmChartConfig overrides, a broken chart fails with Helm's
// message (values scrubbed) while the others are served, and deleting a
// HelmChart (or its manifest file) uninstalls.
func helmCharts(t *testing.T, c *testcluster.Cluster) {
	ctx := context.Background()
	cs := c.Client()
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	const target = "helm-e2e"
	charts := dyn.Resource(helmChartGVR).Namespace("default")
	t.Cleanup(func() {
		for _, n := range []string{"hello", "broken"} {
			_ = charts.Delete(ctx, n, metav1.DeleteOptions{})
		}
		_ = dyn.Resource(helmChartConfigGVR).Namespace("default").Delete(ctx, "hello", metav1.DeleteOptions{})
		_ = cs.CoreV1().Namespaces().Delete(ctx, target, metav1.DeleteOptions{})
	})
	greeting := func(release string) string {
		cm, err := cs.CoreV1().ConfigMaps(target).Get(ctx, release+"-data", metav1.GetOptions{})
		if err != nil {
			return ""
		}
		return cm.Data["greeting"]
	}
	waitGreeting := func(release, want string, revision int64) {
		t.Helper()
		waitFor(t, fmt.Sprintf("%s's ConfigMap greeting %q at revision %d", release, want, revision), 2*time.Minute, func(ctx context.Context) (bool, error) {
			hc, err := dyn.Resource(helmChartGVR).Namespace(chartNamespace(release)).Get(ctx, release, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			rev, _, _ := unstructured.NestedInt64(hc.Object, "status", "revision")
			got := greeting(release)
			return got == want && rev == revision, fmt.Errorf("greeting %q, revision %d, status %v", got, rev, hc.Object["status"])
		})
	}
	hello := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "helm.cattle.io/v1", "kind": "HelmChart",
		"metadata": map[string]any{"name": "hello", "namespace": "default"},
		"spec": map[string]any{
			"targetNamespace": target, "createNamespace": true,
			"chartContent":  base64.StdEncoding.EncodeToString(chartArchive(t, "hello", greetingTemplate)),
			"valuesContent": "greeting: one\n",
		},
	}}
	// the CRD comes with the controllers; retry while the API learns it
	waitFor(t, "HelmChart hello created", time.Minute, func(ctx context.Context) (bool, error) {
		_, err := charts.Create(ctx, hello, metav1.CreateOptions{})
		return err == nil, err
	})
	start := time.Now()
	waitGreeting("hello", "one", 1)
	t.Logf("HelmChart applied to release deployed: %s", time.Since(start).Round(100*time.Millisecond))

	// a values change upgrades: revision 2
	patch := func(name, valuesContent string) {
		t.Helper()
		p := fmt.Sprintf(`{"spec":{"valuesContent":%q}}`, valuesContent)
		if _, err := charts.Patch(ctx, name, "application/merge-patch+json", []byte(p), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	patch("hello", "greeting: two\n")
	waitGreeting("hello", "two", 2)

	// a HelmChartConfig of the same name overrides the values
	hcc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "helm.cattle.io/v1", "kind": "HelmChartConfig",
		"metadata": map[string]any{"name": "hello", "namespace": "default"},
		"spec":     map[string]any{"valuesContent": "greeting: three\n"},
	}}
	if _, err := dyn.Resource(helmChartConfigGVR).Namespace("default").Create(ctx, hcc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitGreeting("hello", "three", 3)

	// a broken chart: a failed condition and a warning event with Helm's
	// message, without the secret value the message would have quoted
	const secret = "hunter2-not-for-events"
	broken := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "helm.cattle.io/v1", "kind": "HelmChart",
		"metadata": map[string]any{"name": "broken", "namespace": "default"},
		"spec": map[string]any{
			"targetNamespace": target,
			"chartContent": base64.StdEncoding.EncodeToString(chartArchive(t, "broken",
				`{{ required (printf "no value for missing (password was %s)" .Values.password) .Values.missing }}`)),
			"valuesContent": "password: " + secret + "\n",
		},
	}}
	if _, err := charts.Create(ctx, broken, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "HelmChart broken reported as failed", 2*time.Minute, func(ctx context.Context) (bool, error) {
		hc, err := charts.Get(ctx, "broken", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		m := readyCondition(hc)
		if m["status"] != "False" {
			return false, fmt.Errorf("status %v", hc.Object["status"])
		}
		msg := fmt.Sprint(m["message"])
		if strings.Contains(msg, secret) {
			t.Fatalf("the failure message quotes a value: %s", msg)
		}
		return strings.Contains(msg, "no value for missing"), fmt.Errorf("message %q", msg)
	})
	events, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=broken,reason=ApplyFailed"})
	if err != nil || len(events.Items) == 0 {
		t.Fatalf("no ApplyFailed event for broken: %v", err)
	}
	for _, e := range events.Items {
		if e.Type != corev1.EventTypeWarning || strings.Contains(e.Message, secret) || !strings.Contains(e.Message, "no value for missing") {
			t.Errorf("event %s %q: want a warning with Helm's message and no value", e.Type, e.Message)
		}
	}
	// and the others are still served: a change of hello's own values that
	// the HelmChartConfig overrides makes no revision, the config's does
	patch("hello", "greeting: four\n")
	if _, err := dyn.Resource(helmChartConfigGVR).Namespace("default").Patch(ctx, "hello", "application/merge-patch+json",
		[]byte(`{"spec":{"valuesContent":"greeting: five\n"}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitGreeting("hello", "five", 4)

	// a k3s manifest as is: the chart named by k3s's static-charts URL, its
	// archive beside the manifest in the manifests directory
	k3sManifest := `apiVersion: helm.cattle.io/v1
kind: HelmChart
metadata:
  name: e2e-k3s
  namespace: kube-system
spec:
  chart: https://%{KUBERNETES_API}%/static/charts/e2e-k3s.tgz
  targetNamespace: ` + target + `
  bootstrap: false
  set:
    greeting: from-k3s
  valuesContent: |-
    unused: true
`
	controllers := c.Container(testcluster.Controllers).GetContainerID()
	copyManifests(t, controllers, map[string][]byte{
		"e2e-k3s.tgz":  chartArchive(t, "e2e-k3s", greetingTemplate),
		"e2e-k3s.yaml": []byte(k3sManifest),
	})
	waitGreeting("e2e-k3s", "from-k3s", 1)
	// removing the manifest deletes the HelmChart, which uninstalls
	docker(t, "", "run", "--rm", "--volumes-from", controllers, "--user", "0:0", "--entrypoint", "/bin/rm",
		"kubesplit/node:"+tag(), "-f", "/var/lib/kubesplit/manifests/e2e-k3s.yaml", "/var/lib/kubesplit/manifests/e2e-k3s.tgz")
	waitUninstalled(t, c, target, "e2e-k3s")

	// deleting a HelmChart uninstalls its release
	if err := charts.Delete(ctx, "hello", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUninstalled(t, c, target, "hello")
}

// chartNamespace is where the scenario keeps a HelmChart.
func chartNamespace(release string) string {
	if release == "e2e-k3s" {
		return "kube-system"
	}
	return "default"
}

// waitUninstalled waits until a release's ConfigMap, its Helm records and
// its HelmChart are gone.
func waitUninstalled(t *testing.T, c *testcluster.Cluster, target, release string) {
	t.Helper()
	cs := c.Client()
	dyn, _ := dynamic.NewForConfig(c.RESTConfig())
	waitFor(t, release+" uninstalled", 2*time.Minute, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ConfigMaps(target).Get(ctx, release+"-data", metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			return false, fmt.Errorf("ConfigMap: %v", err)
		}
		secrets, err := cs.CoreV1().Secrets(target).List(ctx, metav1.ListOptions{LabelSelector: "owner=helm,name=" + release})
		if err != nil || len(secrets.Items) > 0 {
			return false, fmt.Errorf("release records left: %v", err)
		}
		_, err = dyn.Resource(helmChartGVR).Namespace(chartNamespace(release)).Get(ctx, release, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Errorf("HelmChart: %v", err)
	})
}

// copyManifests writes files into the controllers' manifests directory
// (on the data volume), owned by the roles' user.
func copyManifests(t *testing.T, container string, files map[string][]byte) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	// the archive first: the deployer may apply the manifest at once
	for _, n := range []string{"e2e-k3s.tgz", "e2e-k3s.yaml"} {
		if err := tw.WriteHeader(&tar.Header{Name: "manifests/" + n, Mode: 0o644, Size: int64(len(files[n])), Uid: 65532, Gid: 65532, ModTime: time.Now()}); err != nil {
			t.Fatal(err)
		}
		tw.Write(files[n])
	}
	tw.Close()
	docker(t, buf.String(), "cp", "-", container+":/var/lib/kubesplit")
}

// readyCondition is the HelmChart's Ready condition (nil when it has none).
func readyCondition(u *unstructured.Unstructured) map[string]any {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Ready" {
			return m
		}
	}
	return nil
}
