// Package nodeidentity reads the node a client certificate belongs to, the
// way the apiserver's Node authorizer does (CN system:node:NAME in group
// system:nodes).
package nodeidentity

import (
	"crypto/x509"
	"slices"
	"strings"
)

const (
	userPrefix = "system:node:"
	group      = "system:nodes"
)

// CommonName is the certificate CN of a node.
func CommonName(node string) string { return userPrefix + node }

// Group is the organization every node certificate carries.
const Group = group

// FromCert returns the node name of a node client certificate.
func FromCert(c *x509.Certificate) (string, bool) {
	name, ok := strings.CutPrefix(c.Subject.CommonName, userPrefix)
	if !ok || name == "" || !slices.Contains(c.Subject.Organization, group) {
		return "", false
	}
	return name, true
}
