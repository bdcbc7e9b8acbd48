package helmchart

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/intstr"
)

func tgz(t *testing.T, name string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for n, c := range map[string]string{
		name + "/Chart.yaml":        "apiVersion: v2\nname: " + name + "\nversion: 1.2.3\n",
		name + "/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
	} {
		tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(c))})
		tw.Write([]byte(c))
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func TestLoadSources(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "local.tgz"), tgz(t, "local"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := releaser{manifestsDir: dir}
	for _, spec := range []HelmChartSpec{
		{ChartContent: base64.StdEncoding.EncodeToString(tgz(t, "local"))},
		{Chart: "local.tgz"},
		{Chart: "https://%{KUBERNETES_API}%/static/charts/local.tgz"}, // k3s's bundled manifests
	} {
		src, err := r.load(spec)
		if err != nil {
			t.Fatalf("%+v: %v", spec, err)
		}
		if src.digest == "" || src.chart == nil {
			t.Errorf("%+v: empty source", spec)
		}
	}
	for spec, want := range map[*HelmChartSpec]string{
		{}:                           "spec.chart or spec.chartContent is required",
		{ChartContent: "%%%"}:        "not base64",
		{Chart: "missing.tgz"}:       "not in the manifests directory",
		{Chart: "../etc/passwd.tgz"}: "not in the manifests directory",
	} {
		if _, err := r.load(*spec); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: %v, want %q", *spec, err, want)
		}
	}
}

func TestValues(t *testing.T) {
	spec := HelmChartSpec{
		ValuesContent: "a: {b: 1, c: 2}\nlist: [x]\nname: chart\n",
		Set: map[string]intstr.IntOrString{
			"a.c":     intstr.FromInt32(3),
			"flag":    intstr.FromString("true"),
			"version": intstr.FromString("1.10"), // a string stays a string
		},
	}
	vals, err := values(spec, "a: {d: 4}\nname: config\n")
	if err != nil {
		t.Fatal(err)
	}
	a := vals["a"].(map[string]any)
	if a["b"] != float64(1) || a["c"] != int64(3) || a["d"] != float64(4) {
		t.Errorf("a = %v: want b from the chart, c from set, d from the config", a)
	}
	if vals["name"] != "config" || vals["flag"] != true || vals["version"] != "1.10" {
		t.Errorf("values %v", vals)
	}
	if _, err := values(HelmChartSpec{ValuesContent: "password: s3cret\n  bad: [\n"}, ""); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("bad YAML: %v (must not quote it)", err)
	}
}

func TestScrub(t *testing.T) {
	vals := map[string]any{"db": map[string]any{"password": "hunter22", "user": "ad"}, "list": []any{"token-abc"}}
	got := scrub("render failed: password hunter22, token token-abc, user ad", vals)
	if strings.Contains(got, "hunter22") || strings.Contains(got, "token-abc") {
		t.Errorf("scrub left a value: %s", got)
	}
	if !strings.Contains(got, "user ad") { // short values would blank out ordinary words
		t.Errorf("scrub removed a short value: %s", got)
	}
}

func TestCRDs(t *testing.T) {
	crds := CRDs()
	if len(crds) != 2 || crds[0].Name != "helmcharts.helm.cattle.io" || crds[1].Name != "helmchartconfigs.helm.cattle.io" {
		t.Fatalf("CRDs %v", crds)
	}
	v := crds[0].Spec.Versions[0]
	if v.Subresources == nil || v.Subresources.Status == nil || !*v.Schema.OpenAPIV3Schema.Properties["spec"].XPreserveUnknownFields {
		t.Error("HelmChart: want a status subresource and a spec that keeps k3s's other fields")
	}
}
