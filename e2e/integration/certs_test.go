package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
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
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/e2e/hostcluster"
	"github.com/kubesplit/kubesplit/pkg/bootstrap"
	"github.com/kubesplit/kubesplit/pkg/layout"
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
	const validity = 40 * time.Second
	c := hostcluster.Start(t, hostcluster.Options{
		Renewal: bootstrap.Renewal{Validity: 48 * time.Hour},
		Extra: map[string][]string{localcluster.Controllers: {
			"--cert-validity=" + validity.String(), "--cert-check-interval=5s"}},
	})
	d := c.Spec.DataDir
	ports := c.Spec.Ports
	t.Cleanup(func() {
		if dir := os.Getenv("KUBESPLIT_TEST_LOG_DIR"); dir != "" {
			for _, r := range localcluster.Roles {
				_ = os.WriteFile(filepath.Join(dir, "certs-"+r+".log"), []byte(c.Log(r)), 0o644)
			}
		}
	})
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
	// the admin kubeconfig is renewed too (into short-lived certificates
	// here): read it again for each request, as its user would. (The
	// apiserver checks a client certificate's expiry at every request, and
	// client-go looks at renewed files at each new connection and every 5
	// minutes: in production a certificate is renewed 90 days early, here it
	// lasts less than those 5 minutes, so a long-lived connection would keep
	// an expired one.)
	admin := func() kubernetes.Interface {
		cfg, err := clientcmd.BuildConfigFromFlags("", d.Kubeconfig(layout.Admin))
		if err != nil {
			t.Fatal(err)
		}
		return kubernetes.NewForConfigOrDie(rest.CopyConfig(cfg))
	}
	// which identity each serial number was, to name a role that presents
	// an expired certificate (the apiserver logs only the serial)
	var serialsMu sync.Mutex
	serials := map[string]string{}
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	go func() {
		for watchCtx.Err() == nil {
			for _, crt := range bootstrap.Certificates(d) {
				if crt.Err == nil {
					serialsMu.Lock()
					serials["SN="+crt.Serial] = crt.Name
					serialsMu.Unlock()
				}
			}
			time.Sleep(500 * time.Millisecond)
		}
	}()
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
			_, err := admin().CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
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
		// every role loads what is on disk now (in start order, so the
		// controllers do not lose the apiserver while they start their
		// loops, which upstream treats as fatal); by the time it reconnects
		// below, that has expired: only a role that reloads gets through
		for _, r := range localcluster.Roles {
			restart(t, c, r)
		}
		time.Sleep(validity + 15*time.Second)
		// the apiserver dials the datastore again, and the scheduler,
		// controllers and gateway dial the apiserver again
		// (what is logged from here on counts: for the datastore, from its
		// restart, which the running apiserver's etcd client must follow with
		// a valid certificate; for the others, from the apiserver's restart,
		// after which every connection to it is new. Before that, a role's
		// long-lived connection may carry a certificate that expired on it:
		// the apiserver checks expiry at each request, and client-go closes
		// old connections when it notices a renewal, at a new connection or
		// every 5 minutes, longer than these certificates last.)
		offsets := map[string]int{localcluster.Datastore: len(c.Log(localcluster.Datastore))}
		restart(t, c, localcluster.Datastore)
		for _, r := range localcluster.Roles[1:] {
			offsets[r] = len(c.Log(r))
		}
		restart(t, c, localcluster.APIServer)
		since := time.Now()
		// the scheduler and controllers exit when they cannot renew their
		// lease for 10 s (upstream); what runs them restarts them, so does this
		for _, r := range []string{localcluster.Scheduler, localcluster.Controllers} {
			select {
			case <-c.Proc(r).Done():
				t.Logf("%s exited while the apiserver restarted (%v); starting it again", r, c.Proc(r).Err())
				c.Restart(r)
			default:
			}
		}
		for _, lease := range []string{"kube-scheduler", "kube-controller-manager"} {
			var last string
			err := wait.PollUntilContextTimeout(context.Background(), time.Second, 60*time.Second, true, func(ctx context.Context) (bool, error) {
				l, err := admin().CoordinationV1().Leases("kube-system").Get(ctx, lease, metav1.GetOptions{})
				if err != nil {
					last = err.Error()
					return false, nil
				}
				last = fmt.Sprintf("holder %v renewed %v (apiserver ready at %s)", ptr.Deref(l.Spec.HolderIdentity, ""), l.Spec.RenewTime, since.Format(time.RFC3339Nano))
				return l.Spec.RenewTime != nil && l.Spec.RenewTime.After(since), nil
			})
			if err != nil {
				t.Fatalf("%s not renewed after the apiserver restarted: %s", lease, last)
			}
		}
		// every connection to the datastore and the apiserver is new since
		// their restart, made with what each role reads now: none may
		// present an expired certificate
		for _, r := range localcluster.Roles {
			for _, bad := range []string{"certificate has expired", "expired certificate", "Unauthorized"} {
				for _, line := range linesOf(c.Log(r)[offsets[r]:], bad) {
					serialsMu.Lock()
					who := "an unknown certificate"
					for sn, name := range serials {
						if strings.Contains(line, sn+",") {
							who = name
						}
					}
					serialsMu.Unlock()
					t.Errorf("%s logged %q (%s):\n%s", r, bad, who, line)
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

// linesOf returns the lines of s that contain sub.
func linesOf(s, sub string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return out
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
