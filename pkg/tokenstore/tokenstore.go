// Package tokenstore keeps join tokens in the cluster as Kubernetes
// bootstrap-token Secrets in kube-system: the apiserver's bootstrap
// authenticator accepts them and the controllers' token cleaner deletes
// them once expired.
package tokenstore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"

	"github.com/kubesplit/kubesplit/pkg/jointoken"
)

// NodeGroup is the extra group every join token authenticates as; RBAC for
// node bootstrap is bound to it.
const NodeGroup = "system:bootstrappers:kubesplit:nodes"

// Info describes a token without its secret.
type Info struct {
	ID          string
	Expires     time.Time // zero: never
	Description string
	Groups      []string
}

// Create stores a new bootstrap token valid for ttl (0: never expires).
func Create(ctx context.Context, cs kubernetes.Interface, caHash string, ttl time.Duration, description string) (jointoken.Token, error) {
	tok, err := Generate(caHash)
	if err != nil {
		return jointoken.Token{}, err
	}
	return tok, Store(ctx, cs, tok, ttl, description)
}

// Generate makes a new random token for the CA with hash caHash; nothing is stored.
func Generate(caHash string) (jointoken.Token, error) {
	raw, err := bootstraputil.GenerateBootstrapToken()
	if err != nil {
		return jointoken.Token{}, err
	}
	id, secret, _ := strings.Cut(raw, ".")
	return jointoken.Token{CAHash: caHash, ID: id, Secret: secret}, nil
}

// Store keeps tok in the cluster, valid for ttl (0: never expires). A token
// whose ID is taken is an AlreadyExists error.
func Store(ctx context.Context, cs kubernetes.Interface, tok jointoken.Token, ttl time.Duration, description string) error {
	data := map[string]string{
		bootstrapapi.BootstrapTokenIDKey:               tok.ID,
		bootstrapapi.BootstrapTokenSecretKey:           tok.Secret,
		bootstrapapi.BootstrapTokenUsageAuthentication: "true",
		bootstrapapi.BootstrapTokenUsageSigningKey:     "true",
		bootstrapapi.BootstrapTokenExtraGroupsKey:      NodeGroup,
		bootstrapapi.BootstrapTokenDescriptionKey:      description,
	}
	if ttl > 0 {
		data[bootstrapapi.BootstrapTokenExpirationKey] = time.Now().Add(ttl).UTC().Format(time.RFC3339)
	}
	_, err := cs.CoreV1().Secrets(metav1.NamespaceSystem).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: bootstraputil.BootstrapTokenSecretName(tok.ID), Namespace: metav1.NamespaceSystem},
		Type:       bootstrapapi.SecretTypeBootstrapToken,
		StringData: data,
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("storing token %s: %w", tok.ID, err)
	}
	return nil
}

// List returns every bootstrap token, oldest expiry first, without secrets.
func List(ctx context.Context, cs kubernetes.Interface) ([]Info, error) {
	secrets, err := cs.CoreV1().Secrets(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("type", string(bootstrapapi.SecretTypeBootstrapToken)).String(),
	})
	if err != nil {
		return nil, err
	}
	var out []Info
	for _, s := range secrets.Items {
		info := Info{ID: string(s.Data[bootstrapapi.BootstrapTokenIDKey]), Description: string(s.Data[bootstrapapi.BootstrapTokenDescriptionKey])}
		if exp := string(s.Data[bootstrapapi.BootstrapTokenExpirationKey]); exp != "" {
			info.Expires, _ = time.Parse(time.RFC3339, exp)
		}
		if g := string(s.Data[bootstrapapi.BootstrapTokenExtraGroupsKey]); g != "" {
			info.Groups = strings.Split(g, ",")
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// ErrNotFound is returned when revoking an unknown token.
var ErrNotFound = errors.New("no such token")

// Revoke deletes the token with the given id (or a whole join token: only
// its id is used).
func Revoke(ctx context.Context, cs kubernetes.Interface, idOrToken string) (string, error) {
	id := idOrToken
	if t, err := jointoken.Parse(idOrToken); err == nil {
		id = t.ID
	}
	if !bootstraputil.IsValidBootstrapTokenID(id) {
		return "", fmt.Errorf("%q is not a token id (6 lowercase letters or digits); see 'kubesplit token list'", id)
	}
	err := cs.CoreV1().Secrets(metav1.NamespaceSystem).Delete(ctx, bootstraputil.BootstrapTokenSecretName(id), metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return id, fmt.Errorf("token %s: %w", id, ErrNotFound)
	}
	return id, err
}
