package helmchart

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"

	"github.com/kubesplit/kubesplit/pkg/component"
	"github.com/kubesplit/kubesplit/services/controllers/internal/leading"
)

// Options configure the HelmChart controller.
type Options struct {
	Kubeconfig string
	// ManifestsDir is where chart archives named by a HelmChart are found.
	ManifestsDir string
	Lease        component.Lease
	// Disabled (--disable helm-controller): HelmCharts are left alone, but
	// for one deleted while it holds this controller's finalizer (from
	// before it was disabled, e.g. a bundled addon disabled with it), whose
	// release is still uninstalled: nothing is left Terminating for good.
	Disabled bool
}

// LeaseName is the controller's own lease in kube-system.
const LeaseName = "kubesplit-helm-controller"

// Run keeps the CRDs, then runs the controller on the replica that holds
// its lease, until ctx ends.
func Run(ctx context.Context, o Options, log *slog.Logger) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	if err != nil {
		return err
	}
	cfg.UserAgent = "kubesplit-helm-controller"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ext, err := apiextensionsclient.NewForConfig(cfg)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	if o.Disabled {
		log.Info("disabled: HelmCharts are not installed or upgraded; a deleted one holding this controller's finalizer is still uninstalled")
		// no CRD, no HelmChart to finish: nothing to do
		if _, err := ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, CRDs()[0].Name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return nil
		}
	}
	// every replica keeps the CRDs, so manifests naming HelmCharts apply
	// before a leader is chosen
	if err := wait.PollUntilContextCancel(ctx, 2*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := ensureCRDs(ctx, ext); err != nil {
			log.Warn("creating the HelmChart CRDs; retrying", "err", err)
			return false, nil
		}
		return true, nil
	}); err != nil {
		return err
	}
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubesplit-helm-controller"})
	r := releaser{kubeconfig: o.Kubeconfig, manifestsDir: o.ManifestsDir, log: log}
	return leading.Run(ctx, client, metav1.NamespaceSystem, LeaseName, o.Lease, log, func(ctx context.Context) {
		c := newController(dyn, r, recorder, log)
		c.finalizeOnly = o.Disabled
		if err := c.run(ctx, 2); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("HelmChart controller stopped", "err", err)
		}
	})
}

func ensureCRDs(ctx context.Context, ext apiextensionsclient.Interface) error {
	crds := ext.ApiextensionsV1().CustomResourceDefinitions()
	for _, want := range CRDs() {
		got, err := crds.Get(ctx, want.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			if _, err := crds.Create(ctx, want, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				return err
			}
		case err != nil:
			return err
		default:
			// k3s's own CRD may be there (a migrated cluster): keep its
			// schema when it serves v1, else take ours
			if slices.ContainsFunc(got.Spec.Versions, func(v apiextensionsv1.CustomResourceDefinitionVersion) bool { return v.Name == Version && v.Served }) &&
				got.Labels["app.kubernetes.io/managed-by"] != "kubesplit" {
				continue
			}
			got.Spec.Versions = want.Spec.Versions
			got.Labels = want.Labels
			if _, err := crds.Update(ctx, got, metav1.UpdateOptions{}); err != nil {
				return err
			}
		}
	}
	// wait until the API serves them
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		for _, want := range CRDs() {
			got, err := crds.Get(ctx, want.Name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			established := false
			for _, c := range got.Status.Conditions {
				if c.Type == "Established" && c.Status == "True" {
					established = true
				}
			}
			if !established {
				return false, nil
			}
		}
		return true, nil
	})
}

type controller struct {
	dyn      dynamic.Interface
	charts   cache.GenericLister
	configs  cache.GenericLister
	factory  dynamicinformer.DynamicSharedInformerFactory
	queue    workqueue.TypedRateLimitingInterface[string]
	r        releaser
	recorder record.EventRecorder
	log      *slog.Logger
	// finalizeOnly: only deletions are acted on (--disable helm-controller)
	finalizeOnly bool
}

func newController(dyn dynamic.Interface, r releaser, recorder record.EventRecorder, log *slog.Logger) *controller {
	f := dynamicinformer.NewDynamicSharedInformerFactory(dyn, 10*time.Minute)
	c := &controller{dyn: dyn, factory: f, r: r, recorder: recorder, log: log,
		// retries back off from 1 s to 5 min per HelmChart
		queue: workqueue.NewTypedRateLimitingQueue(workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, 5*time.Minute))}
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			c.queue.Add(key)
		}
	}
	handler := cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, n any) { enqueue(n) }, DeleteFunc: enqueue}
	ci := f.ForResource(ChartGVR)
	_, _ = ci.Informer().AddEventHandler(handler)
	c.charts = ci.Lister()
	// a HelmChartConfig applies to the HelmChart of its name and namespace
	gi := f.ForResource(ConfigGVR)
	_, _ = gi.Informer().AddEventHandler(handler)
	c.configs = gi.Lister()
	return c
}

func (c *controller) run(ctx context.Context, workers int) error {
	defer c.queue.ShutDown()
	c.factory.Start(ctx.Done())
	for gvr, ok := range c.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("the %s cache did not sync", gvr.Resource)
		}
	}
	for range workers {
		go func() {
			for c.next(ctx) {
			}
		}()
	}
	<-ctx.Done()
	return ctx.Err()
}

func (c *controller) next(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	if err := c.sync(ctx, key); err != nil {
		c.log.Warn("HelmChart not applied; retrying", "helmchart", key, "err", err)
		c.queue.AddRateLimited(key)
		return true
	}
	c.queue.Forget(key)
	return true
}

