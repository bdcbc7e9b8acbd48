// Package cni is the node's pod network: a VXLAN overlay kept with netlink
// (one device per node; for each peer node a route to its pod range, a
// neighbour entry for its VTEP and an FDB entry to its node IP, the scheme
// of flannel's VXLAN backend), the CNI configuration that attaches pods
// through the standard bridge and host-local plugins, and the masquerade
// rule for pod traffic leaving the cluster.
//
// The overlay is ours rather than flannel's: flannel brings its own
// datastore abstraction, subnet leases and daemon, while all kubesplit needs
// is node.spec.podCIDR (allocated by the controller-manager) and two
// annotations, reconciled from a Node watch.
package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

const (
	// Device is the VXLAN device; Bridge is the pods' bridge.
	Device = "ks-vxlan"
	Bridge = "ks0"
	// AnnotationVTEPMAC and AnnotationNodeIP tell peers how to reach this node's pods.
	AnnotationVTEPMAC = "kubesplit.io/vtep-mac"
	AnnotationNodeIP  = "kubesplit.io/node-ip"
	// ConfFile is the CNI configuration the container runtime reads.
	ConfFile    = "10-kubesplit.conflist"
	vxlanHeader = 50
	resync      = 30 * time.Second
)

// Overlay keeps this node's part of the pod network.
type Overlay struct {
	Client      kubernetes.Interface
	NodeName    string
	NodeIP      net.IP
	ClusterCIDR string
	VNI, Port   int
	CNIConfDir  string
	Log         *slog.Logger
	// BeforeReady, if set, runs before the CNI configuration is written,
	// i.e. before the node can turn Ready (the agent waits there for
	// kube-proxy's first sync).
	BeforeReady func(ctx context.Context)

	link     netlink.Link
	podCIDR  *net.IPNet
	clusterN *net.IPNet
	// known is podCIDR for other goroutines (the tunnel), once it is set
	known atomic.Pointer[netip.Prefix]
}

// PodCIDR is this node's pod range, once the overlay has it.
func (o *Overlay) PodCIDR() (netip.Prefix, bool) {
	p := o.known.Load()
	if p == nil {
		return netip.Prefix{}, false
	}
	return *p, true
}

// Run sets the overlay up once this node has a pod range, then follows the
// Node list until ctx ends.
func (o *Overlay) Run(ctx context.Context) error {
	_, cn, err := net.ParseCIDR(o.ClusterCIDR)
	if err != nil {
		return err
	}
	o.clusterN = cn
	if o.podCIDR, err = o.waitPodCIDR(ctx); err != nil {
		return err
	}
	if p, err := netip.ParsePrefix(o.podCIDR.String()); err == nil {
		o.known.Store(&p)
	}
	mtu, err := o.setupDevice()
	if err != nil {
		return fmt.Errorf("VXLAN device: %w", err)
	}
	if err := o.annotate(ctx); err != nil {
		return fmt.Errorf("announcing this node's VTEP: %w", err)
	}
	if err := ensureMasquerade(o.ClusterCIDR); err != nil {
		return err
	}
	if o.BeforeReady != nil {
		o.BeforeReady(ctx)
	}
	if err := o.writeCNIConfig(mtu); err != nil {
		return err
	}
	o.Log.Info("pod network ready", "podCIDR", o.podCIDR, "vtep", o.link.Attrs().HardwareAddr, "mtu", mtu)

	factory := informers.NewSharedInformerFactory(o.Client, resync)
	nodes := factory.Core().V1().Nodes()
	kick := make(chan struct{}, 1)
	trigger := func(any) {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	if _, err := nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: trigger, DeleteFunc: trigger, UpdateFunc: func(_, n any) { trigger(n) },
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), nodes.Informer().HasSynced) {
		return ctx.Err()
	}
	tick := time.NewTicker(resync)
	defer tick.Stop()
	for {
		list, err := nodes.Lister().List(labels.Everything())
		if err == nil {
			err = o.Reconcile(list)
		}
		if err != nil {
			o.Log.Warn("pod network reconcile failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
		case <-tick.C:
		}
	}
}

func (o *Overlay) waitPodCIDR(ctx context.Context) (*net.IPNet, error) {
	for {
		n, err := o.Client.CoreV1().Nodes().Get(ctx, o.NodeName, metav1.GetOptions{})
		if err == nil && n.Spec.PodCIDR != "" {
			_, c, err := net.ParseCIDR(n.Spec.PodCIDR)
			return c, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// setupDevice creates (or keeps) the VXLAN device bound to the node IP.
func (o *Overlay) setupDevice() (int, error) {
	parent, err := linkWithIP(o.NodeIP)
	if err != nil {
		return 0, err
	}
	mtu := parent.Attrs().MTU - vxlanHeader
	want := &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{Name: Device, MTU: mtu},
		VxlanId:   o.VNI, VtepDevIndex: parent.Attrs().Index, SrcAddr: o.NodeIP, Port: o.Port,
		Learning: false,
	}
	if l, err := netlink.LinkByName(Device); err == nil {
		v, ok := l.(*netlink.Vxlan)
		if ok && v.VxlanId == want.VxlanId && v.SrcAddr.Equal(want.SrcAddr) && v.Port == want.Port && v.VtepDevIndex == want.VtepDevIndex {
			o.link = l
		} else if err := netlink.LinkDel(l); err != nil {
			return 0, err
		}
	}
	if o.link == nil {
		if err := netlink.LinkAdd(want); err != nil {
			return 0, err
		}
		if o.link, err = netlink.LinkByName(Device); err != nil {
			return 0, err
		}
	}
	if o.link.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(o.link, mtu); err != nil {
			return 0, err
		}
	}
	// The device holds the pod range's network address (/32): peers route
	// replies to it, and it is this node's next hop seen from the others.
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: o.podCIDR.IP, Mask: net.CIDRMask(32, 32)}}
	addrs, err := netlink.AddrList(o.link, netlink.FAMILY_V4)
	if err != nil {
		return 0, err
	}
	has := false
	for _, a := range addrs {
		if a.IP.Equal(addr.IP) {
			has = true
		} else if err := netlink.AddrDel(o.link, &a); err != nil {
			return 0, err
		}
	}
	if !has {
		if err := netlink.AddrAdd(o.link, addr); err != nil {
			return 0, err
		}
	}
	if err := netlink.LinkSetUp(o.link); err != nil {
		return 0, err
	}
	o.link, err = netlink.LinkByName(Device)
	return mtu, err
}

