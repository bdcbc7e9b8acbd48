// Package staticpod renders the control-plane roles as static pods for one
// box (the kubelet of a `kubesplit-node agent --control-plane` runs them
// from its manifest directory) from their one description in roles/, and
// reads such manifests back for `kubesplit upgrade` and `kubesplit status`.
package staticpod

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/kubesplit/kubesplit/pkg/pki"
	"github.com/kubesplit/kubesplit/roles"
)

// Labels and annotations on every control-plane static pod.
const (
	// LabelRole names the role (also label "component", as kubeadm's pods have).
	LabelRole = "kubesplit.io/role"
	// AnnotationHash is a hash of the manifest's spec: `kubesplit status`
	// compares it with the running mirror pod's to see a pending change.
	AnnotationHash = "kubesplit.io/config-hash"
)

// Spec is what a box needs to render its roles.
type Spec struct {
	// Wiring describes the roles; Host must be roles.LoopbackHosts (host network).
	Wiring roles.Wiring
	// HostDataDir is the data directory on the box, mounted into every role.
	HostDataDir string
	// Image returns a role's image reference.
	Image func(role string) string
}

// Pod renders one role as a static pod.
func (s Spec) Pod(role string) *corev1.Pod {
	r := s.Wiring.Role(role)
	get := func(c roles.HTTPCheck) *corev1.HTTPGetAction {
		return &corev1.HTTPGetAction{Host: "127.0.0.1", Port: intstr.FromInt32(int32(c.Port)), Path: c.Path, Scheme: corev1.URISchemeHTTP}
	}
	uid := int64(roles.UID)
	ports := make([]corev1.ContainerPort, 0, len(r.Serves))
	for _, p := range r.Serves {
		ports = append(ports, corev1.ContainerPort{Name: p.Name, ContainerPort: int32(p.Port), Protocol: corev1.ProtocolTCP})
	}
	pod := &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      role,
			Namespace: metav1.NamespaceSystem,
			Labels: map[string]string{LabelRole: role, "component": role, "tier": "control-plane",
				"app.kubernetes.io/part-of": "kubesplit"},
		},
		Spec: corev1.PodSpec{
			HostNetwork:       true,
			PriorityClassName: "system-node-critical",
			// the roles talk to each other and the API on loopback; no cluster DNS needed
			DNSPolicy:                     corev1.DNSDefault,
			EnableServiceLinks:            ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To(int64(30)),
			SecurityContext: &corev1.PodSecurityContext{RunAsUser: &uid, RunAsGroup: &uid, RunAsNonRoot: ptr.To(true),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{
				Name:  role,
				Image: s.Image(role),
				// the images are preloaded on the box; a registry, where there is one, is asked only for a missing one
				ImagePullPolicy: corev1.PullIfNotPresent,
				Args:            r.Args,
				Ports:           ports,
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceCPU:    *resource.NewMilliQuantity(int64(r.Requests.MilliCPU), resource.DecimalSI),
					corev1.ResourceMemory: *resource.NewQuantity(int64(r.Requests.MemoryMiB)<<20, resource.BinarySI),
				}},
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: r.DataDir}},
				// a first start may wait for its peers (the apiserver for the datastore): 5 minutes
				StartupProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: get(r.Live)},
					PeriodSeconds: 2, TimeoutSeconds: 2, FailureThreshold: 150},
				LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: get(r.Live)},
					PeriodSeconds: 10, TimeoutSeconds: 5, FailureThreshold: 6},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: get(r.Ready)},
					PeriodSeconds: 2, TimeoutSeconds: 2, FailureThreshold: 3},
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false),
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
				Path: s.HostDataDir, Type: ptr.To(corev1.HostPathDirectory)}}}},
		},
	}
	pod.Annotations = map[string]string{AnnotationHash: Hash(pod)}
	return pod
}

