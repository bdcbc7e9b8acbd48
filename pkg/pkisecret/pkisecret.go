// Package pkisecret keeps the shareable part of a data directory (the PKI,
// the config files and the kubeconfigs that `kubesplit init` writes) in one
// Kubernetes Secret, for a control plane hosted on a cluster (the Helm
// chart): `kubesplit init --secret NS/NAME` pulls the Secret into a scratch
// directory, lets init create what is missing and renew what is due (a CA
// is never regenerated), and writes the result back; the role pods mount
// the keys they need as files.
//
// Only the files a role reads are kept: pki/, config/ and *.kubeconfig at
// the top. Datastore data, snapshots, manifests and role state are not
// (they live on volumes of their own).
package pkisecret

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// sep stands for "/" in a Secret key (keys allow only [-._a-zA-Z0-9]).
const sep = "__"

// Key is the Secret key of a path relative to the data directory
// ("pki/ca.crt" → "pki__ca.crt").
func Key(rel string) string { return strings.ReplaceAll(filepath.ToSlash(rel), "/", sep) }

// Path is the relative path of a Secret key (the inverse of Key).
func Path(key string) string { return strings.ReplaceAll(key, sep, "/") }

// Kept reports whether a path relative to the data directory belongs in the
// Secret.
func Kept(rel string) bool {
	rel = filepath.ToSlash(rel)
	base := filepath.Base(rel)
	if strings.HasPrefix(base, ".") { // init's lock file
		return false
	}
	dir, _, nested := strings.Cut(rel, "/")
	if !nested {
		return strings.HasSuffix(rel, ".kubeconfig")
	}
	return dir == "pki" || dir == "config"
}

// Snapshot is a Secret as read: its files and the version Put must match.
type Snapshot struct {
	Files           map[string][]byte // by relative path
	Exists          bool
	ResourceVersion string
}

// Get reads the Secret ns/name; a missing Secret is an empty Snapshot.
func Get(ctx context.Context, cs kubernetes.Interface, ns, name string) (Snapshot, error) {
	s, err := cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return Snapshot{Files: map[string][]byte{}}, nil
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("reading Secret %s/%s: %w", ns, name, err)
	}
	snap := Snapshot{Files: map[string][]byte{}, Exists: true, ResourceVersion: s.ResourceVersion}
	for k, v := range s.Data {
		rel := Path(k)
		if !filepath.IsLocal(rel) || !Kept(rel) {
			return Snapshot{}, fmt.Errorf("Secret %s/%s: key %q is not a data directory file kubesplit keeps there", ns, name, k)
		}
		snap.Files[rel] = v
	}
	return snap, nil
}

// WriteDir writes the snapshot's files under dir (keys 0600, the rest 0644).
func (s Snapshot) WriteDir(dir string) error {
	for rel, b := range s.Files {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(rel, ".key") || strings.HasSuffix(rel, ".kubeconfig") || strings.HasPrefix(rel, "config/") {
			mode = 0o600
		}
		if err := os.WriteFile(p, b, mode); err != nil {
			return err
		}
	}
	return nil
}

// ReadDir collects the files of dir that belong in the Secret.
func ReadDir(dir string) (map[string][]byte, error) {
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || !Kept(rel) || !d.Type().IsRegular() {
			return err
		}
		if strings.Contains(filepath.ToSlash(rel), sep) {
			return fmt.Errorf("%s: a file name with %q cannot be a Secret key", rel, sep)
		}
		b, err := os.ReadFile(p)
		files[filepath.ToSlash(rel)] = b
		return err
	})
	return files, err
}

// ErrChanged is Put's error when someone else wrote the Secret since Get.
var ErrChanged = errors.New("the Secret changed since it was read")

// Put creates the Secret, or replaces its data if it still is at the
// snapshot's version (optimistic concurrency: two init Jobs never overwrite
// each other's CA). It returns whether anything changed.
func Put(ctx context.Context, cs kubernetes.Interface, ns, name string, labels map[string]string, was Snapshot, files map[string][]byte) (bool, error) {
	data := make(map[string][]byte, len(files))
	for rel, b := range files {
		data[Key(rel)] = b
	}
	if !was.Exists {
		_, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
			Type:       corev1.SecretTypeOpaque, Data: data,
		}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return false, ErrChanged
		}
		if err != nil {
			return false, fmt.Errorf("creating Secret %s/%s: %w", ns, name, err)
		}
		return true, nil
	}
	if equalFiles(was.Files, files) {
		return false, nil
	}
	s, err := cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false, fmt.Errorf("reading Secret %s/%s: %w", ns, name, err)
	}
	if s.ResourceVersion != was.ResourceVersion {
		return false, ErrChanged
	}
	s.Data = data
	if _, err := cs.CoreV1().Secrets(ns).Update(ctx, s, metav1.UpdateOptions{}); apierrors.IsConflict(err) {
		return false, ErrChanged
	} else if err != nil {
		return false, fmt.Errorf("updating Secret %s/%s: %w", ns, name, err)
	}
	return true, nil
}

func equalFiles(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || string(v) != string(w) {
			return false
		}
	}
	return true
}
