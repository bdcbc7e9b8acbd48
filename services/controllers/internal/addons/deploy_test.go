package addons

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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

func TestWriteBundledDisableAndSkip(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := BundledParams{ClusterDNS: "10.43.0.10", ClusterDomain: "cluster.local", ImageTag: "test"}
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
