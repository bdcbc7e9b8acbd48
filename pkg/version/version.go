// Package version holds the versions a kubesplit binary was built with and the
// Kubernetes version-skew rules that roles check before they start.
package version

import (
	"fmt"
	"strconv"
	"strings"
)

// Set at link time by hack/build.sh (-X). The defaults are what a plain
// `go build` without the build script reports.
var (
	// Version is the kubesplit release.
	Version = "v0.0.0-dev"
	// Kubernetes is the upstream Kubernetes release the binary embeds.
	Kubernetes = "v1.36.3"
)

// Info is what `<role> --version` prints and what `kubesplit status` shows.
func Info(role string) string {
	return fmt.Sprintf("kubesplit %s %s (kubernetes %s)", role, Version, Kubernetes)
}

// Minor is a Kubernetes major.minor pair.
type Minor struct{ Major, Minor int }

func (m Minor) String() string { return fmt.Sprintf("%d.%d", m.Major, m.Minor) }

// ParseMinor reads the major.minor out of "v1.36.3", "1.36", "v1.36.3-rc.1+abc".
func ParseMinor(v string) (Minor, error) {
	s := strings.TrimPrefix(strings.TrimSpace(v), "v")
	parts := strings.SplitN(s, ".", 3)
	if len(parts) < 2 {
		return Minor{}, fmt.Errorf("version %q is not of the form vMAJOR.MINOR[.PATCH]", v)
	}
	major, err := strconv.Atoi(parts[0])
	if err != nil {
		return Minor{}, fmt.Errorf("version %q: major %q is not a number", v, parts[0])
	}
	minorDigits := parts[1]
	if i := strings.IndexFunc(minorDigits, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minorDigits = minorDigits[:i]
	}
	minor, err := strconv.Atoi(minorDigits)
	if err != nil {
		return Minor{}, fmt.Errorf("version %q: minor %q is not a number", v, parts[1])
	}
	return Minor{major, minor}, nil
}

// Role names a component for the skew policy.
type Role string

const (
	RoleScheduler   Role = "scheduler"
	RoleControllers Role = "controllers"
	RoleKubelet     Role = "kubelet"
	RoleKubeProxy   Role = "kube-proxy"
)

// CheckSkew applies Kubernetes' version-skew policy between a role and the
// apiserver it talks to (https://kubernetes.io/releases/version-skew-policy/):
// scheduler and controllers may be at most one minor older and never newer;
// kubelet and kube-proxy may be up to three minors older and never newer.
func CheckSkew(role Role, roleVersion, apiserverVersion string) error {
	r, err := ParseMinor(roleVersion)
	if err != nil {
		return err
	}
	a, err := ParseMinor(apiserverVersion)
	if err != nil {
		return err
	}
	maxOlder := 1
	rule := "scheduler and controllers must not be newer than the apiserver nor more than one minor older"
	if role == RoleKubelet || role == RoleKubeProxy {
		maxOlder = 3
		rule = string(role) + " must not be newer than the apiserver nor more than three minors older"
	}
	if r.Major != a.Major {
		return fmt.Errorf("%s %s cannot run against apiserver %s: major versions differ (%s)", role, roleVersion, apiserverVersion, rule)
	}
	if r.Minor > a.Minor {
		return fmt.Errorf("%s %s is newer than apiserver %s: %s; upgrade the apiserver first", role, roleVersion, apiserverVersion, rule)
	}
	if a.Minor-r.Minor > maxOlder {
		return fmt.Errorf("%s %s is too old for apiserver %s: %s; upgrade the %s", role, roleVersion, apiserverVersion, rule, role)
	}
	return nil
}
