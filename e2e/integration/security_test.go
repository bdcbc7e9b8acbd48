package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubesplit/kubesplit/e2e/hostcluster"
	"github.com/kubesplit/kubesplit/pkg/localcluster"
	"github.com/kubesplit/kubesplit/pkg/pki"
)

func TestSecurity(t *testing.T) {
	needLong(t)
	c := hostcluster.Start(t, hostcluster.Options{Roles: []string{localcluster.Datastore, localcluster.APIServer},
		Extra: map[string][]string{localcluster.APIServer: {"--audit-log"}}})

	t.Run("datastore-refuses-clients-without-a-valid-certificate", func(t *testing.T) {
		d := c.Spec.DataDir
		// a certificate from a CA the datastore does not trust
		otherCA, err := pki.NewCA("intruder-ca")
		if err != nil {
			t.Fatal(err)
		}
		intruder, err := otherCA.Issue(pki.Spec{CommonName: "kube-apiserver-datastore-client", Usage: pki.UsageClient})
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		intruderPair := struct{ cert, key string }{filepath.Join(dir, "i.crt"), filepath.Join(dir, "i.key")}
		if err := intruder.Write(intruderPair.cert, intruderPair.key); err != nil {
			t.Fatal(err)
		}
		cases := map[string]transport.TLSInfo{
			"no certificate":      {TrustedCAFile: d.DatastoreCA().Cert},
			"foreign certificate": {TrustedCAFile: d.DatastoreCA().Cert, CertFile: intruderPair.cert, KeyFile: intruderPair.key},
		}
		for name, info := range cases {
			cli, err := c.DatastoreClient(info)
			if err != nil {
				continue // refused while connecting: fine
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			_, err = cli.Get(ctx, "/registry/namespaces/default")
			cancel()
			cli.Close()
			if err == nil {
				t.Errorf("%s: the datastore answered a read", name)
			}
		}
		// and the right certificate works, so the refusals above mean something
		cli, err := c.DatastoreClient(c.AdminDatastoreTLS())
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := cli.Get(ctx, "/registry/namespaces/default"); err != nil {
			t.Fatalf("valid client refused: %v", err)
		}
	})

	t.Run("apiserver-refuses-anonymous-except-health", func(t *testing.T) {
		pool := x509.NewCertPool()
		ca, err := os.ReadFile(c.Spec.DataDir.ClusterCA().Cert)
		if err != nil {
			t.Fatal(err)
		}
		pool.AppendCertsFromPEM(ca)
		anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
		for path, want := range map[string]int{
			"/api/v1/namespaces": http.StatusUnauthorized,
			"/api/v1/secrets":    http.StatusUnauthorized,
			"/version":           http.StatusUnauthorized,
			"/readyz":            http.StatusOK,
			"/livez":             http.StatusOK,
			"/healthz":           http.StatusOK,
		} {
			resp, err := anon.Get(c.Spec.APIServerURL() + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("anonymous GET %s: %d, want %d", path, resp.StatusCode, want)
			}
		}
	})

	t.Run("secrets-encrypted-at-rest", func(t *testing.T) {
		ns := newNamespace(t, c.Client)
		plain := "plain-text-canary-" + randSuffix()
		_, err := c.Client.CoreV1().Secrets(ns).Create(context.Background(), &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "canary"},
			StringData: map[string]string{"password": plain},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cli, err := c.DatastoreClient(c.AdminDatastoreTLS())
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := cli.Get(ctx, "/registry/secrets/"+ns+"/canary")
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("reading the secret from the datastore: %v (%d keys)", err, len(resp.Kvs))
		}
		raw := resp.Kvs[0].Value
		if !bytes.HasPrefix(raw, []byte("k8s:enc:secretbox:v1:")) {
			t.Errorf("stored secret does not carry the secretbox envelope: %q", raw[:min(len(raw), 40)])
		}
		if bytes.Contains(raw, []byte(plain)) {
			t.Error("the secret's value is stored in plain text")
		}
		// and the API still returns it decrypted
		s, err := c.Client.CoreV1().Secrets(ns).Get(context.Background(), "canary", metav1.GetOptions{})
		if err != nil || string(s.Data["password"]) != plain {
			t.Fatalf("reading back through the API: %v", err)
		}
		// --audit-log recorded the create at Metadata level: who and what, never the value
		waitFor(t, 10*time.Second, "the audit entry for the secret", func(context.Context) (bool, error) {
			log, _ := os.ReadFile(c.Spec.DataDir.AuditLog())
			return bytes.Contains(log, []byte(`"resource":"secrets","namespace":"`+ns+`","name":"canary"`)), nil
		})
		if log, _ := os.ReadFile(c.Spec.DataDir.AuditLog()); bytes.Contains(log, []byte(plain)) {
			t.Error("the audit log holds the secret's value")
		}
	})
}
