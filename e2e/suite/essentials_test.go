package suite

import (
	"testing"

	"github.com/kubesplit/kubesplit/testcluster"
)

// TestEssentials starts one two-node cluster and runs on it, one after the
// other, the scenarios of what a new cluster gives out of the box and of
// the apiserver reaching pods through the nodes' tunnels. They share the
// cluster to keep CI short; each cleans up what it made, and none restarts
// a role, except the last (--disable), which runs last for that reason.
func TestEssentials(t *testing.T) {
	c := run(t, testcluster.WithNodes(2))
	for _, s := range essentials {
		if !t.Run(s.name, func(t *testing.T) { s.run(t, c) }) {
			t.Logf("scenario %s failed; going on with the next", s.name)
		}
	}
}

// essentials are TestEssentials' scenarios, in order. Each lives in its
// own file (essentials_NAME_test.go).
var essentials = []struct {
	name string
	run  func(t *testing.T, c *testcluster.Cluster)
}{
	// scenarios are added here, one line each
	{"pods-and-services-proxy", podsAndServicesProxy},
	{"webhooks", webhooks},
	{"tunnel-isolation", tunnelIsolation},
	{"metrics-server", metricsServer},
	{"servicelb", serviceLB},
	{"helm-charts", helmCharts},
	{"traefik", traefik},
	{"network-policy", networkPolicies},
	{"service-proxy-ebpf", serviceProxyEBPF},     // adds and removes a node
	{"hosted-control-plane", hostedControlPlane}, // a control plane on this one (deploy/helm), a node joining it
	{"local-storage", localStorage},              // restarts a node: keep it late
	{"disable", disabledAddons},                  // removes the addons: always last
}
