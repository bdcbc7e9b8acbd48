package suite

import (
	"context"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubesplit/kubesplit/roles"
	"github.com/kubesplit/kubesplit/testcluster"
)

// TestSmokeOnEveryBackend runs the same scenario on each datastore backend:
// start-up manifests applied, a Deployment served through its Service by
// DNS name, logs through the tunnel, and acknowledged writes that survive a
// restart of the datastore. The PostgreSQL cluster's node runs kube-proxy
// (--service-proxy iptables), the others the default eBPF proxy, so that
// both serve the Service by DNS name (UDP to CoreDNS, then TCP).
func TestSmokeOnEveryBackend(t *testing.T) {
	for _, b := range []testcluster.Backend{testcluster.BackendSQLite, testcluster.BackendEtcd, testcluster.BackendPostgres} {
		t.Run(string(b), func(t *testing.T) {
			opts := []testcluster.Option{testcluster.WithBackend(b), testcluster.WithManifests("testdata/team.yaml")}
			proxy := "ebpf"
			if b == testcluster.BackendPostgres {
				proxy = "iptables"
				opts = append(opts, testcluster.WithNodeArgs("--service-proxy", proxy))
			}
			c := run(t, opts...)
			ctx := context.Background()
			cs := c.Client()

			cm, err := cs.CoreV1().ConfigMaps("team-a").Get(ctx, "settings", metav1.GetOptions{})
			if err != nil || cm.Data["greeting"] != "hello" {
				t.Fatalf("start-up manifest not applied: %v %v", cm, err)
			}
			if got := c.Nodes(); len(got) != 1 || got[0] != "node-1" {
				t.Fatalf("nodes %v", got)
			}
			// the gateway runs with its CPU weight from roles/
			gw, err := c.Container(testcluster.TunnelGateway).Inspect(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if want := (roles.Wiring{}).Role(roles.TunnelGateway).CPUShares; gw.HostConfig.CPUShares != int64(want) {
				t.Errorf("the gateway's CPU shares %d, want %d (roles/)", gw.HostConfig.CPUShares, want)
			}
			if b == testcluster.BackendPostgres {
				// the rows are in PostgreSQL, not in a file of the datastore
				in, err := c.Container(testcluster.Postgres).Inspect(ctx)
				if err != nil {
					t.Fatal(err)
				}
				pw := ""
				for _, e := range in.Config.Env {
					if v, ok := strings.CutPrefix(e, "POSTGRES_PASSWORD="); ok {
						pw = v
					}
				}
				out, err := c.Exec(ctx, testcluster.Postgres, "env", "PGPASSWORD="+pw, "psql", "-h", "127.0.0.1", "-U", "kubesplit", "-d", "kubesplit", "-tAc",
					"select count(*) from kine where name = '/registry/configmaps/team-a/settings'")
				if err != nil || strings.TrimSpace(out) == "0" {
					t.Fatalf("kine table in PostgreSQL: %q %v", out, err)
				}
			}

			deployWeb(t, cs, 1, 300)
			if got := fetchWeb(t, cs, "client", ""); !strings.HasPrefix(got, "web-") {
				t.Fatalf("served by %q", got)
			}
			// and by the proxy the node was meant to run
			svc, err := cs.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cmd := []string{"kubesplit-node", "debug", "services"}
			if proxy == "iptables" {
				cmd = []string{"iptables", "-w", "-t", "nat", "-S", "KUBE-SERVICES"}
			}
			if out, err := c.Exec(ctx, "node-1", cmd...); err != nil || !strings.Contains(out, svc.Spec.ClusterIP) {
				t.Fatalf("%s proxy: %v has no rule for web's ClusterIP %s: %v\n%s", proxy, cmd, svc.Spec.ClusterIP, err, out)
			}
			writeConfigMaps(t, cs, "smoke", 10)
			if err := c.Restart(ctx, testcluster.Datastore); err != nil {
				t.Fatal(err)
			}
			if n := countConfigMaps(t, cs, "smoke"); n != 10 {
				t.Fatalf("%d of 10 acknowledged writes left after the datastore restarted", n)
			}
			logs, err := c.Logs(ctx, testcluster.Datastore)
			if err != nil || !strings.Contains(logs, string(b)) {
				t.Fatalf("the datastore's log does not mention its %s backend: %v", b, err)
			}
		})
	}
}
