package addons

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// servicelb is a controller, not a manifest: --disable takes its name, and
// the manifests are written as before.
func TestDisableTakesControllerAddons(t *testing.T) {
	t.Parallel()
	if !slices.Contains(Known(), "servicelb") || slices.Contains(Bundled(), "servicelb") {
		t.Fatalf("Known %v, Bundled %v: servicelb is a known name and no manifest", Known(), Bundled())
	}
	dir := t.TempDir()
	if err := WriteBundled(dir, testBundledParams(), []string{"servicelb"}); err != nil {
		t.Fatalf("--disable servicelb: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "coredns.yaml")); err != nil {
		t.Errorf("coredns.yaml not written with --disable servicelb: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "servicelb.yaml")); err == nil {
		t.Error("a servicelb.yaml manifest was written")
	}
}