func (c *controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	obj, err := c.charts.ByNamespace(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil // gone: its finalizer was handled
	}
	if err != nil {
		return err
	}
	u := obj.(*unstructured.Unstructured).DeepCopy()
	var hc HelmChart
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &hc); err != nil {
		c.recorder.Eventf(u, corev1.EventTypeWarning, "InvalidSpec", "cannot read the HelmChart: %v", err)
		return nil
	}
	res := c.dyn.Resource(ChartGVR).Namespace(ns)
	if hc.DeletionTimestamp != nil {
		if !slices.Contains(hc.Finalizers, Finalizer) {
			return nil
		}
		if err := c.r.uninstall(name, &hc); err != nil {
			c.recorder.Eventf(u, corev1.EventTypeWarning, "UninstallFailed", "helm uninstall %s/%s: %v", targetNamespace(&hc), name, err)
			return err
		}
		c.recorder.Eventf(u, corev1.EventTypeNormal, "Uninstalled", "release %s/%s uninstalled", targetNamespace(&hc), name)
		u.SetFinalizers(slices.DeleteFunc(u.GetFinalizers(), func(f string) bool { return f == Finalizer }))
		_, err := res.Update(ctx, u, metav1.UpdateOptions{})
		return ignoreNotFound(err)
	}
	if c.finalizeOnly {
		return nil
	}
	if !slices.Contains(hc.Finalizers, Finalizer) {
		u.SetFinalizers(append(u.GetFinalizers(), Finalizer))
		updated, err := res.Update(ctx, u, metav1.UpdateOptions{})
		if err != nil {
			return ignoreNotFound(err)
		}
		u = updated
	}
	override := ""
	if cobj, err := c.configs.ByNamespace(ns).Get(name); err == nil {
		var hcc HelmChartConfig
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(cobj.(*unstructured.Unstructured).Object, &hcc); err == nil {
			override = hcc.Spec.ValuesContent
		}
	}
	vals, err := values(hc.Spec, override)
	if err != nil {
		return c.failed(ctx, u, &hc, "InvalidValues", err.Error(), nil)
	}
	src, err := c.r.load(hc.Spec)
	if err != nil {
		return c.failed(ctx, u, &hc, "ChartNotFound", err.Error(), vals)
	}
	h := hash(src, vals, &hc)
	if ready := meta.FindStatusCondition(hc.Status.Conditions, ConditionReady); ready != nil && ready.Status == metav1.ConditionTrue &&
		hc.Status.AppliedHash == h && hc.Status.ObservedGeneration == hc.Generation {
		return nil
	}
	start := time.Now()
	out, err := c.r.apply(ctx, name, &hc, src, vals, h)
	if err != nil {
		return c.failed(ctx, u, &hc, "ApplyFailed", "helm: "+err.Error(), vals)
	}
	if out.action == "" { // the release is already as asked (a stale cache, a restart)
		hc.Status.Revision, hc.Status.AppliedHash = out.revision, h
		reason, msg := "Deployed", fmt.Sprintf("release %s/%s revision %d", targetNamespace(&hc), name, out.revision)
		if ready := meta.FindStatusCondition(hc.Status.Conditions, ConditionReady); ready != nil && ready.Status == metav1.ConditionTrue {
			reason, msg = ready.Reason, ready.Message
		}
		return c.setStatus(ctx, u, &hc, metav1.Condition{Type: ConditionReady, Status: metav1.ConditionTrue, Reason: reason, Message: msg})
	}
	msg := fmt.Sprintf("release %s/%s revision %d (%s)", targetNamespace(&hc), name, out.revision, time.Since(start).Round(10*time.Millisecond))
	c.recorder.Event(u, corev1.EventTypeNormal, out.action, msg)
	c.log.Info(out.action, "helmchart", key, "release", targetNamespace(&hc)+"/"+name, "revision", out.revision)
	hc.Status.Revision = out.revision
	hc.Status.AppliedHash = h
	return c.setStatus(ctx, u, &hc, metav1.Condition{Type: ConditionReady, Status: metav1.ConditionTrue, Reason: out.action, Message: msg})
}

// failed reports a failure on the status and as an event (its message
// scrubbed of the values) and returns it, so that the key is retried.
func (c *controller) failed(ctx context.Context, u *unstructured.Unstructured, hc *HelmChart, reason, msg string, vals map[string]any) error {
	msg = scrub(msg, vals)
	c.recorder.Event(u, corev1.EventTypeWarning, reason, msg)
	if err := c.setStatus(ctx, u, hc, metav1.Condition{Type: ConditionReady, Status: metav1.ConditionFalse, Reason: reason, Message: msg}); err != nil {
		return err
	}
	return errors.New(reason + ": " + msg)
}

func (c *controller) setStatus(ctx context.Context, u *unstructured.Unstructured, hc *HelmChart, cond metav1.Condition) error {
	cond.ObservedGeneration = hc.Generation
	meta.SetStatusCondition(&hc.Status.Conditions, cond)
	hc.Status.ObservedGeneration = hc.Generation
	st, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&hc.Status)
	if err != nil {
		return err
	}
	res := c.dyn.Resource(ChartGVR).Namespace(hc.Namespace)
	u = u.DeepCopy()
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		u.Object["status"] = st
		_, err := res.UpdateStatus(ctx, u, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			// the object changed meanwhile (a finalizer, a spec edit, which
			// queues another sync): the status is still this sync's
			latest, gerr := res.Get(ctx, hc.Name, metav1.GetOptions{})
			if gerr != nil {
				return gerr
			}
			u = latest
		}
		return err
	})
	return ignoreNotFound(err)
}

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
