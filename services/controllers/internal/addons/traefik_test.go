package addons

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/kubesplit/kubesplit/services/controllers/internal/helmchart"
)

// renderTraefik renders the bundled traefik.yaml, then its chart with
// Helm's own engine as the HelmChart controller would install it (release
// kube-system/traefik), with extra values merged over the HelmChart's.
func renderTraefik(t *testing.T, p BundledParams, extra map[string]any) map[string][]byte {
	t.Helper()
	b, err := RenderBundled("traefik", p)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := ParseManifests(b)
	if err != nil || len(objs) != 1 || objs[0].GetKind() != "HelmChart" {
		t.Fatalf("traefik.yaml: want one HelmChart, got %d objects (%v)", len(objs), err)
	}
	var hc helmchart.HelmChart
	js, _ := objs[0].MarshalJSON()
	if err := yaml.Unmarshal(js, &hc); err != nil {
		t.Fatal(err)
	}
	if hc.Name != "traefik" || hc.Namespace != "kube-system" || hc.Spec.TargetNamespace != "kube-system" {
		t.Fatalf("HelmChart %s/%s into %q, want kube-system/traefik into kube-system", hc.Namespace, hc.Name, hc.Spec.TargetNamespace)
	}
	tgz, err := base64.StdEncoding.DecodeString(hc.Spec.ChartContent)
	if err != nil {
		t.Fatalf("chartContent: %v", err)
	}
	ch, err := loader.LoadArchive(bytes.NewReader(tgz))
	if err != nil {
		t.Fatalf("chartContent is no chart archive: %v", err)
	}
	vals := map[string]any{}
	if err := yaml.Unmarshal([]byte(hc.Spec.ValuesContent), &vals); err != nil {
		t.Fatalf("valuesContent: %v", err)
	}
	for k, v := range extra {
		vals[k] = v
	}
	rv, err := chartutil.ToRenderValues(ch, vals, common.ReleaseOptions{Name: "traefik", Namespace: "kube-system", IsInstall: true}, common.DefaultCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	files, err := engine.Render(ch, rv)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	kinds := map[string][]byte{}
	for name, f := range files {
		if strings.HasSuffix(name, ".tpl") || strings.TrimSpace(f) == "" {
			continue
		}
		docs, err := ParseManifests([]byte(f))
		if err != nil {
			t.Fatalf("%s does not parse: %v\n%s", name, err, f)
		}
		for _, d := range docs {
			j, _ := d.MarshalJSON()
			kinds[d.GetKind()] = j
		}
	}
	return kinds
}

// The bundled Traefik: our image, the Ingress provider publishing the
// Service's addresses, nothing phoned home, non-root and read-only, a
// LoadBalancer Service with 80 and 443 (not the ping/metrics port), and
// the default IngressClass.
func TestTraefikChart(t *testing.T) {
	t.Parallel()
	objs := renderTraefik(t, testBundledParams(), nil)
	var d appsv1.Deployment
	if err := yaml.Unmarshal(objs["Deployment"], &d); err != nil {
		t.Fatal(err)
	}
	c := d.Spec.Template.Spec.Containers[0]
	if c.Image != "kubesplit/traefik:test" {
		t.Errorf("image %q, want kubesplit/traefik:test", c.Image)
	}
	for _, want := range []string{"--global.checkNewVersion=false", "--global.sendAnonymousUsage=false",
		"--entryPoints.web.address=:8000/tcp", "--entryPoints.websecure.address=:8443/tcp", "--entryPoints.websecure.http.tls=true",
		"--providers.kubernetesIngress=true", "--providers.kubernetesIngress.ingressEndpoint.publishedService=kube-system/traefik",
		"--ping=true", "--ping.entryPoint=traefik"} {
		if !slices.Contains(c.Args, want) {
			t.Errorf("args lack %s: %v", want, c.Args)
		}
	}
	if slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--providers.kubernetesCRD") }) {
		t.Errorf("the CRD provider is on by default, without Traefik's CRDs: %v", c.Args)
	}
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || len(sc.Capabilities.Drop) != 1 ||
		d.Spec.Template.Spec.SecurityContext.RunAsNonRoot == nil || !*d.Spec.Template.Spec.SecurityContext.RunAsNonRoot {
		t.Errorf("container not locked down: %+v / %+v", sc, d.Spec.Template.Spec.SecurityContext)
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/ping" {
		t.Errorf("readiness probe %+v, want GET /ping", c.ReadinessProbe)
	}
	var s corev1.Service
	if err := yaml.Unmarshal(objs["Service"], &s); err != nil {
		t.Fatal(err)
	}
	if s.Spec.Type != corev1.ServiceTypeLoadBalancer || len(s.Spec.Ports) != 2 || s.Spec.Ports[0].Port != 80 || s.Spec.Ports[1].Port != 443 ||
		s.Spec.Ports[0].TargetPort.String() != "web" || s.Spec.Ports[1].TargetPort.String() != "websecure" {
		t.Errorf("Service %s with ports %+v, want LoadBalancer 80->web, 443->websecure", s.Spec.Type, s.Spec.Ports)
	}
	var ic networkingv1.IngressClass
	if err := yaml.Unmarshal(objs["IngressClass"], &ic); err != nil {
		t.Fatal(err)
	}
	if ic.Name != "traefik" || ic.Spec.Controller != "traefik.io/ingress-controller" || ic.Annotations[networkingv1.AnnotationIsDefaultIngressClass] != "true" {
		t.Errorf("IngressClass %s (%s, %v), want traefik, the default", ic.Name, ic.Spec.Controller, ic.Annotations)
	}
}

