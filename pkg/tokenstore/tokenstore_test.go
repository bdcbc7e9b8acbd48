package tokenstore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	"github.com/kubesplit/kubesplit/pkg/jointoken"
)

const hash = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestCreateListRevoke(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cs := fake.NewSimpleClientset()
	tok, err := Create(ctx, cs, hash, time.Hour, "rack 3")
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := jointoken.Parse(tok.String())
	if err != nil || parsed != tok {
		t.Fatalf("round trip: %v %v", parsed, err)
	}
	s, err := cs.CoreV1().Secrets("kube-system").Get(ctx, "bootstrap-token-"+tok.ID, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Type != bootstrapapi.SecretTypeBootstrapToken || s.StringData["token-secret"] != tok.Secret || s.StringData["auth-extra-groups"] != NodeGroup {
		t.Fatalf("secret: %+v", s)
	}
	exp, err := time.Parse(time.RFC3339, s.StringData["expiration"])
	if err != nil || time.Until(exp) < 59*time.Minute {
		t.Fatalf("expiration %q", s.StringData["expiration"])
	}
	if _, err := Revoke(ctx, cs, tok.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := Revoke(ctx, cs, tok.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second revoke: %v", err)
	}
	if _, err := Revoke(ctx, cs, "NOT-AN-ID"); err == nil || !strings.Contains(err.Error(), "not a token id") {
		t.Fatalf("bad id: %v", err)
	}
}
