package servicelb

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func node(name, internal, external string, labels map[string]string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: internal}, {Type: corev1.NodeHostName, Address: name}}
	if external != "" {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: external})
	}
	return n
}

func forwarderPod(svc *corev1.Service, name, nodeName string, ready bool) *corev1.Pod {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: name, Labels: ownerLabels(svc.Namespace, svc.Name)},
		Spec:       corev1.PodSpec{NodeName: nodeName},
		Status: corev1.PodStatus{Phase: corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}},
	}
}

func slice(svc *corev1.Service, name string, port int32, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: svc.Namespace, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: &port, Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints:   eps,
	}
}

func endpoint(ip, nodeName string, ready bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{ip}, NodeName: &nodeName, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}
}

func ips(ing []corev1.LoadBalancerIngress) []string {
	var out []string
	for _, i := range ing {
		out = append(out, i.IP)
	}
	return out
}

func TestIngress(t *testing.T) {
	t.Parallel()
	svc := lbService("default", "web")
	nodes := map[string]*corev1.Node{
		"a": node("a", "10.251.0.4", "", nil),
		"b": node("b", "10.251.0.3", "203.0.113.9", nil), // an ExternalIP is what clients use
		"c": node("c", "10.251.0.5", "", nil),            // its forwarder is not ready
		"d": node("d", "10.251.0.6", "", map[string]string{NodeLabel: "false"}),
	}
	pods := []*corev1.Pod{forwarderPod(svc, "p-a", "a", true), forwarderPod(svc, "p-b", "b", true),
		forwarderPod(svc, "p-c", "c", false), forwarderPod(svc, "p-d", "d", true), forwarderPod(svc, "p-x", "gone", true)}
	ing := ingress(svc, pods, nodes, false, nil)
	if got, want := ips(ing), []string{"10.251.0.4", "203.0.113.9"}; !slices.Equal(got, want) {
		t.Errorf("ingress %v, want %v (ready forwarders on eligible nodes, ExternalIP first)", got, want)
	}
	for _, i := range ing {
		if i.IPMode == nil || *i.IPMode != corev1.LoadBalancerIPModeProxy {
			t.Errorf("%s: ipMode %v, want Proxy (kube-proxy must not capture the node's own address)", i.IP, i.IPMode)
		}
	}
	// opt-in: only labelled nodes
	nodes["a"].Labels = map[string]string{NodeLabel: "true"}
	if got := ips(ingress(svc, pods, nodes, true, nil)); !slices.Equal(got, []string{"10.251.0.4"}) {
		t.Errorf("with node a opted in: %v, want only a", got)
	}
}

func TestLocalIngressAndEndpoints(t *testing.T) {
	t.Parallel()
	svc := lbService("default", "web")
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	ports, _ := forwardedPorts(svc)
	eps := localEndpoints(ports, []*discoveryv1.EndpointSlice{
		slice(svc, "s1", 8080, endpoint("10.42.0.7", "a", true), endpoint("10.42.1.3", "b", false)),
		slice(svc, "s2", 8080, endpoint("10.42.0.8", "a", true)),
	})
	if got := eps["a"].Encode(); got != `{"10201":["10.42.0.7:8080","10.42.0.8:8080"]}` {
		t.Errorf("node a's endpoints %s", got)
	}
	if eps["b"].Any() {
		t.Errorf("node b has only a not-ready endpoint, got %v", eps["b"])
	}
	nodes := map[string]*corev1.Node{"a": node("a", "10.251.0.4", "", nil), "b": node("b", "10.251.0.3", "", nil)}
	pods := []*corev1.Pod{forwarderPod(svc, "p-a", "a", true), forwarderPod(svc, "p-b", "b", true)}
	if got := ips(ingress(svc, pods, nodes, false, eps)); !slices.Equal(got, []string{"10.251.0.4"}) {
		t.Errorf("Local: %v, want only node a, which has a ready endpoint", got)
	}
}

func TestUnschedulableNamesTheNode(t *testing.T) {
	t.Parallel()
	p := &corev1.Pod{Spec: corev1.PodSpec{Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{"a"}}}}}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled,
			Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
			Message: "0/2 nodes are available: 1 node(s) didn't have free ports for the requested pod ports."}}}}
	n, why := unschedulable(p)
	if n != "a" || why == "" {
		t.Fatalf("unschedulable = %q, %q", n, why)
	}
	svc := lbService("default", "web")
	ports, _ := forwardedPorts(svc)
	if got := portWarning(n, why, ports); got != "node a does not serve: port 80/TCP already used there by another pod (a hostPort or another LoadBalancer Service)" {
		t.Errorf("warning %q", got)
	}
}
