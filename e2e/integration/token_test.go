package integration

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubesplit/kubesplit/e2e/hostcluster"
	"github.com/kubesplit/kubesplit/pkg/jointoken"
	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/localcluster"
	"github.com/kubesplit/kubesplit/pkg/pki"
	"github.com/kubesplit/kubesplit/pkg/tokenstore"
)

// TestJoinTokens drives `kubesplit token` and checks what the apiserver makes
// of the tokens: valid ones authenticate as bootstrap users, revoked and
// expired ones are refused.
func TestJoinTokens(t *testing.T) {
	needLong(t)
	c := hostcluster.Start(t, hostcluster.Options{Roles: []string{localcluster.Datastore, localcluster.APIServer}})
	kubeconfig := c.Spec.DataDir.Kubeconfig(layout.Admin)
	cli := func(args ...string) (string, error) {
		out, err := exec.Command(filepath.Join(c.Spec.BinDir, "kubesplit"), append(args, "--kubeconfig", kubeconfig)...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	whoami := func(bootstrap string) (*authenticationv1.SelfSubjectReview, error) {
		cfg := rest.AnonymousClientConfig(c.Config)
		cfg.BearerToken = bootstrap
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return kubernetes.NewForConfigOrDie(cfg).AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	}

	out, err := cli("token", "create", "--ttl", "1h", "--description", "integration")
	if err != nil {
		t.Fatalf("token create: %v: %s", err, out)
	}
	tok, err := jointoken.Parse(out)
	if err != nil {
		t.Fatalf("token create printed %q: %v", out, err)
	}
	ca, err := pki.LoadCert(c.Spec.DataDir.ClusterCA().Cert)
	if err != nil {
		t.Fatal(err)
	}
	if tok.CAHash != pki.Fingerprint(ca) {
		t.Fatalf("token pins %s, the cluster CA is %s", tok.CAHash, pki.Fingerprint(ca))
	}

	review, err := whoami(tok.Bootstrap())
	if err != nil {
		t.Fatalf("a fresh token is refused: %v", err)
	}
	u := review.Status.UserInfo
	if u.Username != "system:bootstrap:"+tok.ID || !slices.Contains(u.Groups, "system:bootstrappers") || !slices.Contains(u.Groups, tokenstore.NodeGroup) {
		t.Fatalf("authenticated as %+v", u)
	}
	if _, err := whoami(tok.ID + ".0000000000000000"); !apierrors.IsUnauthorized(err) {
		t.Fatalf("wrong secret: got %v, want 401", err)
	}

	list, err := cli("token", "list")
	if err != nil || !strings.Contains(list, tok.ID) || !strings.Contains(list, "integration") {
		t.Fatalf("token list: %v\n%s", err, list)
	}
	if strings.Contains(list, tok.Secret) {
		t.Fatal("token list shows the secret")
	}

	if out, err := cli("token", "revoke", tok.ID); err != nil {
		t.Fatalf("revoke: %v: %s", err, out)
	}
	// the apiserver caches successful token authentications for 10s
	revokedAt := time.Now()
	waitFor(t, 20*time.Second, "the revoked token to be refused", func(context.Context) (bool, error) {
		_, err := whoami(tok.Bootstrap())
		return apierrors.IsUnauthorized(err), nil
	})
	t.Logf("revoked token refused after %.1fs", time.Since(revokedAt).Seconds())
	if out, err := cli("token", "revoke", tok.ID); err == nil || !strings.Contains(out, "no such token") {
		t.Fatalf("revoking twice: %v %s", err, out)
	}

	out, err = cli("token", "create", "--ttl", "2s")
	if err != nil {
		t.Fatalf("token create: %v: %s", err, out)
	}
	short, _ := jointoken.Parse(out)
	time.Sleep(3 * time.Second)
	if _, err := whoami(short.Bootstrap()); !apierrors.IsUnauthorized(err) {
		t.Fatalf("expired token: got %v, want 401", err)
	}
	if out, err := cli("token", "create", "--ttl", "-1h"); err == nil || !strings.Contains(out, "negative") {
		t.Fatalf("negative ttl accepted: %s", out)
	}
}

// TestGatewayServesPinnedCA: a node with a join token gets the cluster CA
// from the gateway only when the token's pin matches.
func TestGatewayServesPinnedCA(t *testing.T) {
	needLong(t)
	c := hostcluster.Start(t, hostcluster.Options{Roles: []string{localcluster.TunnelGateway}})
	ca, err := pki.LoadCert(c.Spec.DataDir.ClusterCA().Cert)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	good := jointoken.Token{CAHash: pki.Fingerprint(ca), ID: "abcdef", Secret: "0123456789abcdef"}
	got, err := jointoken.FetchCA(ctx, c.Spec.GatewayURL(), good)
	if err != nil {
		t.Fatalf("matching pin refused: %v", err)
	}
	if !got.Equal(ca) {
		t.Fatal("fetched CA is not the cluster CA")
	}
	bad := good
	bad.CAHash = strings.Repeat("0", 64)
	_, err = jointoken.FetchCA(ctx, c.Spec.GatewayURL(), bad)
	if !errors.Is(err, jointoken.ErrPinMismatch) {
		t.Fatalf("wrong pin: got %v, want ErrPinMismatch", err)
	}
	if strings.Contains(err.Error(), bad.Secret) {
		t.Fatal("the error holds the token secret")
	}
}
