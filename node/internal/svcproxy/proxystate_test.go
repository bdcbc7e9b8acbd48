package svcproxy

import (
	"maps"
	"reflect"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/kubesplit/kubesplit/node/internal/svcproxy/datapath"
)

// TestProxyStateIncremental drives the per-Service recompilation the way
// informer events do, and checks that the writes a sync owes the datapath
// are exactly what changed, and that the incremental state always equals a
// full Compile of the same cluster.
func TestProxyStateIncremental(t *testing.T) {
	cluster := map[string]*corev1.Service{}
	eps := map[string][]*discoveryv1.EndpointSlice{}
	compile := func(key string) (datapath.Table, []NodePort) {
		svc, ok := cluster[key]
		if !ok {
			return nil, nil
		}
		return CompileService(node, svc, eps[key])
	}
	st := newProxyState()
	sync := func(keys ...string) (set []datapath.Frontend, del []datapath.Frontend) {
		t.Helper()
		for _, k := range keys {
			st.update(k, compile)
		}
		set = slices.SortedFunc(maps.Keys(st.pendingSet), cmpFrontend)
		del = slices.SortedFunc(maps.Keys(st.pendingDel), cmpFrontend)
		st.applied()
		var all []*corev1.Service
		var allEps []*discoveryv1.EndpointSlice
		for k, s := range cluster {
			all = append(all, s)
			allEps = append(allEps, eps[k]...)
		}
		full := Compile(node, all, allEps)
		if !reflect.DeepEqual(st.sockets, full.Sockets) {
			t.Fatalf("incremental state %v, full compile %v", st.sockets, full.Sockets)
		}
		if nps := st.nodePorts(); !reflect.DeepEqual(nps, full.NodePorts) {
			t.Fatalf("incremental NodePorts %v, full compile %v", nps, full.NodePorts)
		}
		return set, del
	}
	want := func(what string, got []datapath.Frontend, w ...datapath.Frontend) {
		t.Helper()
		if !slices.Equal(got, w) {
			t.Errorf("%s: %v, want %v", what, got, w)
		}
	}

	// a Service with two ports and a NodePort
	web := service("web", "10.96.0.10", []corev1.ServicePort{tcpPort("http", 80), tcpPort("https", 443)}, func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeNodePort
		s.Spec.Ports[0].NodePort = 30080
	})
	cluster["ns/web"] = web
	eps["ns/web"] = []*discoveryv1.EndpointSlice{slice("web", "web-1", map[string]int32{"http": 8080, "https": 8443}, corev1.ProtocolTCP,
		ep{ip: "10.42.0.5", node: node, ready: true})}
	set, del := sync("ns/web")
	want("add: set", set, fe("10.96.0.10", 80, datapath.TCP), fe("10.96.0.10", 443, datapath.TCP))
	want("add: del", del)

	// a second Service does not rewrite the first
	cluster["ns/db"] = service("db", "10.96.0.20", []corev1.ServicePort{tcpPort("", 5432)})
	set, del = sync("ns/db")
	want("second: set", set, fe("10.96.0.20", 5432, datapath.TCP))
	want("second: del", del)

	// a port removed: its frontend deleted, the other port's rewritten
	// (Patch skips it: unchanged)
	web.Spec.Ports = web.Spec.Ports[:1]
	set, del = sync("ns/web")
	want("port removed: set", set, fe("10.96.0.10", 80, datapath.TCP))
	want("port removed: del", del, fe("10.96.0.10", 443, datapath.TCP))

	// removed and added back before the sync: set, not deleted
	delete(cluster, "ns/db")
	st.update("ns/db", compile)
	cluster["ns/db"] = service("db", "10.96.0.20", []corev1.ServicePort{tcpPort("", 5432)})
	set, del = sync("ns/db")
	want("re-added: set", set, fe("10.96.0.20", 5432, datapath.TCP))
	want("re-added: del", del)

	// an external IP claimed by both: deleting the Service that does not
	// hold it leaves it
	cluster["ns/db"].Spec.ExternalIPs = []string{"192.0.2.1"}
	web.Spec.ExternalIPs = []string{"192.0.2.1"}
	web.Spec.Ports = []corev1.ServicePort{tcpPort("http", 5432)}
	eps["ns/web"] = []*discoveryv1.EndpointSlice{slice("web", "web-1", map[string]int32{"http": 8080}, corev1.ProtocolTCP,
		ep{ip: "10.42.0.5", node: node, ready: true})}
	st.update("ns/db", compile)
	st.update("ns/web", compile) // compiled last: web holds 192.0.2.1:5432
	st.applied()
	delete(cluster, "ns/db")
	set, del = sync("ns/db")
	want("db deleted: set", set)
	want("db deleted: del", del, fe("10.96.0.20", 5432, datapath.TCP))

	// the Service deleted: all of it goes, NodePorts too
	delete(cluster, "ns/web")
	delete(eps, "ns/web")
	set, del = sync("ns/web")
	want("deleted: set", set)
	want("deleted: del", del, fe("10.96.0.10", 5432, datapath.TCP), fe("192.0.2.1", 5432, datapath.TCP))
	if len(st.sockets) != 0 || len(st.nodePorts()) != 0 || len(st.bySvc) != 0 {
		t.Errorf("state left after every Service was deleted: %v %v %v", st.sockets, st.nodePorts(), st.bySvc)
	}
}

func cmpFrontend(a, b datapath.Frontend) int {
	if c := a.Addr.Compare(b.Addr); c != 0 {
		return c
	}
	if a.Port != b.Port {
		return int(a.Port) - int(b.Port)
	}
	return int(a.Proto) - int(b.Proto)
}