func linkWithIP(ip net.IP) (netlink.Link, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if a.IP.Equal(ip) {
			return netlink.LinkByIndex(a.LinkIndex)
		}
	}
	return nil, fmt.Errorf("no interface has the node IP %s", ip)
}

func (o *Overlay) annotate(ctx context.Context) error {
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		AnnotationVTEPMAC: o.link.Attrs().HardwareAddr.String(),
		AnnotationNodeIP:  o.NodeIP.String(),
	}}})
	var err error
	for range 30 {
		if _, err = o.Client.CoreV1().Nodes().Patch(ctx, o.NodeName, types.MergePatchType, patch, metav1.PatchOptions{}); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return err
}

func (o *Overlay) writeCNIConfig(mtu int) error {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "kubesplit",
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": Bridge, "isGateway": true, "ipMasq": false, "hairpinMode": true, "mtu": mtu,
				"ipam": map[string]any{
					"type":   "host-local",
					"ranges": [][]map[string]string{{{"subnet": o.podCIDR.String()}}},
					"routes": []map[string]string{{"dst": "0.0.0.0/0"}},
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	b, _ := json.MarshalIndent(conf, "", "  ")
	path := filepath.Join(o.CNIConfDir, ConfFile)
	if old, err := os.ReadFile(path); err == nil && string(old) == string(b) {
		return nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path) // the runtime watches the directory: never show it half a file
}

// peer is what this node needs to know to reach another node's pods.
type peer struct {
	name    string
	podCIDR *net.IPNet
	vtep    net.HardwareAddr
	ip      net.IP
}

func peers(self string, nodes []*corev1.Node) map[string]peer {
	out := map[string]peer{}
	for _, n := range nodes {
		if n.Name == self || n.DeletionTimestamp != nil || n.Spec.PodCIDR == "" {
			continue
		}
		_, cidr, err := net.ParseCIDR(n.Spec.PodCIDR)
		if err != nil || cidr.IP.To4() == nil {
			continue
		}
		mac, err := net.ParseMAC(n.Annotations[AnnotationVTEPMAC])
		if err != nil {
			continue
		}
		ip := net.ParseIP(n.Annotations[AnnotationNodeIP])
		if ip == nil {
			continue
		}
		out[cidr.String()] = peer{name: n.Name, podCIDR: cidr, vtep: mac, ip: ip}
	}
	return out
}

// Reconcile makes the device's routes, neighbours and FDB entries exactly
// those of the given nodes' peers: entries of nodes that are gone are removed.
func (o *Overlay) Reconcile(nodes []*corev1.Node) error {
	want := peers(o.NodeName, nodes)
	idx := o.link.Attrs().Index
	var errs []error
	wantMAC := map[string]bool{}
	wantGW := map[string]bool{}
	for _, p := range want {
		gw := p.podCIDR.IP
		wantMAC[p.vtep.String()] = true
		wantGW[gw.String()] = true
		// FDB: the peer's VTEP MAC lives behind the peer's node IP
		if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
			Flags: netlink.NTF_SELF, IP: p.ip, HardwareAddr: p.vtep}); err != nil {
			errs = append(errs, fmt.Errorf("fdb %s: %w", p.name, err))
		}
		// ARP: the peer's gateway address has the peer's VTEP MAC
		if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
			IP: gw, HardwareAddr: p.vtep}); err != nil {
			errs = append(errs, fmt.Errorf("neighbour %s: %w", p.name, err))
		}
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: idx, Dst: p.podCIDR, Gw: gw, Flags: int(netlink.FLAG_ONLINK)}); err != nil {
			errs = append(errs, fmt.Errorf("route %s: %w", p.name, err))
		}
	}
	// remove what no current peer explains
	routes, err := netlink.RouteList(o.link, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	for _, r := range routes {
		if r.Dst == nil || r.Gw == nil {
			continue
		}
		if _, ok := want[r.Dst.String()]; !ok {
			if err := netlink.RouteDel(&r); err != nil {
				errs = append(errs, err)
			}
		}
	}
	neighs, err := netlink.NeighList(idx, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	for _, n := range neighs {
		if n.IP != nil && !wantGW[n.IP.String()] {
			if err := netlink.NeighDel(&n); err != nil {
				errs = append(errs, err)
			}
		}
	}
	fdb, err := netlink.NeighList(idx, unix.AF_BRIDGE)
	if err != nil {
		return err
	}
	for _, n := range fdb {
		if n.HardwareAddr != nil && !wantMAC[n.HardwareAddr.String()] {
			if err := netlink.NeighDel(&n); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
