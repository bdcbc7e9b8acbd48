package servicelb

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/kubesplit/kubesplit/pkg/servicelb"
)

// Controller keeps, for every Service it serves, the forwarders'
// DaemonSet, the Local forwarders' endpoints and the Service's status.
type Controller struct {
	client   kubernetes.Interface
	image    string
	log      *slog.Logger
	recorder record.EventRecorder

	cluster, ours informers.SharedInformerFactory // ours: kube-system, our labels only
	services      corelisters.ServiceLister
	nodes         corelisters.NodeLister
	slices        discoverylisters.EndpointSliceLister
	daemonSets    appslisters.DaemonSetLister
	pods          corelisters.PodLister
	synced        []cache.InformerSynced
	queue         workqueue.TypedRateLimitingInterface[string]

	mu       sync.Mutex
	reported map[string]string // Service key -> the warnings last reported as events
}

// New wires a controller; Run starts it.
func New(client kubernetes.Interface, image string, recorder record.EventRecorder, log *slog.Logger) (*Controller, error) {
	c := &Controller{client: client, image: image, log: log, recorder: recorder, reported: map[string]string{},
		cluster: informers.NewSharedInformerFactory(client, 10*time.Minute),
		ours: informers.NewSharedInformerFactoryWithOptions(client, 10*time.Minute, informers.WithNamespace(Namespace),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = managedByLabel + "=" + managedBy })),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "servicelb"}),
	}
	svcs := c.cluster.Core().V1().Services()
	nodes := c.cluster.Core().V1().Nodes()
	eps := c.cluster.Discovery().V1().EndpointSlices()
	dss := c.ours.Apps().V1().DaemonSets()
	pods := c.ours.Core().V1().Pods()
	c.services, c.nodes, c.slices, c.daemonSets, c.pods = svcs.Lister(), nodes.Lister(), eps.Lister(), dss.Lister(), pods.Lister()
	byLabels := func(obj any) {
		if m, err := metaOf(obj); err == nil {
			if key, ok := serviceKey(m.GetLabels()); ok {
				c.queue.Add(key)
			}
		}
	}
	handlers := []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{svcs.Informer(), handler(func(obj any) {
			if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
				c.queue.Add(key)
			}
		})},
		{dss.Informer(), handler(byLabels)},
		{pods.Informer(), handler(byLabels)},
		{eps.Informer(), handler(c.endpointSliceChanged)},
		{nodes.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { c.enqueueServed() },
			DeleteFunc: func(any) { c.enqueueServed() },
			UpdateFunc: func(old, cur any) {
				o, n := old.(*corev1.Node), cur.(*corev1.Node)
				if o.Labels[NodeLabel] != n.Labels[NodeLabel] || !apiequality.Semantic.DeepEqual(o.Status.Addresses, n.Status.Addresses) {
					c.enqueueServed()
				}
			},
		}},
	}
	for _, h := range handlers {
		if _, err := h.inf.AddEventHandler(h.h); err != nil {
			return nil, err
		}
		c.synced = append(c.synced, h.inf.HasSynced)
	}
	return c, nil
}

func handler(f func(any)) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{AddFunc: f, DeleteFunc: f, UpdateFunc: func(_, cur any) { f(cur) }}
}

func metaOf(obj any) (metav1.Object, error) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	o, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no object metadata", obj)
	}
	return o, nil
}

// endpointSliceChanged queues the slice's Service if it is a Local one of
// ours: only those follow their endpoints.
func (c *Controller) endpointSliceChanged(obj any) {
	m, err := metaOf(obj)
	if err != nil {
		return
	}
	name := m.GetLabels()[discoveryv1.LabelServiceName]
	if svc, err := c.services.Services(m.GetNamespace()).Get(name); err == nil && serves(svc) && local(svc) {
		c.queue.Add(m.GetNamespace() + "/" + name)
	}
}

// enqueueServed queues every Service that has, or should have, forwarders.
func (c *Controller) enqueueServed() {
	svcs, _ := c.services.List(labels.Everything())
	for _, s := range svcs {
		if serves(s) {
			c.queue.Add(s.Namespace + "/" + s.Name)
		}
	}
}

// Run starts the informers and syncs Services until ctx ends.
func (c *Controller) Run(ctx context.Context, workers int) error {
	defer c.queue.ShutDown()
	c.cluster.Start(ctx.Done())
	c.ours.Start(ctx.Done())
	defer c.cluster.Shutdown()
	defer c.ours.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return ctx.Err()
	}
	c.log.Info("serving LoadBalancer Services")
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for c.processNext(ctx) {
			}
		})
	}
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
	return nil
}

