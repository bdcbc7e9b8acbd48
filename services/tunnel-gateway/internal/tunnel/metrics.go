package tunnel

import (
	"github.com/prometheus/client_golang/prometheus"
)

var (
	descOpen      = prometheus.NewDesc("kubesplit_gateway_sessions_open", "Node tunnels connected now.", nil, nil)
	descConnected = prometheus.NewDesc("kubesplit_gateway_tunnel_connected", "1 while the node's tunnel is connected.", []string{"node"}, nil)
	descConnects  = prometheus.NewDesc("kubesplit_gateway_tunnel_connects_total", "Tunnels the node opened (more than one: reconnects).", []string{"node"}, nil)
	descDials     = prometheus.NewDesc("kubesplit_gateway_dials_total", "Streams the apiserver opened to the node.", []string{"node"}, nil)
	descPodDials  = prometheus.NewDesc("kubesplit_gateway_pod_dials_total", "Streams the apiserver opened to pods on the node (webhooks, aggregated APIs, proxy).", []string{"node"}, nil)
	descDialFail  = prometheus.NewDesc("kubesplit_gateway_dial_failures_total", "Streams to the node that failed to open.", []string{"node"}, nil)
	descBytes     = prometheus.NewDesc("kubesplit_gateway_bytes_total", "Bytes carried through the node's tunnel.", []string{"node", "direction"}, nil)
)

// Describe implements prometheus.Collector.
func (g *Gateway) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descOpen, descConnected, descConnects, descDials, descPodDials, descDialFail, descBytes} {
		ch <- d
	}
}

// Collect implements prometheus.Collector from the same per-node view as /debug/tunnels.
func (g *Gateway) Collect(ch chan<- prometheus.Metric) {
	open := 0
	for node, s := range g.Snapshot() {
		connected := 0.0
		if s.Connected {
			connected = 1
			open++
		}
		ch <- prometheus.MustNewConstMetric(descConnected, prometheus.GaugeValue, connected, node)
		ch <- prometheus.MustNewConstMetric(descConnects, prometheus.CounterValue, float64(s.Connects), node)
		ch <- prometheus.MustNewConstMetric(descDials, prometheus.CounterValue, float64(s.Dials), node)
		ch <- prometheus.MustNewConstMetric(descPodDials, prometheus.CounterValue, float64(s.PodDials), node)
		ch <- prometheus.MustNewConstMetric(descDialFail, prometheus.CounterValue, float64(s.DialFailures), node)
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(s.BytesToNode), node, "to_node")
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(s.BytesFromNode), node, "from_node")
	}
	ch <- prometheus.MustNewConstMetric(descOpen, prometheus.GaugeValue, float64(open))
}
