package bootstrap

import (
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/pki"
)

func shortLived(t *testing.T) layout.Dir {
	t.Helper()
	d := layout.Dir(t.TempDir())
	if _, err := Run(Options{DataDir: d, APIServerSANs: []string{"box.example", "10.9.8.7"}, Renewal: Renewal{Validity: 48 * time.Hour}}); err != nil {
		t.Fatal(err)
	}
	return d
}

func expiries(t *testing.T, d layout.Dir) map[string]time.Time {
	t.Helper()
	m := map[string]time.Time{}
	for _, c := range Certificates(d) {
		if c.Err != nil {
			t.Fatalf("%s: %v", c.Name, c.Err)
		}
		m[c.Name] = c.NotAfter
	}
	return m
}

func TestInitRenewsDueLeavesAndKeepsTheirNames(t *testing.T) {
	t.Parallel()
	d := shortLived(t)
	before := expiries(t, d)
	// a later init without the extra SAN renews (2 days < 90) and keeps it
	rep, err := Run(Options{DataDir: d})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Renewed) != len(identities(d)) || len(rep.Created) != 0 {
		t.Fatalf("renewed %d of %d identities, created %v", len(rep.Renewed), len(identities(d)), rep.Created)
	}
	after := expiries(t, d)
	for name, was := range before {
		if strings.HasSuffix(name, "-ca") {
			if !after[name].Equal(was) {
				t.Errorf("CA %s changed", name)
			}
			continue
		}
		if time.Until(after[name]) < 300*24*time.Hour {
			t.Errorf("%s: renewed until %s", name, after[name])
		}
	}
	ca, _ := pki.LoadCert(d.ClusterCA().Cert)
	api, _ := pki.LoadCert(d.APIServerServing().Cert)
	if err := pki.VerifyLeaf(api, ca, pki.Spec{CommonName: "kube-apiserver", DNSNames: []string{"box.example", "kubernetes"}}); err != nil {
		t.Fatalf("renewed apiserver certificate: %v", err)
	}
	// nothing due: a third run keeps everything
	rep, err = Run(Options{DataDir: d})
	if err != nil || len(rep.Renewed) != 0 {
		t.Fatalf("third run renewed %v (%v)", rep.Renewed, err)
	}
}

func TestRenewDueNamedAndUnknown(t *testing.T) {
	t.Parallel()
	d := shortLived(t)
	got, err := Renew(d, Renewal{Before: time.Hour})
	if err != nil || len(got) != 0 {
		t.Fatalf("nothing due within an hour, renewed %v (%v)", got, err)
	}
	keyBefore, _ := os.ReadFile(d.DatastoreClient().Key)
	got, err = Renew(d, Renewal{}, "datastore-client.crt", "scheduler.kubeconfig")
	if err != nil || len(got) != 2 {
		t.Fatalf("named: %v (%v)", got, err)
	}
	for _, r := range got {
		if time.Until(r.After) < 300*24*time.Hour || r.Before.After(r.After) {
			t.Errorf("%s: %s → %s", r.Name, r.Before, r.After)
		}
	}
	// the key stays: a reader never meets a certificate with the other key
	if keyAfter, _ := os.ReadFile(d.DatastoreClient().Key); string(keyAfter) != string(keyBefore) {
		t.Error("renewal changed the key")
	}
	if _, err := pki.LoadKeyPair(d.DatastoreClient().Cert, d.DatastoreClient().Key); err != nil {
		t.Fatal(err)
	}
	if _, err := Renew(d, Renewal{}, "nope"); !errors.Is(err, ErrUnknownCert) || !strings.Contains(err.Error(), "apiserver.crt") {
		t.Fatalf("unknown name: %v", err)
	}
	got, err = Renew(d, Renewal{})
	if err != nil || len(got) != len(identities(d))-2 {
		t.Fatalf("due: renewed %d, want %d (%v)", len(got), len(identities(d))-2, err)
	}
	// the pairs still belong together and chain to their CA
	for _, id := range identities(d) {
		if id.pair.Cert == "" {
			continue
		}
		if _, err := pki.LoadKeyPair(id.pair.Cert, id.pair.Key); err != nil {
			t.Errorf("%s: %v", id.name, err)
		}
	}
}