func (c *Controller) processNext(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	if err := c.sync(ctx, key); err != nil {
		c.log.Warn("syncing; retrying", "service", key, "err", err)
		c.queue.AddRateLimited(key)
		return true
	}
	c.queue.Forget(key)
	return true
}

// sync makes one Service's forwarders and status what they should be.
func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // (not a key we queued)
	}
	svc, err := c.services.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		svc = nil
	} else if err != nil {
		return err
	}
	ports, skipped := []forwarded(nil), []corev1.ServicePort(nil)
	if serves(svc) {
		ports, skipped = forwardedPorts(svc)
	}
	if len(ports) == 0 {
		if serves(svc) {
			c.warn(svc, key, unsupportedProto, "no TCP or UDP port: nothing for ServiceLB to forward")
		}
		return c.teardown(ctx, key, svc)
	}
	var warnings []string
	for _, p := range skipped {
		warnings = append(warnings, fmt.Sprintf("port %d/%s not forwarded: ServiceLB carries TCP and UDP only", p.Port, p.Protocol))
	}
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return err
	}
	optIn := anyOptIn(nodes)
	ds, err := c.ensureDaemonSet(ctx, svc, ports, optIn)
	if err != nil {
		return err
	}
	pods, err := c.pods.Pods(Namespace).List(labels.SelectorFromSet(ds.Spec.Selector.MatchLabels))
	if err != nil {
		return err
	}
	var endpoints map[string]servicelb.Endpoints
	if local(svc) {
		sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: svc.Name})
		eps, err := c.slices.EndpointSlices(svc.Namespace).List(sel)
		if err != nil {
			return err
		}
		endpoints = localEndpoints(ports, eps)
		if err := c.annotateEndpoints(ctx, pods, endpoints); err != nil {
			return err
		}
	}
	for _, p := range pods {
		if node, why := unschedulable(p); why != "" {
			warnings = append(warnings, portWarning(node, why, ports))
		}
	}
	c.warn(svc, key, "ForwarderProblem", strings.Join(warnings, "; "))
	byName := map[string]*corev1.Node{}
	for _, n := range nodes {
		byName[n.Name] = n
	}
	return c.updateStatus(ctx, svc, ingress(svc, pods, byName, optIn, endpoints))
}

// portWarning explains a pending forwarder; the usual cause is a port
// another pod holds on that node (another hostPort, or another
// LoadBalancer Service on the same port).
func portWarning(node, why string, ports []forwarded) string {
	if node == "" {
		node = "a node"
	} else {
		node = "node " + node
	}
	if strings.Contains(why, "free ports") {
		var ps []string
		for _, p := range ports {
			ps = append(ps, fmt.Sprintf("%d/%s", p.svc.Port, p.svc.Protocol))
		}
		return fmt.Sprintf("%s does not serve: port %s already used there by another pod (a hostPort or another LoadBalancer Service)",
			node, strings.Join(ps, ", "))
	}
	return fmt.Sprintf("%s does not serve: its forwarder cannot be scheduled: %s", node, why)
}

// ensureDaemonSet creates or updates the forwarders' DaemonSet.
func (c *Controller) ensureDaemonSet(ctx context.Context, svc *corev1.Service, ports []forwarded, optIn bool) (*appsv1.DaemonSet, error) {
	want := renderDaemonSet(svc, ports, c.image, optIn)
	cur, err := c.daemonSets.DaemonSets(Namespace).Get(want.Name)
	switch {
	case apierrors.IsNotFound(err):
		created, err := c.client.AppsV1().DaemonSets(Namespace).Create(ctx, want, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) { // made moments ago: the informer has not seen it yet
			if cur, err = c.client.AppsV1().DaemonSets(Namespace).Get(ctx, want.Name, metav1.GetOptions{}); err != nil {
				return nil, err
			}
			break
		}
		if err != nil {
			c.recorder.Eventf(svc, corev1.EventTypeWarning, "CreateFailed", "creating DaemonSet %s/%s: %v", Namespace, want.Name, err)
			return nil, err
		}
		c.recorder.Eventf(svc, corev1.EventTypeNormal, "ForwardersCreated", "DaemonSet %s/%s forwards %s from %s", Namespace, want.Name,
			portList(ports), nodeRule(optIn))
		return created, nil
	case err != nil:
		return nil, err
	}
	if cur.Annotations[hashAnnotation] == want.Annotations[hashAnnotation] {
		return cur, nil
	}
	upd := cur.DeepCopy()
	upd.Labels, upd.Annotations, upd.Spec.Template = want.Labels, want.Annotations, want.Spec.Template
	updated, err := c.client.AppsV1().DaemonSets(Namespace).Update(ctx, upd, metav1.UpdateOptions{})
	if err != nil {
		return nil, err
	}
	c.recorder.Eventf(svc, corev1.EventTypeNormal, "ForwardersUpdated", "DaemonSet %s/%s updated: forwards %s from %s", Namespace, want.Name,
		portList(ports), nodeRule(optIn))
	return updated, nil
}

