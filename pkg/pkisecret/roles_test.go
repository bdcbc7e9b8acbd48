package pkisecret

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kubesplit/kubesplit/pkg/bootstrap"
	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/roles"
)

// TestRolesReadWhatInitKeeps: every file a role description says the role
// reads is one `kubesplit init` writes and the Secret keeps, so a role pod
// given exactly those keys finds each of them.
func TestRolesReadWhatInitKeeps(t *testing.T) {
	dir := t.TempDir()
	if _, err := bootstrap.Run(bootstrap.Options{DataDir: layout.Dir(dir), NodeToken: true}); err != nil {
		t.Fatal(err)
	}
	files, err := ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range roles.Names() {
		r := roles.Wiring{}.Role(name)
		if len(r.Reads) == 0 {
			t.Errorf("%s: no files listed", name)
		}
		for _, rel := range r.Reads {
			if _, err := os.Stat(filepath.Join(dir, rel)); err != nil {
				t.Errorf("%s reads %s, which init does not write", name, rel)
			} else if _, ok := files[rel]; !ok {
				t.Errorf("%s reads %s, which the Secret does not keep", name, rel)
			}
		}
	}
}
