package svcproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
	"sigs.k8s.io/knftables"

	"github.com/kubesplit/kubesplit/node/internal/svcproxy/datapath"
	"github.com/kubesplit/kubesplit/node/internal/syncloop"
)

// DefaultPinDir is where the node's maps and links are pinned: a bpffs the
// agent mounts in the node container's own mount namespace.
const DefaultPinDir = "/sys/fs/bpf/kubesplit"

var (
	syncSeconds = metrics.NewHistogram(&metrics.HistogramOpts{
		Subsystem: "kubesplit_service_proxy", Name: "sync_duration_seconds",
		Help:    "Time to compile Services and EndpointSlices and apply them to the eBPF maps and the NodePort table.",
		Buckets: metrics.ExponentialBuckets(0.0001, 2, 16), StabilityLevel: metrics.ALPHA,
	})
	lastSync = metrics.NewGauge(&metrics.GaugeOpts{
		Subsystem: "kubesplit_service_proxy", Name: "last_sync_timestamp_seconds",
		Help: "When the datapath last took a change.", StabilityLevel: metrics.ALPHA,
	})
	mapEntries = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Subsystem: "kubesplit_service_proxy", Name: "map_entries",
		Help: "Entries in each eBPF map (frontends, backends, affinity, reverse translation).", StabilityLevel: metrics.ALPHA,
	}, []string{"map"})
	programsAttached = metrics.NewGauge(&metrics.GaugeOpts{
		Subsystem: "kubesplit_service_proxy", Name: "programs_attached",
		Help: "Socket programs attached to the node's pod cgroup.", StabilityLevel: metrics.ALPHA,
	})
	nodePorts = metrics.NewGauge(&metrics.GaugeOpts{
		Subsystem: "kubesplit_service_proxy", Name: "node_ports",
		Help: "NodePorts with a backend in the packet path.", StabilityLevel: metrics.ALPHA,
	})
	syncErrors = metrics.NewCounter(&metrics.CounterOpts{
		Subsystem: "kubesplit_service_proxy", Name: "sync_errors_total",
		Help: "Syncs that failed (retried).", StabilityLevel: metrics.ALPHA,
	})
)

func init() {
	legacyregistry.MustRegister(syncSeconds, lastSync, mapEntries, programsAttached, nodePorts, syncErrors)
}

// Proxy is the eBPF Service proxy of one node.
type Proxy struct {
	Client   kubernetes.Interface
	NodeName string
	Log      *slog.Logger
	// MinInterval is the least time between two syncs (default 100 ms).
	MinInterval time.Duration

	dp     *datapath.Datapath
	nft    knftables.Interface
	synced chan struct{}
}

// Start checks the host, mounts bpffs at pinDir if needed, loads the
// programs (taking over the maps and links an earlier run pinned) and
// attaches them to the node's pod cgroup (cgroup v2 CGROUPROOT/kubepods).
// Its error is one line naming what is missing.
func (p *Proxy) Start(pinDir, cgroupRoot string) error {
	if err := datapath.Check(); err != nil {
		return fmt.Errorf("--service-proxy=ebpf: %w; or use --service-proxy=iptables", err)
	}
	cgs, err := datapath.NodeCgroups(cgroupRoot)
	if err != nil {
		return fmt.Errorf("--service-proxy=ebpf: %w; or use --service-proxy=iptables", err)
	}
	if err := datapath.EnsureBPFFS(filepath.Dir(pinDir)); err != nil {
		return fmt.Errorf("--service-proxy=ebpf: %w", err)
	}
	nft, err := NewNodePortTable()
	if err != nil {
		return err
	}
	dp, err := datapath.Open(pinDir)
	if err != nil {
		return fmt.Errorf("--service-proxy=ebpf: %w", err)
	}
	if err := dp.Attach(cgs); err != nil {
		dp.Close()
		return fmt.Errorf("--service-proxy=ebpf: %w", err)
	}
	programsAttached.Set(float64(len(dp.Attached())))
	p.dp, p.nft, p.synced = dp, nft, make(chan struct{})
	p.Log.Info("eBPF Service proxy attached", "cgroups", cgs, "programs", dp.Attached(), "pins", pinDir)
	return nil
}

// Synced is closed once the datapaths hold the cluster's Services.
func (p *Proxy) Synced() <-chan struct{} { return p.synced }

