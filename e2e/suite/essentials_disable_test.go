package suite

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"

	"github.com/kubesplit/kubesplit/testcluster"
)

// disabledAddons: the controllers restarted with --disable for every
// bundled addon and ServiceLB remove what each had deployed: no object
// labelled with the addon's name is left, the metrics APIService and the
// default StorageClass are gone, Traefik's release is uninstalled, and a LoadBalancer Service loses its
// forwarders and its status; with the HelmChart controller off, a new
// HelmChart is left alone. It runs last: the cluster keeps no addons.
func disabledAddons(t *testing.T, c *testcluster.Cluster) {
	ctx := context.Background()
	cs := c.Client()
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "lb-before-disable"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "none"},
			Ports: []corev1.ServicePort{{Port: 8089, TargetPort: intstr.FromInt32(8080)}}}}
	if _, err := cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cs.CoreV1().Services("default").Delete(ctx, svc.Name, metav1.DeleteOptions{}) }()
	forwarders := func(ctx context.Context) (int, error) {
		ds, err := cs.AppsV1().DaemonSets("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=kubesplit-servicelb"})
		if err != nil {
			return 0, err
		}
		return len(ds.Items), nil
	}
	// (no endpoints: the forwarders are ready and listed all the same)
	waitFor(t, "ServiceLB's forwarders and status for the Service", 2*time.Minute, func(ctx context.Context) (bool, error) {
		n, err := forwarders(ctx)
		if err != nil || n == 0 {
			return false, err
		}
		s, err := cs.CoreV1().Services("default").Get(ctx, svc.Name, metav1.GetOptions{})
		return err == nil && len(s.Status.LoadBalancer.Ingress) > 0, err
	})

	addons := []string{"coredns", "metrics-server", "local-storage", "traefik"}
	if err := c.UpgradeRole(ctx, testcluster.Controllers, "kubesplit/controllers:"+tag(),
		"--disable", strings.Join(append(addons, "servicelb", "helm-controller"), ",")); err != nil {
		t.Fatal(err)
	}
	labelled := []schema.GroupVersionResource{
		{Version: "v1", Resource: "serviceaccounts"}, {Version: "v1", Resource: "configmaps"}, {Version: "v1", Resource: "services"},
		{Group: "apps", Version: "v1", Resource: "deployments"},
		{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"},
		{Group: "storage.k8s.io", Version: "v1", Resource: "storageclasses"},
		{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"},
	}
	for _, addon := range addons {
		waitFor(t, addon+" removed", 2*time.Minute, func(ctx context.Context) (bool, error) {
			for _, gvr := range labelled {
				l, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{LabelSelector: "kubesplit.io/addon=" + addon})
				if err != nil {
					return false, err
				}
				if len(l.Items) > 0 {
					return false, fmt.Errorf("%d %s left", len(l.Items), gvr.Resource)
				}
			}
			return true, nil
		})
	}
	for _, gone := range []struct {
		gvr  schema.GroupVersionResource
		name string
	}{
		{schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}, "v1beta1.metrics.k8s.io"},
		{schema.GroupVersionResource{Group: "storage.k8s.io", Version: "v1", Resource: "storageclasses"}, "local-path"},
		// the serving certificate the controllers issued for metrics-server (owned by its Service)
		{schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, "metrics-server-tls"},
		// Traefik's HelmChart, and its release, uninstalled although the
		// HelmChart controller is disabled at the same time (it still
		// finishes a deletion that holds its finalizer)
		{helmChartGVR, "traefik"},
		{schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}, "traefik"},
		{schema.GroupVersionResource{Version: "v1", Resource: "services"}, "traefik"},
		{schema.GroupVersionResource{Group: "networking.k8s.io", Version: "v1", Resource: "ingressclasses"}, "traefik"},
	} {
		waitFor(t, gone.gvr.Resource+" "+gone.name+" gone", time.Minute, func(ctx context.Context) (bool, error) {
			_, err := dyn.Resource(gone.gvr).Namespace(namespaceOf(gone.gvr)).Get(ctx, gone.name, metav1.GetOptions{})
			return err != nil && strings.Contains(err.Error(), "not found"), err
		})
	}
	// the HelmChart controller is off: a HelmChart created now gets no
	// finalizer, no status and no release
	charts := dyn.Resource(helmChartGVR).Namespace("default")
	idle := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "helm.cattle.io/v1", "kind": "HelmChart",
		"metadata": map[string]any{"name": "while-disabled", "namespace": "default"},
		"spec":     map[string]any{"chartContent": base64.StdEncoding.EncodeToString(chartArchive(t, "while-disabled", greetingTemplate))},
	}}
	if _, err := charts.Create(ctx, idle, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = charts.Delete(ctx, "while-disabled", metav1.DeleteOptions{}) }()
	time.Sleep(5 * time.Second) // an enabled controller installs in about a second
	if got, err := charts.Get(ctx, "while-disabled", metav1.GetOptions{}); err != nil || got.Object["status"] != nil || len(got.GetFinalizers()) > 0 {
		t.Errorf("with --disable helm-controller a HelmChart was acted on: %v %v", got, err)
	}
	if _, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "while-disabled-data", metav1.GetOptions{}); err == nil {
		t.Error("with --disable helm-controller a chart was installed")
	}
	waitFor(t, "ServiceLB's forwarders and status removed", time.Minute, func(ctx context.Context) (bool, error) {
		n, err := forwarders(ctx)
		if err != nil || n > 0 {
			return false, fmt.Errorf("%d DaemonSets left %v", n, err)
		}
		s, err := cs.CoreV1().Services("default").Get(ctx, svc.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return len(s.Status.LoadBalancer.Ingress) == 0, fmt.Errorf("status %v", s.Status.LoadBalancer.Ingress)
	})
}

// namespaceOf is where the namespaced objects disabledAddons checks live.
func namespaceOf(gvr schema.GroupVersionResource) string {
	switch gvr.Resource {
	case "secrets", "helmcharts", "deployments", "services":
		return "kube-system"
	}
	return ""
}
