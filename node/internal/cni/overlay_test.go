package cni

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func node(name, cidr, mac, ip string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{}}, Spec: corev1.NodeSpec{PodCIDR: cidr}}
	if mac != "" {
		n.Annotations[AnnotationVTEPMAC] = mac
	}
	if ip != "" {
		n.Annotations[AnnotationNodeIP] = ip
	}
	return n
}

func TestPeers(t *testing.T) {
	deleting := node("going", "10.42.9.0/24", "aa:bb:cc:dd:ee:09", "172.18.0.9")
	deleting.DeletionTimestamp = &metav1.Time{}
	got := peers("self", []*corev1.Node{
		node("self", "10.42.0.0/24", "aa:bb:cc:dd:ee:00", "172.18.0.2"),
		node("b", "10.42.1.0/24", "aa:bb:cc:dd:ee:01", "172.18.0.3"),
		node("no-cidr", "", "aa:bb:cc:dd:ee:02", "172.18.0.4"),
		node("no-vtep", "10.42.3.0/24", "", "172.18.0.5"),
		node("bad-ip", "10.42.4.0/24", "aa:bb:cc:dd:ee:04", "not-an-ip"),
		deleting,
	})
	if len(got) != 1 {
		t.Fatalf("want only node b as a peer, got %v", got)
	}
	p, ok := got["10.42.1.0/24"]
	if !ok || p.name != "b" || p.vtep.String() != "aa:bb:cc:dd:ee:01" || p.ip.String() != "172.18.0.3" || p.podCIDR.IP.String() != "10.42.1.0" {
		t.Fatalf("peer b wrong: %+v", p)
	}
}
