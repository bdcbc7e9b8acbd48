package bootstrap

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubesplit/kubesplit/pkg/jointoken"
	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/pki"
)

func initDir(t *testing.T) (layout.Dir, *Report) {
	t.Helper()
	d := layout.Dir(t.TempDir())
	rep, err := Run(Options{DataDir: d})
	if err != nil {
		t.Fatal(err)
	}
	return d, rep
}

func TestInitCreatesEverythingAndKeepsItOnRerun(t *testing.T) {
	t.Parallel()
	d, rep := initDir(t)
	if len(rep.Kept) != 0 || len(rep.Created) < 15 {
		t.Fatalf("first run: created %d kept %d", len(rep.Created), len(rep.Kept))
	}
	before := map[string][]byte{}
	for _, f := range rep.Created {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		before[f] = b
	}
	rep2, err := Run(Options{DataDir: d})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep2.Created) != 0 || len(rep2.Kept) != len(rep.Created) {
		t.Fatalf("second run: created %v", rep2.Created)
	}
	for f, b := range before {
		now, _ := os.ReadFile(f)
		if !bytes.Equal(now, b) {
			t.Errorf("%s changed on re-run", f)
		}
	}
	// keys are private
	for _, k := range []string{d.ClusterCA().Key, d.ServiceAccountKey(), d.EncryptionConfig(), d.Kubeconfig(layout.Admin)} {
		st, err := os.Stat(k)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", k, st.Mode().Perm())
		}
	}
	// leaves chain to their CA
	ca, _ := pki.LoadCert(d.DatastoreCA().Cert)
	leaf, _ := pki.LoadCert(d.DatastoreClient().Cert)
	if err := leaf.CheckSignatureFrom(ca); err != nil {
		t.Error("datastore client not signed by the datastore CA")
	}
}

func TestInitRecreatesMissingLeaf(t *testing.T) {
	t.Parallel()
	d, _ := initDir(t)
	os.Remove(d.FrontProxyClient().Cert)
	os.Remove(d.FrontProxyClient().Key)
	rep, err := Run(Options{DataDir: d})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Created) != 1 || rep.Created[0] != d.FrontProxyClient().Cert {
		t.Fatalf("created %v", rep.Created)
	}
}

func TestInitReportsAndKeepsBadFiles(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		break_  func(d layout.Dir) string // returns the file it broke
		wantSub string
	}{
		"garbage CA": {func(d layout.Dir) string {
			os.WriteFile(d.ClusterCA().Cert, []byte("not a cert"), 0o644)
			return d.ClusterCA().Cert
		}, "no PEM certificate"},
		"key of another cert": {func(d layout.Dir) string {
			k, _ := os.ReadFile(d.DatastoreClient().Key)
			os.WriteFile(d.DatastoreServer().Key, k, 0o600)
			return d.DatastoreServer().Key
		}, "does not belong to"},
		"leaf from another CA": {func(d layout.Dir) string {
			other, _ := pki.NewCA("other")
			kp, _ := other.Issue(pki.Spec{CommonName: "kube-apiserver", Usage: pki.UsageServer})
			kp.Write(d.APIServerServing().Cert, d.APIServerServing().Key)
			return d.APIServerServing().Cert
		}, "not signed by"},
		"CA gone but its leaves remain": {func(d layout.Dir) string {
			os.Remove(d.DatastoreCA().Cert)
			os.Remove(d.DatastoreCA().Key)
			return d.DatastoreServer().Key // must not be touched
		}, "missing, but"},
		"kubeconfig for another server": {func(d layout.Dir) string {
			b, _ := os.ReadFile(d.Kubeconfig(layout.Admin))
			os.WriteFile(d.Kubeconfig(layout.Admin), bytes.ReplaceAll(b, []byte("127.0.0.1:6443"), []byte("10.9.9.9:6443")), 0o600)
			return d.Kubeconfig(layout.Admin)
		}, "points at https://10.9.9.9:6443"},
		"service account public key mismatch": {func(d layout.Dir) string {
			k, _ := pki.NewKey()
			p, _ := pki.PublicKeyPEM(k.Public())
			os.WriteFile(d.ServiceAccountPub(), p, 0o644)
			return d.ServiceAccountPub()
		}, "not the public half"},
		"empty encryption config": {func(d layout.Dir) string {
			os.WriteFile(d.EncryptionConfig(), nil, 0o600)
			return d.EncryptionConfig()
		}, "not an EncryptionConfiguration"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			d, _ := initDir(t)
			broken := tc.break_(d)
			before, _ := os.ReadFile(broken)
			_, err := Run(Options{DataDir: d})
			if err == nil {
				t.Fatal("init accepted a bad data directory")
			}
			if !strings.Contains(err.Error(), tc.wantSub) || !strings.Contains(err.Error(), "never replaces") {
				t.Fatalf("error %q, want it to contain %q and the advice", err, tc.wantSub)
			}
			after, _ := os.ReadFile(broken)
			if !bytes.Equal(before, after) {
				t.Fatalf("%s was replaced", broken)
			}
		})
	}
}

