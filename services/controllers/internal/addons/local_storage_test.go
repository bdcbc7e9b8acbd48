package addons

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/yaml"
)

// The local-storage addon: the default StorageClass, a non-root provisioner
// of the image built here, and a helper pod of the preloaded helper image.
func TestLocalStorageAddon(t *testing.T) {
	t.Parallel()
	if !slices.Contains(Bundled(), "local-storage") {
		t.Fatalf("bundled addons %v lack local-storage (the name --disable takes, as in k3s)", Bundled())
	}
	b, err := RenderBundled("local-storage", BundledParams{ImageTag: "test"})
	if err != nil {
		t.Fatal(err)
	}
	objs, err := ParseManifests(b)
	if err != nil {
		t.Fatalf("rendered local-storage.yaml does not parse: %v", err)
	}
	byKind := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		byKind[o.GetKind()] = o
	}

	var sc storagev1.StorageClass
	typed(t, byKind["StorageClass"], &sc)
	if sc.Name != "local-path" || sc.Annotations["storageclass.kubernetes.io/is-default-class"] != "true" ||
		sc.Provisioner != "rancher.io/local-path" || sc.VolumeBindingMode == nil ||
		*sc.VolumeBindingMode != storagev1.VolumeBindingWaitForFirstConsumer ||
		sc.ReclaimPolicy == nil || *sc.ReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
		t.Errorf("StorageClass: %+v", sc)
	}

	var dep appsv1.Deployment
	typed(t, byKind["Deployment"], &dep)
	pod := dep.Spec.Template.Spec
	c := pod.Containers[0]
	if dep.Namespace != "kube-system" || c.Image != "kubesplit/local-path-provisioner:test" || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("provisioner: namespace %s, image %s, pull %s", dep.Namespace, c.Image, c.ImagePullPolicy)
	}
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot ||
		c.Resources.Requests.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
		t.Errorf("provisioner: want non-root with cpu and memory requests, got %+v %+v", pod.SecurityContext, c.Resources)
	}
	if !slices.Contains(c.Args, "kubesplit/local-path-helper:test") || pod.ServiceAccountName != "local-path-provisioner" {
		t.Errorf("provisioner args %v, service account %s", c.Args, pod.ServiceAccountName)
	}

	var cm corev1.ConfigMap
	typed(t, byKind["ConfigMap"], &cm)
	var cfg struct {
		NodePathMap []struct {
			Node  string   `json:"node"`
			Paths []string `json:"paths"`
		} `json:"nodePathMap"`
	}
	if err := json.Unmarshal([]byte(cm.Data["config.json"]), &cfg); err != nil {
		t.Fatalf("config.json: %v", err)
	}
	if len(cfg.NodePathMap) != 1 || cfg.NodePathMap[0].Node != "DEFAULT_PATH_FOR_NON_LISTED_NODES" ||
		!slices.Equal(cfg.NodePathMap[0].Paths, []string{"/var/lib/kubesplit-storage"}) {
		t.Errorf("config.json: %+v", cfg)
	}
	for _, key := range []string{"setup", "teardown"} {
		if cm.Data[key] == "" {
			t.Errorf("ConfigMap lacks the %s script", key)
		}
	}
	var helper corev1.Pod
	if err := yaml.UnmarshalStrict([]byte(cm.Data["helperPod.yaml"]), &helper); err != nil {
		t.Fatalf("helperPod.yaml: %v", err)
	}
	if len(helper.Spec.Containers) != 1 {
		t.Fatalf("helper pod containers: %+v", helper.Spec.Containers)
	}
	h := helper.Spec.Containers[0]
	// the provisioner reads the log of the container of this name
	if h.Name != "helper-pod" || h.Image != "kubesplit/local-path-helper:test" || h.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("helper container %s, image %s, pull %s", h.Name, h.Image, h.ImagePullPolicy)
	}
	if helper.Spec.AutomountServiceAccountToken == nil || *helper.Spec.AutomountServiceAccountToken {
		t.Error("the helper pod would get the provisioner's token: it needs none")
	}
	t.Run("scripts", func(t *testing.T) { testLocalStorageScripts(t, cm.Data["setup"], cm.Data["teardown"]) })
}

// testLocalStorageScripts runs the helper pod's scripts as the provisioner
// does (/bin/sh SCRIPT with VOL_DIR set): setup makes a directory any user
// can write to, teardown removes it with what a pod left in it.
func testLocalStorageScripts(t *testing.T, setup, teardown string) {
	dir := t.TempDir()
	vol := filepath.Join(dir, "pvc-1234_default_data")
	run := func(name, script string) {
		t.Helper()
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(script), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(t.Context(), "/bin/sh", f, "-p", vol, "-s", "1073741824", "-m", "Filesystem", "-a", "create")
		cmd.Env = []string{"PATH=/usr/bin:/bin", "VOL_DIR=" + vol, "VOL_MODE=Filesystem", "VOL_SIZE_BYTES=1073741824"}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
	}
	run("setup", setup)
	st, err := os.Stat(vol)
	if err != nil || !st.IsDir() || st.Mode().Perm() != 0o777 {
		t.Fatalf("after setup: %v, %v; want a directory of mode 0777", st, err)
	}
	run("setup", setup) // a retried helper pod finds the directory there
	if err := os.MkdirAll(filepath.Join(vol, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vol, "sub", "data"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	run("teardown", teardown)
	if _, err := os.Stat(vol); !os.IsNotExist(err) {
		t.Fatalf("after teardown the volume directory is still there: %v", err)
	}
	run("teardown", teardown) // and a retried teardown finds nothing to do
}

func typed(t *testing.T, u *unstructured.Unstructured, into any) {
	t.Helper()
	if u == nil {
		t.Fatalf("no object for %T", into)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
}
