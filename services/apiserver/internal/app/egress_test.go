package app

import (
	"os"
	"path/filepath"
	"testing"

	"k8s.io/apiserver/pkg/server/egressselector"

	"github.com/kubesplit/kubesplit/pkg/layout"
)

// TestEgressSelectorsParse: both egress configurations are what upstream
// reads and accepts (its own parser and validation).
func TestEgressSelectorsParse(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := layout.Dir(dir)
	// the direct one names files, which upstream's validation checks exist
	for _, f := range []string{d.ClusterCA().Cert, d.APIServerEgressClient().Cert, d.APIServerEgressClient().Key} {
		if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for name, conf := range map[string][]byte{
		"relay":  egressSelector(Options{DataDir: dir}.EgressSocket()),
		"direct": egressSelectorDirect(d, "tunnel-gateway:8131"),
	} {
		path := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(path, conf, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := egressselector.ReadEgressSelectorConfiguration(path)
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, conf)
		}
		if errs := egressselector.ValidateEgressSelectorConfiguration(cfg); len(errs) > 0 {
			t.Fatalf("%s: %v\n%s", name, errs.ToAggregate(), conf)
		}
		c := cfg.EgressSelections[0].Connection
		if cfg.EgressSelections[0].Name != "cluster" || c.ProxyProtocol != "HTTPConnect" {
			t.Fatalf("%s: %+v", name, cfg.EgressSelections[0])
		}
		if (name == "relay") != (c.Transport.UDS != nil) {
			t.Fatalf("%s: transport %+v", name, c.Transport)
		}
	}
}
