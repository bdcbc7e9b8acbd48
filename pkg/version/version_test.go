package version

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckSkew(t *testing.T) {
	t.Parallel()
	cases := []struct {
		role       Role
		rv, av     string
		wantErrSub string
	}{
		{RoleScheduler, "v1.36.3", "v1.36.0", ""},
		{RoleScheduler, "v1.35.9", "v1.36.3", ""},
		{RoleScheduler, "v1.34.0", "v1.36.3", "too old"},
		{RoleControllers, "v1.37.0", "v1.36.3", "newer than apiserver"},
		{RoleKubelet, "v1.33.1", "v1.36.3", ""},
		{RoleKubelet, "v1.32.1", "v1.36.3", "too old"},
		{RoleKubelet, "v1.37.0", "v1.36.3", "newer"},
		{RoleKubelet, "v2.36.0", "v1.36.3", "major versions differ"},
		{RoleScheduler, "banana", "v1.36.3", "not of the form"},
		// kubelet and kube-proxy: up to three minors older, never newer
		{RoleKubelet, "v1.32.0", "v1.36.3", "upgrade the node agent (kubesplit-node, which runs the kubelet and kube-proxy) to v1.33 or later"},
		{RoleKubelet, "v1.33.0", "v1.36.3", ""},
		{RoleKubelet, "v1.37.0", "v1.36.3", "upgrade the apiserver first"},
		{RoleKubeProxy, "v1.32.0", "v1.36.3", "kube-proxy must not be newer than the apiserver nor more than three minors older (allowed: v1.33 to v1.36)"},
		{RoleKubeProxy, "v1.33.9", "v1.36.0", ""},
		// scheduler and controllers: at most one minor older, never newer
		{RoleScheduler, "v1.37.0", "v1.36.3", "the scheduler must not be newer than the apiserver nor more than one minor older (allowed: v1.35 to v1.36)"},
		{RoleScheduler, "v1.35.0", "v1.36.3", ""},
		{RoleScheduler, "v1.34.9", "v1.36.3", "upgrade the scheduler to v1.35 or later"},
		{RoleControllers, "v1.34.0", "v1.36.3", "the controllers must not be newer"},
	}
	for _, c := range cases {
		err := CheckSkew(c.role, c.rv, c.av)
		if c.wantErrSub == "" {
			if err != nil {
				t.Errorf("%s %s vs %s: unexpected error %v", c.role, c.rv, c.av, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.wantErrSub) {
			t.Errorf("%s %s vs %s: error %v, want it to contain %q", c.role, c.rv, c.av, err, c.wantErrSub)
			continue
		}
		if c.rv == "banana" {
			continue
		}
		if !strings.Contains(err.Error(), c.rv) || !strings.Contains(err.Error(), c.av) {
			t.Errorf("error %q must name both versions", err)
		}
		if !strings.Contains(err.Error(), "by the Kubernetes version-skew policy") {
			t.Errorf("error %q must state the rule", err)
		}
		var se *SkewError
		if !errors.As(err, &se) || se.Role != c.role || se.RoleVersion != c.rv || se.APIServerVersion != c.av {
			t.Errorf("error %q: want a *SkewError for %s %s vs %s, got %#v", err, c.role, c.rv, c.av, se)
		}
	}
}

func TestParseMinor(t *testing.T) {
	t.Parallel()
	m, err := ParseMinor("v1.36.3-rc.1+abc")
	if err != nil || m != (Minor{1, 36}) {
		t.Fatalf("got %v %v", m, err)
	}
	m, err = ParseMinor("1.30+")
	if err != nil || m != (Minor{1, 30}) {
		t.Fatalf("got %v %v", m, err)
	}
}

// TestCheckSkewMessages pins the exact text operators (and the end-to-end
// tests) see.
func TestCheckSkewMessages(t *testing.T) {
	t.Parallel()
	cases := []struct {
		role   Role
		rv, av string
		want   string
	}{
		{RoleKubelet, "v1.32.0", "v1.36.3", "kubelet v1.32.0 is too old for apiserver v1.36.3: " +
			"by the Kubernetes version-skew policy the kubelet must not be newer than the apiserver nor more than three minors older (allowed: v1.33 to v1.36); " +
			"upgrade the node agent (kubesplit-node, which runs the kubelet and kube-proxy) to v1.33 or later"},
		{RoleScheduler, "v1.37.0", "v1.36.3", "scheduler v1.37.0 is newer than apiserver v1.36.3: " +
			"by the Kubernetes version-skew policy the scheduler must not be newer than the apiserver nor more than one minor older (allowed: v1.35 to v1.36); " +
			"upgrade the apiserver first, or run the scheduler at v1.35 to v1.36"},
	}
	for _, c := range cases {
		err := CheckSkew(c.role, c.rv, c.av)
		if err == nil || err.Error() != c.want {
			t.Errorf("%s %s vs %s:\n got %v\nwant %s", c.role, c.rv, c.av, err, c.want)
		}
	}
}

func TestParseInfo(t *testing.T) {
	role, ks, k8s, err := ParseInfo(InfoOf("scheduler", "v1.38.0") + "\n")
	if err != nil || role != "scheduler" || ks != Version || k8s != "v1.38.0" {
		t.Fatalf("ParseInfo(InfoOf) = %q %q %q %v", role, ks, k8s, err)
	}
	if _, _, _, err := ParseInfo("scheduler: unknown flag --x"); err == nil {
		t.Fatal("a line that is not --version's output was read")
	}
}
