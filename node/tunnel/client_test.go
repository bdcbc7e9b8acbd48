package tunnel

import (
	"net/netip"
	"testing"
)

func TestAllowed(t *testing.T) {
	t.Parallel()
	cidr := netip.MustParsePrefix("10.42.1.0/24")
	local := []netip.Addr{netip.MustParseAddr("10.42.1.1"), netip.MustParseAddr("10.200.0.129")}
	c := Config{Ports: []int{10250},
		PodCIDR:    func() (netip.Prefix, bool) { return cidr, true },
		LocalAddrs: func() []netip.Addr { return local }}
	for addr, want := range map[string]bool{
		"127.0.0.1:10250": true,  // the kubelet
		"127.0.0.1:10249": false, // kube-proxy's metrics: not the kubelet
		"127.0.0.1:22":    false,
		"10.42.1.7:8443":  true, // a pod of this node, any port
		"10.42.1.7:80":    true,
		"10.42.1.1:10250": false, // the bridge's address is the node itself
		"10.42.1.0:80":    false, // the overlay device's address
		"10.42.1.255:80":  false,
		"10.42.2.7:8443":  false, // another node's pod
		"10.200.0.129:22": false, // the node's own address
		"10.200.0.2:8131": false, // the gateway, the control plane
		"10.42.1.7:0":     false,
		"[::1]:10250":     false,
		"localhost:10250": false,
	} {
		if got := c.allowed("tcp", addr); got != want {
			t.Errorf("allowed(%s) = %v, want %v", addr, got, want)
		}
	}
	if c.allowed("udp", "10.42.1.7:53") {
		t.Error("udp allowed")
	}
	// before the pod range is known, only the kubelet
	c.PodCIDR = func() (netip.Prefix, bool) { return netip.Prefix{}, false }
	if c.allowed("tcp", "10.42.1.7:8443") || !c.allowed("tcp", "127.0.0.1:10250") {
		t.Error("without a pod range")
	}
}
