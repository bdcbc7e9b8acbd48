package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// ErrNoRoute is returned for a CONNECT target that is neither a node's
// kubelet nor an address in a node's pod range.
var ErrNoRoute = errors.New("no route")

// Target is where one CONNECT goes: through Node's tunnel to Addr, as the
// node's agent dials it.
type Target struct {
	Node string
	// Addr is 127.0.0.1:PORT for the kubelet, POD-IP:PORT for a pod.
	Addr string
	// Pod is true for a pod address.
	Pod bool
}

// Routes knows, from the Node objects alone, which node owns which
// addresses and pod ranges. What a node's agent declares when its tunnel
// opens is not trusted: a node could claim another's address.
type Routes struct {
	mu    sync.RWMutex
	nodes map[string]nodeRoutes
	// lookups rebuilt from nodes on every change
	byAddr map[netip.Addr]string
	byName map[string]string
	pods   []podRange
}

type nodeRoutes struct {
	addrs []netip.Addr
	names []string
	pods  []netip.Prefix
}

type podRange struct {
	prefix netip.Prefix
	node   string
}

// NewRoutes makes an empty table.
func NewRoutes() *Routes {
	return &Routes{nodes: map[string]nodeRoutes{}, byAddr: map[netip.Addr]string{}, byName: map[string]string{}}
}

// SetNode records (or replaces) a node's addresses and pod ranges.
func (r *Routes) SetNode(n *corev1.Node) {
	nr := nodeRoutes{names: []string{n.Name}}
	for _, a := range n.Status.Addresses {
		switch a.Type {
		case corev1.NodeInternalIP, corev1.NodeExternalIP:
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				nr.addrs = append(nr.addrs, ip.Unmap())
			}
		case corev1.NodeHostName, corev1.NodeInternalDNS, corev1.NodeExternalDNS:
			nr.names = append(nr.names, a.Address)
		}
	}
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil {
			nr.pods = append(nr.pods, p.Masked())
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nodes[n.Name] = nr
	r.rebuild()
}

// DeleteNode forgets a node.
func (r *Routes) DeleteNode(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.nodes, name)
	r.rebuild()
}

// rebuild makes the lookups; an address or range two nodes claim (a stale
// Node object, a misconfiguration) goes to neither.
func (r *Routes) rebuild() {
	r.byAddr, r.byName, r.pods = map[netip.Addr]string{}, map[string]string{}, nil
	conflict := map[any]bool{}
	for node, nr := range r.nodes {
		for _, a := range nr.addrs {
			if owner, ok := r.byAddr[a]; ok && owner != node {
				conflict[a] = true
			}
			r.byAddr[a] = node
		}
		for _, n := range nr.names {
			if owner, ok := r.byName[n]; ok && owner != node {
				conflict[n] = true
			}
			r.byName[n] = node
		}
		for _, p := range nr.pods {
			r.pods = append(r.pods, podRange{p, node})
		}
	}
	for k := range conflict {
		switch k := k.(type) {
		case netip.Addr:
			delete(r.byAddr, k)
		case string:
			delete(r.byName, k)
		}
	}
	// overlapping ranges of two nodes (one reallocated while the other's
	// Node object is stale): route neither
	bad := make([]bool, len(r.pods))
	for i := range r.pods {
		for j := i + 1; j < len(r.pods); j++ {
			if r.pods[i].node != r.pods[j].node && r.pods[i].prefix.Overlaps(r.pods[j].prefix) {
				bad[i], bad[j] = true, true
			}
		}
	}
	for i := range bad {
		if bad[i] {
			r.pods[i].node = ""
		}
	}
}

// Resolve maps a CONNECT target to a node's tunnel. A node's own address
// (or name) reaches only its kubelet ports, on the node's loopback; an
// address in a node's pod range reaches that pod on any port. Anything else
// has no route.
func (r *Routes) Resolve(host string, port int, kubeletPorts []int) (Target, error) {
	if port < 1 || port > 65535 {
		return Target{}, fmt.Errorf("%w: port %d", ErrNoRoute, port)
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	kubelet := func(node string) (Target, error) {
		if !slices.Contains(kubeletPorts, port) {
			return Target{}, fmt.Errorf("%w: port %d of node %s is not a kubelet port", ErrNoRoute, port, node)
		}
		return Target{Node: node, Addr: fmt.Sprintf("127.0.0.1:%d", port)}, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		if node, ok := r.byName[host]; ok {
			return kubelet(node)
		}
		return Target{}, fmt.Errorf("%w: %q is no node's name", ErrNoRoute, host)
	}
	ip = ip.Unmap()
	if node, ok := r.byAddr[ip]; ok {
		return kubelet(node)
	}
	for _, p := range r.pods {
		if p.prefix.Contains(ip) {
			if p.node == "" {
				return Target{}, fmt.Errorf("%w: %s is in pod ranges of two nodes", ErrNoRoute, ip)
			}
			return Target{Node: p.node, Addr: netip.AddrPortFrom(ip, uint16(port)).String(), Pod: true}, nil
		}
	}
	return Target{}, fmt.Errorf("%w: %s is no node's address and in no node's pod range", ErrNoRoute, ip)
}

// WatchNodes keeps routes in step with the cluster's Node objects until ctx
// ends (a CONNECT before the first list is in finds no route and is refused).
func WatchNodes(ctx context.Context, client kubernetes.Interface, routes *Routes, log *slog.Logger) error {
	factory := informers.NewSharedInformerFactory(client, 10*time.Minute)
	inf := factory.Core().V1().Nodes().Informer()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { setNode(routes, o) },
		UpdateFunc: func(_, o any) { setNode(routes, o) },
		DeleteFunc: func(o any) {
			if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = t.Obj
			}
			if n, ok := o.(*corev1.Node); ok {
				routes.DeleteNode(n.Name)
			}
		},
	})
	if err != nil {
		return err
	}
	go func() {
		// While the apiservers start (a hosted release: they come up after
		// the gateway) the informer's own retries back off to 30 s, and
		// every CONNECT until its first list is refused. Poll every second
		// until a list works, then start it: routes exist about as soon as
		// the API does.
		_ = wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
			_, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{Limit: 1})
			return err == nil, nil
		})
		factory.Start(ctx.Done())
		defer factory.Shutdown()
		if cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
			log.Info("following nodes' addresses and pod ranges")
		}
		<-ctx.Done()
	}()
	return nil
}

func setNode(routes *Routes, o any) {
	if n, ok := o.(*corev1.Node); ok {
		routes.SetNode(n)
	}
}
