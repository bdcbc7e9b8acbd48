package skew

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/kubesplit/kubesplit/pkg/version"
	"github.com/kubesplit/kubesplit/roles"
)

// After applies the version-skew policy to a control plane as it would be
// once the roles in changes (role → Kubernetes version) run those versions
// and the others stay as in running: the apiserver moves one minor at a
// time; the scheduler, the controllers and the gateway (a client of the
// API) are at most one minor older than the apiserver and never newer;
// kubelets (node name → version) at most three minors older. The datastore
// is not bound by the policy. Used by a box's `kubesplit upgrade` (one role)
// and the Helm chart's pre-upgrade check (any number).
func After(changes, running, kubelets map[string]string) error {
	after := maps.Clone(running)
	if after == nil {
		after = map[string]string{}
	}
	maps.Copy(after, changes)
	api := after[roles.APIServer]
	if next, ok := changes[roles.APIServer]; ok && running[roles.APIServer] != "" {
		cur, err1 := version.ParseMinor(running[roles.APIServer])
		nm, err2 := version.ParseMinor(next)
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		if nm.Major == cur.Major && nm.Minor > cur.Minor+1 {
			return fmt.Errorf("apiserver %s would skip minors from %s: the apiserver is upgraded one minor at a time", next, running[roles.APIServer])
		}
	}
	checks := []struct {
		r    version.Role
		name string
	}{
		{version.RoleScheduler, roles.Scheduler},
		{version.RoleControllers, roles.Controllers},
		{version.RoleScheduler, roles.TunnelGateway},
	}
	for _, c := range checks {
		v, ok := after[c.name]
		if !ok || v == "" {
			continue
		}
		if err := version.CheckSkew(c.r, v, api); err != nil {
			return fmt.Errorf("%s %s with apiserver %s: %w", c.name, v, api, err)
		}
	}
	for _, n := range slices.Sorted(maps.Keys(kubelets)) {
		if err := version.CheckSkew(version.RoleKubelet, kubelets[n], api); err != nil {
			return fmt.Errorf("the kubelet of %s: %w", n, err)
		}
	}
	return nil
}