func TestRoleKubeconfigsReferToFilesAdminEmbeds(t *testing.T) {
	t.Parallel()
	d := layout.Dir(t.TempDir())
	if _, err := Run(Options{DataDir: d}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{layout.Scheduler, layout.Controllers, layout.Addons, layout.TunnelGateway, layout.Admin} {
		cfg, err := clientcmd.BuildConfigFromFlags("", d.Kubeconfig(name))
		if err != nil {
			t.Fatal(err)
		}
		if name == layout.Admin {
			if len(cfg.CertData) == 0 || cfg.CertFile != "" {
				t.Errorf("admin: want an embedded client")
			}
			continue
		}
		if cfg.CertFile != d.KubeconfigClient(name).Cert || len(cfg.CertData) != 0 {
			t.Errorf("%s: client certificate %q, want the file %s", name, cfg.CertFile, d.KubeconfigClient(name).Cert)
		}
	}
}

func TestRenewMovesAnEmbeddedRoleKubeconfigToFiles(t *testing.T) {
	t.Parallel()
	d := layout.Dir(t.TempDir())
	if _, err := Run(Options{DataDir: d}); err != nil {
		t.Fatal(err)
	}
	// what an older init wrote: the scheduler's client inside its kubeconfig
	path := d.Kubeconfig(layout.Scheduler)
	cfg, ai, err := loadKubeconfig(path)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := pki.LoadKeyPair(d.KubeconfigClient(layout.Scheduler).Cert, d.KubeconfigClient(layout.Scheduler).Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := setClient(ai, path, layout.Pair{}, kp); err != nil {
		t.Fatal(err)
	}
	b, _ := clientcmd.Write(*cfg)
	os.WriteFile(path, b, 0o600)
	got, err := Renew(d, Renewal{})
	if err != nil || len(got) != 1 || got[0].Name != "scheduler.kubeconfig" {
		t.Fatalf("renewed %v (%v)", got, err)
	}
	if _, ai, _ := loadKubeconfig(path); len(ai.ClientCertificateData) != 0 || ai.ClientCertificate == "" {
		t.Fatal("still embedded")
	}
}

func TestRenewKeepsTheOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to hand files to another user")
	}
	t.Parallel()
	d := shortLived(t)
	if err := Chown(string(d), 65532, 65532); err != nil {
		t.Fatal(err)
	}
	if _, err := Renew(d, Renewal{}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{d.APIServerServing().Key, d.Kubeconfig(layout.Admin), d.KubeconfigClient(layout.Scheduler).Cert} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if uid := st.Sys().(*syscall.Stat_t).Uid; uid != 65532 {
			t.Errorf("%s: owner %d after renewal, want 65532", f, uid)
		}
	}
}

func TestCertificatesListsCAsAndLeaves(t *testing.T) {
	t.Parallel()
	d := layout.Dir(t.TempDir())
	if _, err := Run(Options{DataDir: d}); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range Certificates(d) {
		names = append(names, c.Name)
		if c.IsCA != strings.HasSuffix(c.Name, "-ca") || (c.CA == "") != c.IsCA {
			t.Errorf("%+v", c)
		}
	}
	for _, want := range []string{"cluster-ca", "datastore-ca", "front-proxy-ca", "apiserver.crt", "datastore-server.crt", "admin.kubeconfig", "tunnel-gateway.kubeconfig"} {
		if !slices.Contains(names, want) {
			t.Errorf("%s not listed in %v", want, names)
		}
	}
}

func TestRenewSkipsWhatIsNotThere(t *testing.T) {
	t.Parallel()
	d := shortLived(t)
	// a wiring that gives a role only some files (no addons kubeconfig, no
	// datastore CA key): the rest is renewed, the missing ones are skipped
	os.Remove(d.Kubeconfig(layout.Addons))
	os.Remove(d.DatastoreCA().Key)
	got, err := Renew(d, Renewal{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range got {
		if r.Name == "addons.kubeconfig" || strings.HasPrefix(r.Name, "datastore-") {
			t.Errorf("renewed %s", r.Name)
		}
	}
	if len(got) != len(identities(d))-4 { // addons.kubeconfig and the three datastore leaves
		t.Errorf("renewed %d, want %d", len(got), len(identities(d))-4)
	}
}

// TestInitAddsNewSANs: an init asked for a name the apiserver's or the
// gateway's certificate lacks (a hosted control plane's public address, a
// new --apiserver-san) reissues just those, keeping their old names and
// every CA.
func TestInitAddsNewSANs(t *testing.T) {
	t.Parallel()
	d := layout.Dir(t.TempDir())
	if _, err := Run(Options{DataDir: d, APIServerSANs: []string{"box.example"}}); err != nil {
		t.Fatal(err)
	}
	caBefore, _ := os.ReadFile(d.ClusterCA().Cert)
	rep, err := Run(Options{DataDir: d, APIServerSANs: []string{"203.0.113.9"}, GatewaySANs: []string{"203.0.113.9"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(rep.Renewed, d.APIServerServing().Cert) || !slices.Contains(rep.Renewed, d.TunnelGateway().Cert) || len(rep.Created) != 0 {
		t.Fatalf("renewed %v, created %v; want the apiserver's and gateway's certificates reissued", rep.Renewed, rep.Created)
	}
	ca, _ := pki.LoadCert(d.ClusterCA().Cert)
	api, _ := pki.LoadCert(d.APIServerServing().Cert)
	if err := pki.VerifyLeaf(api, ca, pki.Spec{CommonName: "kube-apiserver", DNSNames: []string{"box.example"}, IPs: []net.IP{net.ParseIP("203.0.113.9")}}); err != nil {
		t.Fatalf("reissued apiserver certificate: %v", err)
	}
	if caAfter, _ := os.ReadFile(d.ClusterCA().Cert); string(caAfter) != string(caBefore) {
		t.Fatal("the CA changed")
	}
}