// nodeRule says which nodes serve.
func nodeRule(optIn bool) string {
	if optIn {
		return "the nodes labelled " + NodeLabel + "=true"
	}
	return "every node not labelled " + NodeLabel + "=false"
}

func portList(ports []forwarded) string {
	var s []string
	for _, p := range ports {
		s = append(s, fmt.Sprintf("%d/%s", p.svc.Port, p.svc.Protocol))
	}
	return strings.Join(s, ", ")
}

// annotateEndpoints hands each Local forwarder its node's endpoints.
func (c *Controller) annotateEndpoints(ctx context.Context, pods []*corev1.Pod, endpoints map[string]servicelb.Endpoints) error {
	for _, p := range pods {
		if p.Spec.NodeName == "" || p.DeletionTimestamp != nil {
			continue
		}
		want := endpoints[p.Spec.NodeName].Encode()
		if p.Annotations[servicelb.EndpointsAnnotation] == want {
			continue
		}
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{servicelb.EndpointsAnnotation: want}}})
		if _, err := c.client.CoreV1().Pods(Namespace).Patch(ctx, p.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("handing pod %s its endpoints: %w", p.Name, err)
		}
	}
	return nil
}

func (c *Controller) updateStatus(ctx context.Context, svc *corev1.Service, ing []corev1.LoadBalancerIngress) error {
	if apiequality.Semantic.DeepEqual(svc.Status.LoadBalancer.Ingress, ing) {
		return nil
	}
	upd := svc.DeepCopy()
	upd.Status.LoadBalancer.Ingress = ing
	if _, err := c.client.CoreV1().Services(svc.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{}); err != nil {
		return err
	}
	var ips []string
	for _, i := range ing {
		ips = append(ips, i.IP)
	}
	if len(ips) == 0 {
		c.recorder.Event(svc, corev1.EventTypeNormal, "IngressUpdated", "no node serves the Service yet")
	} else {
		c.recorder.Eventf(svc, corev1.EventTypeNormal, "IngressUpdated", "served at %s", strings.Join(ips, ", "))
	}
	return nil
}

// warn posts a warning event when the warnings differ from those posted last.
func (c *Controller) warn(svc *corev1.Service, key, reason, msg string) {
	c.mu.Lock()
	last := c.reported[key]
	c.reported[key] = msg
	c.mu.Unlock()
	if msg != "" && msg != last {
		c.recorder.Event(svc, corev1.EventTypeWarning, reason, msg)
	}
}

// teardown removes the forwarders of a Service that is gone or no longer
// ServiceLB's, and, if it is still there, the status ServiceLB wrote: the
// status first, so that a failure leaves the DaemonSet as the record of
// what is still to clean.
func (c *Controller) teardown(ctx context.Context, key string, svc *corev1.Service) error {
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	dss, err := c.daemonSets.DaemonSets(Namespace).List(labels.SelectorFromSet(ownerLabels(ns, name)))
	if err != nil || len(dss) == 0 {
		return err
	}
	if svc != nil && svc.DeletionTimestamp == nil {
		if err := clearStatus(ctx, c.client, svc); err != nil {
			return err
		}
	}
	for _, ds := range dss {
		err := c.client.AppsV1().DaemonSets(Namespace).Delete(ctx, ds.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		c.log.Info("removed forwarders", "service", key, "daemonset", ds.Name)
		if svc != nil {
			c.recorder.Eventf(svc, corev1.EventTypeNormal, "ForwardersDeleted", "not a ServiceLB Service any more: DaemonSet %s/%s deleted", Namespace, ds.Name)
		}
	}
	c.mu.Lock()
	delete(c.reported, key)
	c.mu.Unlock()
	return nil
}

// clearStatus empties a Service's load balancer status, if set.
func clearStatus(ctx context.Context, client kubernetes.Interface, svc *corev1.Service) error {
	if len(svc.Status.LoadBalancer.Ingress) == 0 {
		return nil
	}
	upd := svc.DeepCopy()
	upd.Status.LoadBalancer = corev1.LoadBalancerStatus{}
	_, err := client.CoreV1().Services(svc.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
