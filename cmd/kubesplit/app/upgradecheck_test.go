package app

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestCheckUpgrade(t *testing.T) {
	cur := map[string]string{"apiserver": "v1.36.3", "scheduler": "v1.36.3", "controllers": "v1.36.3", "tunnel-gateway": "v1.36.3"}
	kubelets := map[string]string{"shop-1": "v1.36.3", "old": "v1.34.0"}
	for _, c := range []struct {
		name   string
		next   map[string]string
		refuse string
	}{
		{"same versions", map[string]string{"scheduler": "v1.36.3"}, ""},
		{"apiserver one minor up", map[string]string{"apiserver": "v1.37.0"}, ""},
		{"apiserver and scheduler together", map[string]string{"apiserver": "v1.37.0", "scheduler": "v1.37.0"}, ""},
		{"scheduler newer than the apiserver", map[string]string{"scheduler": "v1.38.0"}, "newer than apiserver v1.36.3"},
		{"apiserver two minors up", map[string]string{"apiserver": "v1.38.0"}, "one minor at a time"},
	} {
		var out bytes.Buffer
		cmd := &cobra.Command{}
		cmd.SetOut(&out)
		err := checkUpgrade(cmd, cur, c.next, kubelets)
		switch {
		case c.refuse == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.refuse != "" && (err == nil || !strings.Contains(err.Error(), c.refuse) || !strings.HasPrefix(err.Error(), "upgrade refused: ")):
			t.Errorf("%s: want a refusal saying %q; got %v", c.name, c.refuse, err)
		}
	}
	// an apiserver upgrade leaving a kubelet more than three minors behind
	var out bytes.Buffer
	cmd := &cobra.Command{}
	cmd.SetOut(&out)
	if err := checkUpgrade(cmd, cur, map[string]string{"apiserver": "v1.37.0"}, map[string]string{"old": "v1.33.0"}); err == nil ||
		!strings.Contains(err.Error(), "kubelet of old") {
		t.Errorf("old kubelet: %v", err)
	}
}
