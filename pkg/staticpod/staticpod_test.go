package staticpod

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubesplit/kubesplit/roles"
)

func testSpec() Spec {
	return Spec{
		Wiring:      roles.Wiring{Host: roles.LoopbackHosts, Bind: "127.0.0.1"},
		HostDataDir: "/var/lib/kubesplit",
		Image:       func(r string) string { return "kubesplit/" + r + ":v1" },
	}
}

func TestPodRoundTrip(t *testing.T) {
	dir := t.TempDir()
	for _, role := range roles.Names() {
		p := testSpec().Pod(role)
		c := p.Spec.Containers[0]
		if !p.Spec.HostNetwork || p.Spec.PriorityClassName != "system-node-critical" || c.StartupProbe == nil ||
			c.LivenessProbe == nil || c.ReadinessProbe == nil || c.Resources.Requests.Memory().IsZero() {
			t.Fatalf("%s: incomplete pod %+v", role, p.Spec)
		}
		if c.ReadinessProbe.HTTPGet.Host != "127.0.0.1" {
			t.Errorf("%s: probes must go to the loopback health relay, got %q", role, c.ReadinessProbe.HTTPGet.Host)
		}
		path := File(dir, role)
		if err := Write(path, p); err != nil {
			t.Fatal(err)
		}
		back, err := Read(path)
		if err != nil {
			t.Fatal(err)
		}
		if Role(back) != role || Image(back) != "kubesplit/"+role+":v1" || back.Annotations[AnnotationHash] != Hash(back) {
			t.Errorf("%s: read back %s %s, hash %s vs %s", role, Role(back), Image(back), back.Annotations[AnnotationHash], Hash(back))
		}
	}
	// only the manifests are in the directory the kubelet reads: no temporary files, no previous ones
	ents, _ := os.ReadDir(dir)
	if len(ents) != len(roles.Names()) {
		t.Errorf("manifest dir holds %d entries, want %d", len(ents), len(roles.Names()))
	}
}

func TestWriteKeepsPrevious(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "manifests")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := File(dir, roles.APIServer)
	p := testSpec().Pod(roles.APIServer)
	if err := Write(path, p); err != nil {
		t.Fatal(err)
	}
	old := p.Annotations[AnnotationHash]
	SetImage(p, "kubesplit/apiserver:v2")
	if p.Annotations[AnnotationHash] == old {
		t.Fatal("the hash did not change with the image")
	}
	if err := KeepPrevious(path); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, p); err != nil {
		t.Fatal(err)
	}
	prev, err := Read(filepath.Join(PreviousDir(dir), filepath.Base(path)))
	if err != nil || Image(prev) != "kubesplit/apiserver:v1" {
		t.Fatalf("previous manifest: %v %v", err, prev)
	}
	cur, err := Read(path)
	if err != nil || Image(cur) != "kubesplit/apiserver:v2" {
		t.Fatalf("current manifest: %v %v", err, cur)
	}
}

func TestReadCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "apiserver.yaml")
	for _, content := range []string{"kind: Pod\nspec: [\n", "kind: Pod\nspec:\n  containers: []\n", "apiVersion: v1\nkind: Pod\nbogus: 1\n"} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Read(path)
		if err == nil || !strings.Contains(err.Error(), path) || strings.Contains(err.Error(), "\n") {
			t.Errorf("Read(%q) = %v, want one line naming the file", content, err)
		}
	}
}

func TestParkCommitRecover(t *testing.T) {
	dir := t.TempDir()
	path := File(dir, roles.Scheduler)
	p := testSpec().Pod(roles.Scheduler)
	if err := Write(path, p); err != nil {
		t.Fatal(err)
	}
	old, _ := os.ReadFile(path)
	SetImage(p, "kubesplit/scheduler:v2")
	next, _ := Marshal(p)
	if err := Stage(path, next); err != nil {
		t.Fatal(err)
	}
	if err := Park(path); err != nil {
		t.Fatal(err)
	}
	// a crash here: the role's manifest is missing; Recover puts the old one back
	restored, err := Recover(dir)
	if err != nil || len(restored) != 1 {
		t.Fatalf("Recover: %v %v", restored, err)
	}
	if b, _ := os.ReadFile(path); string(b) != string(old) {
		t.Fatal("Recover did not restore the parked manifest")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("leftovers after Recover: %v", ents)
	}
	// the whole way through
	if err := Stage(path, next); err != nil {
		t.Fatal(err)
	}
	if err := Park(path); err != nil {
		t.Fatal(err)
	}
	if err := Commit(path); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != string(next) {
		t.Fatal("Commit did not put the new manifest in place")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("leftovers after Commit: %v", ents)
	}
}
