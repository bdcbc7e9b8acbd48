package pkisecret

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestKeysAndKept(t *testing.T) {
	for rel, kept := range map[string]bool{
		"pki/ca.crt": true, "pki/sa.key": true, "config/encryption-config.yaml": true, "config/node-token": true,
		"admin.kubeconfig": true, "pki/.lock": false, "datastore/state.db": false, "snapshots/x.db": false,
		"manifests/coredns.yaml": false, "state/scheduler/x.crt": false, "logs/audit.log": false, "README": false,
	} {
		if Kept(rel) != kept {
			t.Errorf("Kept(%q) = %v, want %v", rel, !kept, kept)
		}
		if kept && Path(Key(rel)) != rel {
			t.Errorf("%q → key %q → %q", rel, Key(rel), Path(Key(rel)))
		}
	}
}

func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	dir := t.TempDir()
	for rel, body := range map[string]string{"pki/ca.crt": "CA", "pki/ca.key": "KEY", "pki/.lock": "",
		"admin.kubeconfig": "K", "datastore/state.db": "rows", "config/node-token": "T"} {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	files, err := ReadDir(dir)
	if err != nil || len(files) != 4 || string(files["pki/ca.key"]) != "KEY" {
		t.Fatalf("ReadDir: %v %v", files, err)
	}
	snap, err := Get(ctx, cs, "ks", "pki")
	if err != nil || snap.Exists {
		t.Fatalf("missing Secret: %+v %v", snap, err)
	}
	if changed, err := Put(ctx, cs, "ks", "pki", nil, snap, files); err != nil || !changed {
		t.Fatalf("create: %v %v", changed, err)
	}
	s, _ := cs.CoreV1().Secrets("ks").Get(ctx, "pki", metav1.GetOptions{})
	if string(s.Data["pki__ca.crt"]) != "CA" || len(s.Data) != 4 {
		t.Fatalf("Secret data %v", s.Data)
	}
	// a second writer from the same missing state loses: no CA overwritten
	if _, err := Put(ctx, cs, "ks", "pki", nil, snap, map[string][]byte{"pki/ca.crt": []byte("OTHER")}); !errors.Is(err, ErrChanged) {
		t.Fatalf("create over an existing Secret: %v, want ErrChanged", err)
	}
	snap, err = Get(ctx, cs, "ks", "pki")
	if err != nil || !snap.Exists || string(snap.Files["pki/ca.crt"]) != "CA" {
		t.Fatalf("Get: %+v %v", snap, err)
	}
	out := t.TempDir()
	if err := snap.WriteDir(out); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(out, "pki/ca.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	if changed, err := Put(ctx, cs, "ks", "pki", nil, snap, snap.Files); err != nil || changed {
		t.Fatalf("unchanged files: changed %v, %v", changed, err)
	}
	// a foreign key is refused, not written to disk
	if _, err := cs.CoreV1().Secrets("ks").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bad", Namespace: "ks"},
		Data: map[string][]byte{"..__etc__passwd": []byte("x")}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Get(ctx, cs, "ks", "bad"); err == nil {
		t.Fatal("a Secret with a key outside the data directory was accepted")
	}
}
