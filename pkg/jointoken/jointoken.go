// Package jointoken creates, lists and revokes the tokens nodes join with.
//
// A join token is a Kubernetes bootstrap token (a Secret of type
// bootstrap.kubernetes.io/token in kube-system, which the apiserver's
// bootstrap authenticator and the controllers' token cleaner already
// understand) plus the SHA-256 of the cluster CA, so a node can check it
// talks to the right cluster before it sends the secret:
//
//	ks1.<ca-sha256-hex>.<token-id>.<token-secret>
//
// This package has the format and the node's side (FetchCA) and only needs
// the standard library; pkg/tokenstore keeps tokens in the cluster.
package jointoken

import (
	"errors"
	"regexp"
	"strings"
)

const prefix = "ks1"

// Token is a parsed join token.
type Token struct {
	CAHash string // hex SHA-256 of the cluster CA certificate (DER)
	ID     string
	Secret string
}

// String renders the join token. It holds the secret: print it once, never log it.
func (t Token) String() string {
	return strings.Join([]string{prefix, t.CAHash, t.ID, t.Secret}, ".")
}

// Bootstrap is the "id.secret" form the apiserver accepts as a bearer token.
func (t Token) Bootstrap() string { return t.ID + "." + t.Secret }

var shape = regexp.MustCompile(`\Aks1\.([0-9a-f]{64})\.([a-z0-9]{6})\.([a-z0-9]{16})\z`)

// ErrMalformed is returned for a string that is not a join token. Its
// message never repeats the input, which may hold a secret.
var ErrMalformed = errors.New("not a kubesplit join token (expected ks1.<64 hex CA hash>.<6-char id>.<16-char secret>)")

// Parse reads a join token.
func Parse(s string) (Token, error) {
	m := shape.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return Token{}, ErrMalformed
	}
	return Token{CAHash: m[1], ID: m[2], Secret: m[3]}, nil
}