// Hash is a short hash of a pod's spec and labels (not its annotations).
func Hash(p *corev1.Pod) string {
	b, _ := yaml.Marshal(struct {
		Labels map[string]string `json:"labels"`
		Spec   corev1.PodSpec    `json:"spec"`
	}{p.Labels, p.Spec})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// Marshal renders a pod as a manifest file's content.
func Marshal(p *corev1.Pod) ([]byte, error) {
	b, err := yaml.Marshal(p)
	if err != nil {
		return nil, err
	}
	return append([]byte("# written by kubesplit; `kubesplit upgrade` changes it and keeps the one it replaces\n"), b...), nil
}

// File is a role's manifest in dir.
func File(dir, role string) string { return filepath.Join(dir, role+".yaml") }

// PreviousDir is where the manifests an upgrade replaced are kept: beside
// the manifest directory, not in it, since the kubelet runs every file there
// whose name does not start with a dot.
func PreviousDir(manifests string) string { return filepath.Clean(manifests) + "-previous" }

// Read parses a role's manifest; the error names the file and what is wrong.
func Read(path string) (*corev1.Pod, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var p corev1.Pod
	if err := yaml.UnmarshalStrict(b, &p); err != nil {
		return nil, fmt.Errorf("%s is not a valid pod manifest (%v): restore it from %s or delete it to have it written anew", path, err, filepath.Join(PreviousDir(filepath.Dir(path)), filepath.Base(path)))
	}
	if p.Kind != "Pod" || len(p.Spec.Containers) != 1 || p.Spec.Containers[0].Image == "" {
		return nil, fmt.Errorf("%s is not a kubesplit role manifest (want a Pod with one container and an image): restore it from %s or delete it to have it written anew", path, filepath.Join(PreviousDir(filepath.Dir(path)), filepath.Base(path)))
	}
	return &p, nil
}

// Write writes a manifest atomically (temporary file, fsync, rename, fsync
// of the directory), so that a power cut leaves the old or the new file,
// never a torn one.
func Write(path string, p *corev1.Pod) error {
	b, err := Marshal(p)
	if err != nil {
		return err
	}
	return writeFileSync(path, b)
}

// KeepPrevious copies a manifest into PreviousDir, where the kubelet does
// not look, before it is replaced.
func KeepPrevious(path string) error {
	old, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	prev := PreviousDir(filepath.Dir(path))
	if err := os.MkdirAll(prev, 0o700); err != nil {
		return err
	}
	return writeFileSync(filepath.Join(prev, filepath.Base(path)), old)
}

// A change of a running role's manifest in place makes the kubelet stop the
// old pod and start the new one only at its next periodic sync, after the
// old one has terminated (seconds to a minute of a role being down). So a
// manifest is replaced in two renames, each an event the kubelet acts on
// at once: the old file is parked under a dot name (which the kubelet
// ignores: it stops the pod), and once the old pod is gone the staged new
// file is renamed into place (it starts the pod). A crash between the two
// leaves the parked file, which Recover puts back.

func staged(path string) string {
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".new")
}
func parked(path string) string {
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".parked")
}

// Stage writes a manifest's next content beside it, under a dot name.
func Stage(path string, data []byte) error { return writeFileSync(staged(path), data) }

// Park moves a manifest out of the kubelet's sight: it stops the role.
func Park(path string) error {
	if err := os.Rename(path, parked(path)); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// Unpark puts a parked manifest back in place: the kubelet starts the role
// again as it was.
func Unpark(path string) error {
	if err := os.Rename(parked(path), path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// Commit moves the staged manifest into place (the kubelet starts it) and
// drops the parked one.
func Commit(path string) error {
	if err := os.Rename(staged(path), path); err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return err
	}
	if err := os.Remove(parked(path)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Recover finishes what a crash interrupted in dir: a role whose manifest
// is missing gets its parked one back (the one that ran before), and
// leftover staged and parked files go. It returns the roles it restored.
func Recover(dir string) ([]string, error) {
	var restored []string
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	for _, e := range ents {
		name := e.Name()
		if filepath.Ext(name) != ".parked" {
			continue
		}
		path := filepath.Join(dir, name[1:len(name)-len(".parked")])
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			if err := os.Rename(filepath.Join(dir, name), path); err != nil {
				return restored, err
			}
			restored = append(restored, path)
		}
	}
	for _, e := range ents {
		if ext := filepath.Ext(e.Name()); ext == ".parked" || ext == ".new" {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	return restored, syncDir(dir)
}

// writeFileSync writes data to path atomically and durably (pki.WriteFile:
// its temporary file is a dot file, which the kubelet does not read).
func writeFileSync(path string, data []byte) error { return pki.WriteFile(path, data, 0o600) }

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Image is the image of a manifest's one container.
func Image(p *corev1.Pod) string { return p.Spec.Containers[0].Image }

// SetImage changes the image and the hash annotation.
func SetImage(p *corev1.Pod, image string) {
	p.Spec.Containers[0].Image = image
	p.Annotations[AnnotationHash] = Hash(p)
}

// Role is the role a manifest runs ("" if none).
func Role(p *corev1.Pod) string { return p.Labels[LabelRole] }
