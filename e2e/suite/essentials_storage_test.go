package suite

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/testcluster"
)

// storageImage is the local-path helper image (Debian's busybox-static),
// preloaded on every node: a shell for pods that write and read files.
func storageImage() string { return "kubesplit/local-path-helper:" + tag() }

// localStorage: a PVC of the default class (local-path) binds once a
// pod uses it; a pod of another user writes to it, a second pod (sent
// nowhere in particular: the volume keeps its node) reads the data back,
// and a third after the node's container has restarted; deleting the PVC
// deletes its volume and the directory on the node.
func localStorage(t *testing.T, c *testcluster.Cluster) {
	ctx := context.Background()
	cs := c.Client()
	node := c.Nodes()[0]
	const claim = "storage-data"
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: claim},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("64Mi")}},
		},
	}
	created, err := cs.CoreV1().PersistentVolumeClaims("default").Create(ctx, pvc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().PersistentVolumeClaims("default").Delete(context.Background(), claim, metav1.DeleteOptions{})
	})
	if sc := ptr.Deref(created.Spec.StorageClassName, ""); sc != "local-path" {
		t.Fatalf("the claim got storage class %q, want the default local-path", sc)
	}
	// WaitForFirstConsumer: no volume before a pod is scheduled
	time.Sleep(2 * time.Second)
	if got, err := cs.CoreV1().PersistentVolumeClaims("default").Get(ctx, claim, metav1.GetOptions{}); err != nil || got.Status.Phase != corev1.ClaimPending {
		t.Fatalf("a claim nobody uses is %v (%v), want Pending", got.Status.Phase, err)
	}

	// written by uid 1000: the volume directory is open to any user
	logs, ran, err := runToEnd(t, cs, storagePod("storage-writer", node, 1000,
		"echo kept-by-local-path > /data/file && id -u"))
	if err != nil || ran != node || logs != "1000" {
		t.Fatalf("writer on %s: %q, %v", ran, logs, err)
	}
	pv := boundVolume(t, cs, claim)
	volNode, dir, err := localVolume(pv)
	if err != nil || volNode != node {
		t.Fatalf("volume %s: node %q, %v; want a hostPath volume on %s", pv.Name, volNode, err, node)
	}
	t.Logf("claim %s bound to %s at %s:%s", claim, pv.Name, volNode, dir)

	read := func(name string) {
		t.Helper()
		logs, ran, err := runToEnd(t, cs, storagePod(name, "", 0, "cat /data/file"))
		if err != nil || ran != node || logs != "kept-by-local-path" {
			t.Fatalf("%s on %q read %q (%v); want the data, on %s", name, ran, logs, err, node)
		}
	}
	read("storage-reader")

	available := systemDeployments(t, cs)
	restarted := time.Now()
	if err := c.Restart(ctx, node); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s restarted and Ready in %.1fs", node, time.Since(restarted).Seconds())
	read("storage-reader-after-restart")

	// the directory on the node, then gone with the claim
	parent, base := path.Split(dir)
	if out, err := c.Exec(ctx, node, "ls", "-A", parent); err != nil || !slices.Contains(strings.Fields(out), base) {
		t.Fatalf("%s lacks %s before the claim is deleted: %q, %v", parent, base, out, err)
	}
	if err := cs.CoreV1().PersistentVolumeClaims("default").Delete(ctx, claim, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "volume "+pv.Name+" deleted", 2*time.Minute, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), err
	})
	if out, err := c.Exec(ctx, node, "ls", "-A", parent); err != nil || slices.Contains(strings.Fields(out), base) {
		t.Fatalf("%s on %s after the claim was deleted: %q, %v; want it gone", dir, node, out, err)
	}
	// the addons the restart took down are back for the scenarios after this one
	waitFor(t, "kube-system Deployments available again", 2*time.Minute, func(context.Context) (bool, error) {
		now := systemDeployments(t, cs)
		for _, d := range available {
			if !slices.Contains(now, d) {
				return false, fmt.Errorf("%s is not available (available: %v)", d, now)
			}
		}
		return true, nil
	})
}