// Run syncs until ctx ends; the programs stay attached (pinned) when it
// returns, so that a restarting agent leaves no gap.
//
// The first sync compiles every Service and reconciles the maps with what
// they hold (an earlier run's state); after it, informer events mark the
// Services they touch and a sync compiles and writes those alone, so that
// an update costs the same at 10 Services as at 5,000.
func (p *Proxy) Run(ctx context.Context) error {
	defer p.dp.Close()
	factory := informers.NewSharedInformerFactory(p.Client, 0)
	services := factory.Core().V1().Services()
	epSlices := factory.Discovery().V1().EndpointSlices()
	loop := syncloop.New(p.MinInterval)
	dirty := newKeySet(loop)
	if err := epSlices.Informer().AddIndexers(cache.Indexers{byService: func(obj any) ([]string, error) {
		if s, ok := obj.(*discoveryv1.EndpointSlice); ok {
			if key := ServiceKeyOf(s); key != "" {
				return []string{key}, nil
			}
		}
		return nil, nil
	}}); err != nil {
		return err
	}
	handlers := map[cache.SharedIndexInformer]func(any) string{
		services.Informer(): func(obj any) string {
			key, _ := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
			return key
		},
		epSlices.Informer(): func(obj any) string {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if s, ok := obj.(*discoveryv1.EndpointSlice); ok {
				return ServiceKeyOf(s)
			}
			return ""
		},
	}
	for inf, keyOf := range handlers {
		if err := inf.SetTransform(stripManagedFields); err != nil {
			return err
		}
		if _, err := inf.AddEventHandler(dirty.handler(keyOf)); err != nil {
			return err
		}
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("service proxy: the %v informer did not sync", typ)
		}
	}
	st := newProxyState()
	compile := func(key string) (datapath.Table, []NodePort) {
		ns, name, _ := strings.Cut(key, "/")
		svc, err := services.Lister().Services(ns).Get(name)
		if err != nil {
			return nil, nil // deleted
		}
		objs, _ := epSlices.Informer().GetIndexer().ByIndex(byService, key)
		eps := make([]*discoveryv1.EndpointSlice, 0, len(objs))
		for _, o := range objs {
			eps = append(eps, o.(*discoveryv1.EndpointSlice))
		}
		return CompileService(p.NodeName, svc, eps)
	}
	var appliedPorts []NodePort
	var lruCounted time.Time
	first := true
	loop.Run(ctx, func(ctx context.Context) error {
		start := time.Now()
		keys := dirty.take()
		if first {
			// every Service, whatever the events said
			all, _ := services.Lister().List(labels.Everything())
			for _, svc := range all {
				keys[svc.Namespace+"/"+svc.Name] = struct{}{}
			}
		}
		for key := range keys {
			st.update(key, compile)
		}
		var stats datapath.ApplyStats
		var err error
		if first {
			stats, err = p.dp.Apply(st.sockets)
		} else {
			stats, err = p.dp.Patch(st.pendingSet, slices.Collect(maps.Keys(st.pendingDel)))
		}
		if err != nil {
			// the writes stay pending for the retry; those that went
			// through are skipped then
			return err
		}
		st.applied()
		nps := st.nodePorts()
		portsChanged := first || !reflect.DeepEqual(nps, appliedPorts)
		if portsChanged {
			tx := p.nft.NewTransaction()
			RenderNodePorts(tx, nps)
			if err := p.nft.Run(ctx, tx); err != nil {
				return fmt.Errorf("loading the NodePort table: %w", err)
			}
			appliedPorts = nps
			n := 0
			for _, np := range nps {
				if len(np.Backends) > 0 {
					n++
				}
			}
			nodePorts.Set(float64(n))
		}
		if stats.Changed > 0 || portsChanged {
			syncSeconds.Observe(time.Since(start).Seconds())
			lastSync.Set(float64(time.Now().UnixNano()) / 1e9)
			// the hash maps' sizes are known; counting the LRU maps walks
			// them entry by entry (a syscall each), so that is done at
			// most every 10 s
			mapEntries.WithLabelValues("ks_svc").Set(float64(stats.Frontends))
			mapEntries.WithLabelValues("ks_backend").Set(float64(stats.Backends))
			if time.Since(lruCounted) > 10*time.Second {
				lruCounted = time.Now()
				sizes := p.dp.MapSizes("ks_affinity", "ks_revnat")
				for name, n := range sizes {
					mapEntries.WithLabelValues(name).Set(float64(n))
				}
			}
			p.Log.Debug("Service datapath updated", "services", len(keys), "frontends", stats.Frontends,
				"backends", stats.Backends, "changed", stats.Changed, "nodePorts", len(nps),
				"took", time.Since(start).Round(time.Microsecond))
		}
		if first {
			first = false
			close(p.synced)
			p.Log.Info("eBPF Service proxy synced", "frontends", stats.Frontends, "backends", stats.Backends,
				"took", time.Since(start).Round(time.Microsecond))
		}
		return nil
	}, func(err error, retryIn time.Duration) {
		syncErrors.Inc()
		p.Log.Error("updating the Service datapath failed; retrying", "in", retryIn, "err", err)
	})
	return nil
}

// byService indexes EndpointSlices by the namespace/name of their Service.
const byService = "service"

// keySet is the Services informer events marked since the last sync.
type keySet struct {
	mu   sync.Mutex
	keys map[string]struct{}
	loop *syncloop.Loop
}