func TestInitUnwritableDir(t *testing.T) {
	t.Parallel()
	f := t.TempDir() + "/file"
	os.WriteFile(f, nil, 0o600)
	_, err := Run(Options{DataDir: layout.Dir(f + "/sub")})
	if err == nil || !strings.Contains(err.Error(), "cannot create data directory") {
		t.Fatalf("got %v", err)
	}
	if errors.Is(err, pki.ErrCorrupt) {
		t.Fatal("wrong error class")
	}
}

func TestInitNodeTokenPinsTheCAAndIsKept(t *testing.T) {
	t.Parallel()
	d := layout.Dir(t.TempDir())
	if _, err := Run(Options{DataDir: d, NodeToken: true}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(d.NodeToken())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jointoken.Parse(string(b))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCert(d.ClusterCA().Cert)
	if err != nil {
		t.Fatal(err)
	}
	if tok.CAHash != pki.Fingerprint(ca) {
		t.Fatal("the node token does not pin the cluster CA")
	}
	if _, err := Run(Options{DataDir: d, NodeToken: true}); err != nil {
		t.Fatal(err)
	}
	if b2, _ := os.ReadFile(d.NodeToken()); !bytes.Equal(b, b2) {
		t.Fatal("a rerun replaced the node token")
	}
	other := jointoken.Token{CAHash: strings.Repeat("0", 64), ID: tok.ID, Secret: tok.Secret}
	if err := os.WriteFile(d.NodeToken(), []byte(other.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Run(Options{DataDir: d, NodeToken: true})
	if err == nil || !strings.Contains(err.Error(), "pins another cluster CA") || strings.Contains(err.Error(), tok.Secret) {
		t.Fatalf("token for another CA: err %v, want a report without the secret", err)
	}
}

// Behind an SNI router the admin kubeconfig names the apiserver (its
// tls-server-name) and the apiserver's certificate holds that name; a
// later run asking for another name reports the kubeconfig, not keeps it.
func TestInitServerName(t *testing.T) {
	t.Parallel()
	d := layout.Dir(t.TempDir())
	o := Options{DataDir: d, Server: "https://cp1.example:443", ServerName: "kubernetes.cp1.example"}
	if _, err := Run(o); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.LoadFromFile(d.Kubeconfig(layout.Admin))
	if err != nil {
		t.Fatal(err)
	}
	cl := cfg.Clusters[cfg.Contexts[cfg.CurrentContext].Cluster]
	if cl.Server != o.Server || cl.TLSServerName != o.ServerName {
		t.Fatalf("admin kubeconfig: server %s, tls-server-name %q", cl.Server, cl.TLSServerName)
	}
	cert, err := pki.LoadCert(d.APIServerServing().Cert)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.VerifyHostname(o.ServerName); err != nil {
		t.Fatalf("the apiserver certificate: %v", err)
	}
	if rep, err := Run(o); err != nil || len(rep.Created)+len(rep.Renewed) != 0 {
		t.Fatalf("re-run: %+v %v", rep, err)
	}
	o.ServerName = "kubernetes.cp2.example"
	if _, err := Run(o); err == nil || !strings.Contains(err.Error(), "tls-server-name") {
		t.Fatalf("another name kept the kubeconfig silently: %v", err)
	}
}