// storagePod runs script in the storage image as uid, with the claim
// storage-data at /data, on node if not "".
func storagePod(name, node string, uid int64, script string) *corev1.Pod {
	var sel map[string]string
	if node != "" {
		// a selector, not spec.nodeName: the scheduler must see the pod to
		// pick the node a WaitForFirstConsumer claim binds on
		sel = map[string]string{corev1.LabelHostname: node}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			NodeSelector:    sel,
			RestartPolicy:   corev1.RestartPolicyNever,
			SecurityContext: &corev1.PodSecurityContext{RunAsUser: ptr.To(uid)},
			Containers: []corev1.Container{{Name: "c", Image: storageImage(), ImagePullPolicy: corev1.PullNever,
				Command:      []string{"/bin/sh", "-c", script},
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "storage-data"}}}},
		},
	}
}

// boundVolume is the PV a claim is bound to.
func boundVolume(t *testing.T, cs kubernetes.Interface, claim string) *corev1.PersistentVolume {
	t.Helper()
	var pv *corev1.PersistentVolume
	waitFor(t, "claim "+claim+" bound", time.Minute, func(ctx context.Context) (bool, error) {
		c, err := cs.CoreV1().PersistentVolumeClaims("default").Get(ctx, claim, metav1.GetOptions{})
		if err != nil || c.Status.Phase != corev1.ClaimBound {
			return false, fmt.Errorf("claim %v, %v", c.Status.Phase, err)
		}
		pv, err = cs.CoreV1().PersistentVolumes().Get(ctx, c.Spec.VolumeName, metav1.GetOptions{})
		return err == nil, err
	})
	return pv
}

// localVolume is the node and the directory of a local-path volume: a
// hostPath volume held to one node by its node affinity.
func localVolume(pv *corev1.PersistentVolume) (node, dir string, err error) {
	if pv.Spec.HostPath == nil || !path.IsAbs(pv.Spec.HostPath.Path) {
		return "", "", errors.New("not a hostPath volume with an absolute path")
	}
	if pv.Spec.NodeAffinity == nil || pv.Spec.NodeAffinity.Required == nil {
		return "", "", errors.New("no required node affinity")
	}
	for _, term := range pv.Spec.NodeAffinity.Required.NodeSelectorTerms {
		for _, e := range term.MatchExpressions {
			if e.Key == corev1.LabelHostname && e.Operator == corev1.NodeSelectorOpIn && len(e.Values) == 1 {
				return e.Values[0], path.Clean(pv.Spec.HostPath.Path), nil
			}
		}
	}
	return "", "", errors.New("the node affinity names no single host")
}

// systemDeployments names the Deployments of kube-system whose replicas
// are all ready and up to date.
func systemDeployments(t *testing.T, cs kubernetes.Interface) []string {
	t.Helper()
	ds, err := cs.AppsV1().Deployments(metav1.NamespaceSystem).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range ds.Items {
		if deploymentAvailable(&d) {
			names = append(names, d.Name)
		}
	}
	return names
}

// deploymentAvailable: every replica of d is ready and up to date.
func deploymentAvailable(d *appsv1.Deployment) bool {
	want := ptr.Deref(d.Spec.Replicas, 1)
	return d.Status.ObservedGeneration >= d.Generation && d.Status.ReadyReplicas == want && d.Status.UpdatedReplicas == want
}

func TestLocalVolume(t *testing.T) {
	t.Parallel()
	onNode := func(values ...string) *corev1.VolumeNodeAffinity {
		return &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: values}}}}}}
	}
	hostPath := func(p string) corev1.PersistentVolumeSource {
		return corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: p}}
	}
	for name, c := range map[string]struct {
		spec      corev1.PersistentVolumeSpec
		node, dir string
	}{
		"local-path": {spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: hostPath("/var/lib/kubesplit-storage/pvc-1_default_data/"), NodeAffinity: onNode("node-1")},
			node: "node-1", dir: "/var/lib/kubesplit-storage/pvc-1_default_data"},
		"no affinity":    {spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: hostPath("/x")}},
		"two nodes":      {spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: hostPath("/x"), NodeAffinity: onNode("a", "b")}},
		"relative path":  {spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: hostPath("x"), NodeAffinity: onNode("a")}},
		"not a hostPath": {spec: corev1.PersistentVolumeSpec{NodeAffinity: onNode("a")}},
	} {
		node, dir, err := localVolume(&corev1.PersistentVolume{Spec: c.spec})
		if node != c.node || dir != c.dir || (err == nil) != (c.node != "") {
			t.Errorf("%s: node %q dir %q err %v; want node %q dir %q", name, node, dir, err, c.node, c.dir)
		}
	}
}