// What a k3s user's HelmChartConfig sets reaches the Deployment and Service.
func TestTraefikChartValues(t *testing.T) {
	t.Parallel()
	p := testBundledParams()
	p.Images = map[string]string{"traefik": "registry.example:5000/edge/traefik:v3.6.12-x"}
	objs := renderTraefik(t, p, map[string]any{
		"additionalArguments": []any{"--entryPoints.web.http.redirections.entryPoint.to=websecure"},
		"service":             map[string]any{"enabled": true, "type": "NodePort", "spec": map[string]any{"externalTrafficPolicy": "Local"}},
		"providers":           map[string]any{"kubernetesIngress": map[string]any{"enabled": true, "publishedService": map[string]any{"enabled": false}}, "kubernetesCRD": map[string]any{"enabled": true}},
		"ingressClass":        map[string]any{"enabled": false},
	})
	var d appsv1.Deployment
	if err := yaml.Unmarshal(objs["Deployment"], &d); err != nil {
		t.Fatal(err)
	}
	c := d.Spec.Template.Spec.Containers[0]
	if c.Image != "registry.example:5000/edge/traefik:v3.6.12-x" {
		t.Errorf("image %q, want the --addon-image override", c.Image)
	}
	if !slices.Contains(c.Args, "--entryPoints.web.http.redirections.entryPoint.to=websecure") || !slices.Contains(c.Args, "--providers.kubernetesCRD=true") ||
		slices.ContainsFunc(c.Args, func(a string) bool { return strings.Contains(a, "publishedService") }) {
		t.Errorf("args %v do not follow the values", c.Args)
	}
	// the CRD provider serves no route until all its watches have synced:
	// its account may watch its CRDs and ConfigMaps
	var role rbacv1.ClusterRole
	if err := yaml.Unmarshal(objs["ClusterRole"], &role); err != nil {
		t.Fatal(err)
	}
	for _, need := range []struct{ group, resource string }{{"", "configmaps"}, {"traefik.io", "ingressroutetcps"}, {"traefik.io", "ingressroutes"}} {
		if !slices.ContainsFunc(role.Rules, func(r rbacv1.PolicyRule) bool {
			return slices.Contains(r.APIGroups, need.group) && slices.Contains(r.Resources, need.resource) && slices.Contains(r.Verbs, "watch")
		}) {
			t.Errorf("with the CRD provider on, Traefik may not watch %s.%s: %+v", need.resource, need.group, role.Rules)
		}
	}
	var s corev1.Service
	if err := yaml.Unmarshal(objs["Service"], &s); err != nil {
		t.Fatal(err)
	}
	if s.Spec.Type != corev1.ServiceTypeNodePort || s.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		t.Errorf("Service %s %s, want NodePort with externalTrafficPolicy Local", s.Spec.Type, s.Spec.ExternalTrafficPolicy)
	}
	if _, ok := objs["IngressClass"]; ok {
		t.Error("an IngressClass with ingressClass.enabled false")
	}
}

// The chart archive depends on the chart's files alone: rendering twice
// gives the same chartContent, so the release is not upgraded on restart.
func TestChartArchiveIsStable(t *testing.T) {
	t.Parallel()
	a, err := ChartArchive("traefik")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := ChartArchive("traefik")
	if !bytes.Equal(a, b) {
		t.Error("two archives of the same chart differ")
	}
	if _, err := ChartArchive("nginx"); err == nil || !strings.Contains(err.Error(), `no bundled chart "nginx"`) {
		t.Errorf("unknown chart: %v", err)
	}
}

func TestImageRef(t *testing.T) {
	t.Parallel()
	for img, want := range map[string]ImageRef{
		"kubesplit/traefik:v0.1.0":         {"kubesplit/traefik", "v0.1.0"},
		"registry:5000/traefik":            {"registry:5000/traefik", ""},
		"registry:5000/a/traefik:1":        {"registry:5000/a/traefik", "1"},
		"traefik@sha256:0123456789abcdef0": {"traefik@sha256:0123456789abcdef0", ""},
	} {
		got, err := BundledParams{Images: map[string]string{"traefik": img}}.ImageRef("traefik")
		if err != nil || got != want {
			t.Errorf("ImageRef(%s) = %+v, %v; want %+v", img, got, err, want)
		}
	}
}

// Traefik is a HelmChart: with the HelmChart controller disabled no one
// would install it, so it is left out; --disable traefik removes it alone.
func TestTraefikFollowsTheHelmController(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		disable []string
		traefik bool
	}{{nil, true}, {[]string{"traefik"}, false}, {[]string{"helm-controller"}, false}} {
		dir := t.TempDir()
		if err := WriteBundled(dir, testBundledParams(), tc.disable); err != nil {
			t.Fatalf("--disable %v: %v", tc.disable, err)
		}
		_, err := os.Stat(filepath.Join(dir, "traefik.yaml"))
		if (err == nil) != tc.traefik {
			t.Errorf("--disable %v: traefik.yaml written %v, want %v", tc.disable, err == nil, tc.traefik)
		}
		if _, err := os.Stat(filepath.Join(dir, "coredns.yaml")); err != nil {
			t.Errorf("--disable %v: coredns.yaml: %v", tc.disable, err)
		}
	}
}
