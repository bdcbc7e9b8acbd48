package box

import (
	"strings"
	"testing"

	"github.com/kubesplit/kubesplit/roles"
)

func TestSkewAfter(t *testing.T) {
	running := map[string]string{roles.Datastore: "v1.36.3", roles.APIServer: "v1.36.3", roles.Scheduler: "v1.36.3",
		roles.Controllers: "v1.36.3", roles.TunnelGateway: "v1.36.3"}
	kubelets := map[string]string{"this box": "v1.36.3", "node-1": "v1.34.0"}
	for _, c := range []struct {
		role, v string
		refuse  string // "" = allowed
	}{
		{roles.Scheduler, "v1.36.4", ""},
		{roles.Scheduler, "v1.37.0", "newer than apiserver"},
		{roles.Controllers, "v1.34.0", "too old"},
		{roles.APIServer, "v1.37.0", ""},
		{roles.APIServer, "v1.38.0", "one minor at a time"},
		{roles.APIServer, "v1.35.0", "newer than apiserver"}, // a downgrade below the scheduler
		{roles.TunnelGateway, "v1.37.0", "newer than apiserver"},
		{roles.Datastore, "v1.37.0", ""},
	} {
		err := skewAfter(c.role, c.v, running, kubelets)
		switch {
		case c.refuse == "" && err != nil:
			t.Errorf("%s %s: refused: %v", c.role, c.v, err)
		case c.refuse != "" && (err == nil || !strings.Contains(err.Error(), c.refuse) || !strings.HasSuffix(err.Error(), "nothing was changed")):
			t.Errorf("%s %s: want a refusal with %q, got %v", c.role, c.v, c.refuse, err)
		}
	}
	// an apiserver upgrade leaves a kubelet more than three minors behind
	if err := skewAfter(roles.APIServer, "v1.37.0", running, map[string]string{"old": "v1.33.0"}); err == nil || !strings.Contains(err.Error(), "kubelet of old") {
		t.Errorf("old kubelet: %v", err)
	}
}