func newKeySet(loop *syncloop.Loop) *keySet {
	return &keySet{keys: map[string]struct{}{}, loop: loop}
}

func (k *keySet) handler(keyOf func(any) string) cache.ResourceEventHandlerFuncs {
	mark := func(obj any) {
		if key := keyOf(obj); key != "" {
			k.addAll([]string{key})
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: mark,
		UpdateFunc: func(old, cur any) {
			// a slice relabelled to another Service changes both
			mark(old)
			mark(cur)
		},
		DeleteFunc: mark,
	}
}

func (k *keySet) addAll(keys []string) {
	k.mu.Lock()
	for _, key := range keys {
		k.keys[key] = struct{}{}
	}
	k.mu.Unlock()
	k.loop.Kick()
}

func (k *keySet) take() map[string]struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := k.keys
	k.keys = map[string]struct{}{}
	return out
}

// proxyState is the compiled state by Service, and the map writes a sync
// owes the datapath.
type proxyState struct {
	bySvc   map[string]datapath.Table    // each Service's frontends
	ports   map[string][]NodePort        // each Service's NodePorts
	sockets datapath.Table               // every frontend
	owner   map[datapath.Frontend]string // the Service a frontend was last compiled from

	pendingSet datapath.Table
	pendingDel map[datapath.Frontend]struct{}
}

func newProxyState() *proxyState {
	return &proxyState{bySvc: map[string]datapath.Table{}, ports: map[string][]NodePort{},
		sockets: datapath.Table{}, owner: map[datapath.Frontend]string{},
		pendingSet: datapath.Table{}, pendingDel: map[datapath.Frontend]struct{}{}}
}

// update recompiles one Service and notes the frontends that changed. Two
// Services claiming one address and port (an external IP given twice, a
// misconfiguration): the one compiled last holds it, and removing the other
// leaves it alone.
func (s *proxyState) update(key string, compile func(string) (datapath.Table, []NodePort)) {
	sockets, ports := compile(key)
	for f := range s.bySvc[key] {
		if _, ok := sockets[f]; !ok && s.owner[f] == key {
			delete(s.sockets, f)
			delete(s.owner, f)
			delete(s.pendingSet, f)
			s.pendingDel[f] = struct{}{}
		}
	}
	for f, svc := range sockets {
		s.sockets[f] = svc
		s.owner[f] = key
		s.pendingSet[f] = svc
		delete(s.pendingDel, f)
	}
	if len(sockets) == 0 {
		delete(s.bySvc, key)
	} else {
		s.bySvc[key] = sockets
	}
	if len(ports) == 0 {
		delete(s.ports, key)
	} else {
		s.ports[key] = ports
	}
}

// applied says the datapath took the pending writes.
func (s *proxyState) applied() {
	s.pendingSet, s.pendingDel = datapath.Table{}, map[datapath.Frontend]struct{}{}
}

// nodePorts is every Service's NodePorts, sorted.
func (s *proxyState) nodePorts() []NodePort {
	var out []NodePort
	for _, ps := range s.ports {
		out = append(out, ps...)
	}
	SortNodePorts(out)
	return out
}

// Remove undoes an earlier run's eBPF proxy on this node (the agent now
// runs kube-proxy instead): programs detached, maps and NodePort table gone.
func Remove(ctx context.Context, pinDir string) error {
	var errs []error
	if _, err := os.Stat(pinDir); err == nil {
		errs = append(errs, datapath.Remove(pinDir))
	}
	errs = append(errs, RemoveNodePorts(ctx))
	return errors.Join(errs...)
}

// stripManagedFields drops what the proxy never reads and a node would
// otherwise hold for every Service and EndpointSlice of the cluster.
func stripManagedFields(obj any) (any, error) {
	if m, ok := obj.(interface {
		SetManagedFields([]metav1.ManagedFieldsEntry)
	}); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// PrintServices writes the maps the programs read (pinned in pinDir) as a
// table: what `kubesplit-node debug services` shows.
func PrintServices(w io.Writer, pinDir string) error {
	entries, sizes, err := datapath.Dump(pinDir)
	if err != nil {
		return fmt.Errorf("%w (is this node's agent running with --service-proxy=ebpf?)", err)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FRONTEND\tGENERATION\tAFFINITY\tBACKENDS")
	for _, e := range entries {
		aff := "-"
		if e.Affinity > 0 {
			aff = e.Affinity.String()
		}
		bs := make([]string, len(e.Backends))
		for i, b := range e.Backends {
			bs[i] = b.String()
		}
		be := strings.Join(bs, ",")
		if be == "" {
			be = "(none: refused)"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", e.Frontend, e.Generation, aff, be)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	names := make([]string, 0, len(sizes))
	for n := range sizes {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprint(w, "\nmap entries:")
	for _, n := range names {
		fmt.Fprintf(w, " %s=%d", n, sizes[n])
	}
	fmt.Fprintln(w)
	return nil
}
