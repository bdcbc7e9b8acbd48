package tunnel

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricsPerNode(t *testing.T) {
	g := New([]int{10250}, "kube-apiserver-egress", NewRoutes(), slog.New(slog.DiscardHandler))
	s := g.stats("node-1")
	s.Connects, s.Dials, s.DialFailures, s.BytesToNode, s.BytesFromNode = 3, 7, 1, 100, 2000
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(g)
	want := `
# HELP kubesplit_gateway_tunnel_connects_total Tunnels the node opened (more than one: reconnects).
# TYPE kubesplit_gateway_tunnel_connects_total counter
kubesplit_gateway_tunnel_connects_total{node="node-1"} 3
# HELP kubesplit_gateway_dial_failures_total Streams to the node that failed to open.
# TYPE kubesplit_gateway_dial_failures_total counter
kubesplit_gateway_dial_failures_total{node="node-1"} 1
# HELP kubesplit_gateway_bytes_total Bytes carried through the node's tunnel.
# TYPE kubesplit_gateway_bytes_total counter
kubesplit_gateway_bytes_total{direction="from_node",node="node-1"} 2000
kubesplit_gateway_bytes_total{direction="to_node",node="node-1"} 100
# HELP kubesplit_gateway_sessions_open Node tunnels connected now.
# TYPE kubesplit_gateway_sessions_open gauge
kubesplit_gateway_sessions_open 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"kubesplit_gateway_tunnel_connects_total", "kubesplit_gateway_dial_failures_total", "kubesplit_gateway_bytes_total", "kubesplit_gateway_sessions_open"); err != nil {
		t.Fatal(err)
	}
}
