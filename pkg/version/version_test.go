package version

import (
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
		if c.rv != "banana" && (!strings.Contains(err.Error(), c.rv) || !strings.Contains(err.Error(), c.av)) {
			t.Errorf("error %q must name both versions", err)
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
