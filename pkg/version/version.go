// Package version holds the versions a kubesplit binary was built with and the
// Kubernetes version-skew rules that roles check before they start.
package version

import (
	"fmt"
	"regexp"
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
func Info(role string) string { return InfoOf(role, Kubernetes) }

// InfoOf is Info for a binary that embeds Kubernetes kubernetes.
func InfoOf(role, kubernetes string) string {
	return fmt.Sprintf("kubesplit %s %s (kubernetes %s)", role, Version, kubernetes)
}

// infoRE reads Info's output back.
var infoRE = regexp.MustCompile(`^kubesplit (\S+) (\S+) \(kubernetes (v[^)\s]+)\)$`)

// ParseInfo reads a line Info printed: the role, its kubesplit version and
// its Kubernetes version.
func ParseInfo(line string) (role, kubesplit, kubernetes string, err error) {
	m := infoRE.FindStringSubmatch(strings.TrimSpace(line))
	if m == nil {
		return "", "", "", fmt.Errorf("%q is not what a kubesplit role's --version prints (kubesplit ROLE VERSION (kubernetes VERSION))", line)
	}
	return m[1], m[2], m[3], nil
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

// SkewError is a version-skew policy violation: restarting will not help,
// one of the two sides has to be upgraded.
type SkewError struct {
	Role             Role
	RoleVersion      string
	APIServerVersion string
	msg              string
}

func (e *SkewError) Error() string { return e.msg }

// CheckSkew applies Kubernetes' version-skew policy between a role and the
// apiserver it talks to (https://kubernetes.io/releases/version-skew-policy/):
// scheduler and controllers may be at most one minor older and never newer;
// kubelet and kube-proxy may be up to three minors older and never newer.
// A violation is a *SkewError whose message names both versions, the rule,
// the allowed range and what to upgrade, for example:
//
//	kubelet v1.32.1 is too old for apiserver v1.36.3: by the Kubernetes version-skew policy the kubelet must not be newer than the apiserver nor more than three minors older (allowed: v1.33 to v1.36); upgrade the node agent (kubesplit-node, which runs the kubelet and kube-proxy) to v1.33 or later
func CheckSkew(role Role, roleVersion, apiserverVersion string) error {
	r, err := ParseMinor(roleVersion)
	if err != nil {
		return err
	}
	a, err := ParseMinor(apiserverVersion)
	if err != nil {
		return err
	}
	maxOlder, older := 1, "one minor"
	if role == RoleKubelet || role == RoleKubeProxy {
		maxOlder, older = 3, "three minors"
	}
	lowest := Minor{a.Major, max(a.Minor-maxOlder, 0)}
	allowed := fmt.Sprintf("v%s to v%s", lowest, a)
	rule := fmt.Sprintf("by the Kubernetes version-skew policy %s must not be newer than the apiserver nor more than %s older (allowed: %s)",
		role.subject(), older, allowed)
	fail := func(format string, args ...any) error {
		return &SkewError{Role: role, RoleVersion: roleVersion, APIServerVersion: apiserverVersion, msg: fmt.Sprintf(format, args...)}
	}
	switch {
	case r.Major != a.Major:
		return fail("%s %s cannot run against apiserver %s: major versions differ; %s", role, roleVersion, apiserverVersion, rule)
	case r.Minor > a.Minor:
		return fail("%s %s is newer than apiserver %s: %s; upgrade the apiserver first, or run %s at %s",
			role, roleVersion, apiserverVersion, rule, role.upgradee(), allowed)
	case a.Minor-r.Minor > maxOlder:
		return fail("%s %s is too old for apiserver %s: %s; upgrade %s to v%s or later",
			role, roleVersion, apiserverVersion, rule, role.upgradee(), lowest)
	}
	return nil
}

// subject names the role in the rule.
func (r Role) subject() string {
	if r == RoleKubeProxy {
		return string(r)
	}
	return "the " + string(r)
}

// upgradee names what the operator replaces: the kubelet and kube-proxy are
// both part of the node agent.
func (r Role) upgradee() string {
	if r == RoleKubelet || r == RoleKubeProxy {
		return "the node agent (kubesplit-node, which runs the kubelet and kube-proxy)"
	}
	return r.subject()
}
