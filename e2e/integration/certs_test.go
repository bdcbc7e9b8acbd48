package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubesplit/kubesplit/e2e/hostcluster"
	"github.com/kubesplit/kubesplit/pkg/bootstrap"
	"github.com/kubesplit/kubesplit/pkg/localcluster"
)

// TestCertificateRenewal: a cluster whose leaf certificates have two days
// left gets them renewed by the controllers at start and again while it
// runs (renewed certificates here last 45 s, so they keep coming due and
// really expire); every role serves its renewed certificate without a
// restart, none stops serving, and after the certificates the roles loaded
// have expired, fresh connections between every pair of roles still work.
func TestCertificateRenewal(t *testing.T) {
	needLong(t)
	const validity = 45 * time.Second
	c := hostcluster.Start(t, hostcluster.Options{
		Renewal: bootstrap.Renewal{Validity: 48 * time.Hour},
		Extra: map[string][]string{localcluster.Controllers: {
			"--cert-validity=" + validity.String(), "--cert-check-interval=10s"}},
	})
	d := c.Spec.DataDir
	ports := c.Spec.Ports
	caPool := func(path string) *x509.CertPool {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		p := x509.NewCertPool()
		p.AppendCertsFromPEM(b)
		return p
	}
	clusterCA, datastoreCA := caPool(d.ClusterCA().Cert), caPool(d.DatastoreCA().Cert)
	dsClient, err := tls.LoadX509KeyPair(d.DatastoreClient().Cert, d.DatastoreClient().Key)
	if err != nil {
		t.Fatal(err)
	}
	// what each role presents to a new connection, verified against its CA
	served := map[string]func() (*x509.Certificate, error){}
	for name, ep := range map[string]struct {
		port   int
		pool   *x509.CertPool
		client []tls.Certificate
	}{
		"apiserver":      {ports.APIServer, clusterCA, nil},
		"tunnel-gateway": {ports.GatewayNodes, clusterCA, nil},
		"datastore":      {ports.Datastore, datastoreCA, []tls.Certificate{dsClient}},
		"scheduler":      {ports.Scheduler, clusterCA, nil},
		"controllers":    {ports.Controllers, clusterCA, nil},
	} {
		served[name] = func() (*x509.Certificate, error) {
			conn, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(ep.port), &tls.Config{RootCAs: ep.pool, Certificates: ep.client, ServerName: "localhost"})
			if err != nil {
				return nil, err
			}
			defer conn.Close()
			return conn.ConnectionState().PeerCertificates[0], nil
		}
	}
	initial := map[string]*x509.Certificate{}
	for name, get := range served {
		// the first check may already have run: take what is served now and
		// look at its lifetime, not at a change
		cert, err := get()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		initial[name] = cert
	}

	// no role stops serving while certificates are renewed under it
	var failures atomic.Int64
	var lastErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := c.Client.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
			cancel()
			for name, get := range served {
				if err != nil {
					break
				}
				if _, err2 := get(); err2 != nil {
					err = err2
					lastErr.Store(name + ": " + err.Error())
				}
			}
			if err != nil {
				failures.Add(1)
				if lastErr.Load() == nil {
					lastErr.Store(err.Error())
				}
			}
		}
	}()

	t.Run("renewed-at-start-and-again-while-running", func(t *testing.T) {
		seen := map[string]map[string]bool{} // role → serials served
		waitFor(t, 150*time.Second, "every role to serve a renewed certificate twice", func(context.Context) (bool, error) {
			all := true
			for name, get := range served {
				cert, err := get()
				if err != nil {
					return false, nil
				}
				if time.Until(cert.NotAfter) > validity {
					all = false // still the two-day one
					continue
				}
				if seen[name] == nil {
					seen[name] = map[string]bool{}
				}
				seen[name][cert.SerialNumber.String()] = true
				if len(seen[name]) < 2 {
					all = false
				}
			}
			return all, nil
		})
		for name, cert := range initial {
			if time.Until(cert.NotAfter) > validity && seen[name][cert.SerialNumber.String()] {
				t.Errorf("%s still serves its first certificate", name)
			}
		}
		// every leaf on disk is a renewed one
		for _, crt := range bootstrap.Certificates(d) {
			if crt.Err != nil {
				t.Fatalf("%s: %v", crt.Name, crt.Err)
			}
			if !crt.IsCA && time.Until(crt.NotAfter) > validity {
				t.Errorf("%s was not renewed: valid until %s", crt.Name, crt.NotAfter)
			}
		}
		if !strings.Contains(c.Log(localcluster.Controllers), "renewed certificate") {
			t.Error("the controllers did not log their renewals")
		}
	})
	close(stop)
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Errorf("%d probes failed while certificates were renewed; last: %v", n, lastErr.Load())
	}

	t.Run("certs-check-shows-the-new-expiries", func(t *testing.T) {
		out, err := exec.Command(filepath.Join(c.Spec.BinDir, "kubesplit"), "certs", "check", "--data-dir", string(d), "--renew-before", "1s").CombinedOutput()
		if err != nil {
			t.Fatalf("certs check: %v\n%s", err, out)
		}
		for _, name := range []string{"apiserver.crt", "datastore-client.crt", "scheduler.kubeconfig", "admin.kubeconfig"} {
			line := lineOf(string(out), name)
			if line == "" || strings.Contains(line, "EXPIRED") {
				t.Errorf("%s: %q", name, line)
			}
		}
	})

	t.Run("fresh-connections-after-the-loaded-certificates-expired", func(t *testing.T) {
		// every role loads what is on disk now; by the time it reconnects
		// below, that has expired: only reloading roles get through
		for _, r := range []string{localcluster.Scheduler, localcluster.Controllers, localcluster.TunnelGateway, localcluster.APIServer} {
			restart(t, c, r)
		}
		time.Sleep(validity + 15*time.Second)
		// the apiserver dials the datastore again, and the scheduler,
		// controllers and gateway dial the apiserver again
		restart(t, c, localcluster.Datastore)
		restart(t, c, localcluster.APIServer)
		since := time.Now()
		for _, lease := range []string{"kube-scheduler", "kube-controller-manager"} {
			waitFor(t, 60*time.Second, lease+" renewed after the restart", func(ctx context.Context) (bool, error) {
				l, err := c.Client.CoordinationV1().Leases("kube-system").Get(ctx, lease, metav1.GetOptions{})
				return err == nil && l.Spec.RenewTime != nil && l.Spec.RenewTime.After(since), nil
			})
		}
		for _, r := range localcluster.Roles {
			for _, bad := range []string{"certificate has expired", "expired certificate", "Unauthorized"} {
				if line := lineOf(c.Log(r), bad); line != "" {
					t.Errorf("%s logged %q:\n%s", r, bad, line)
				}
			}
		}
		if c.Proc(localcluster.TunnelGateway).Pid() == 0 {
			t.Error("the gateway is not running")
		}
	})
}

func restart(t *testing.T, c *hostcluster.Cluster, role string) {
	t.Helper()
	if err := c.Proc(role).Stop(10 * time.Second); err != nil {
		t.Fatalf("stopping %s: %v", role, err)
	}
	c.Restart(role)
}

// lineOf returns the first line of s that contains sub.
func lineOf(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
