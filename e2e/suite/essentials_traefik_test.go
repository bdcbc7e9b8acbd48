package suite

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/testcluster"
)

// traefik: the bundled ingress controller. Its HelmChart is deployed, its
// Service gets both nodes' addresses from ServiceLB, and its IngressClass
// is the default; an Ingress with no class routes two hosts to two
// Services, over HTTP and HTTPS, reached from this process at the nodes'
// addresses, and gets those addresses in its status; an unknown host is a
// 404. A k3s-style HelmChartConfig (an HTTP to HTTPS redirect) upgrades
// the release and takes effect; deleting it takes it back.
func traefik(t *testing.T, c *testcluster.Cluster) {
	ctx := context.Background()
	cs := c.Client()
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	nodeIPs := slices.Sorted(slices.Values(internalIPs(t, cs)))
	t.Cleanup(func() {
		if t.Failed() {
			dumpTraefik(t, cs, dyn)
		}
	})

	t.Run("deployed with ServiceLB's addresses and the default IngressClass", func(t *testing.T) {
		waitFor(t, "HelmChart kube-system/traefik Ready", 3*time.Minute, func(ctx context.Context) (bool, error) {
			u, err := dyn.Resource(helmChartGVR).Namespace("kube-system").Get(ctx, "traefik", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			return readyCondition(u)["status"] == "True", fmt.Errorf("status %v", u.Object["status"])
		})
		waitFor(t, "Deployment traefik available", 2*time.Minute, func(ctx context.Context) (bool, error) {
			d, err := cs.AppsV1().Deployments("kube-system").Get(ctx, "traefik", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			return d.Status.AvailableReplicas >= 1, fmt.Errorf("%d available", d.Status.AvailableReplicas)
		})
		var got []string
		waitFor(t, "Service traefik with both nodes' addresses", 2*time.Minute, func(ctx context.Context) (bool, error) {
			s, err := cs.CoreV1().Services("kube-system").Get(ctx, "traefik", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			got = nil
			for _, i := range s.Status.LoadBalancer.Ingress {
				got = append(got, i.IP)
			}
			slices.Sort(got)
			return slices.Equal(got, nodeIPs), fmt.Errorf("type %s, ingress %v, want %v", s.Spec.Type, got, nodeIPs)
		})
		ic, err := cs.NetworkingV1().IngressClasses().Get(ctx, "traefik", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ic.Annotations[networkingv1.AnnotationIsDefaultIngressClass] != "true" {
			t.Errorf("IngressClass traefik is not the default: %v", ic.Annotations)
		}
	})

	hosts := map[string]string{"a.kubesplit.test": "ing-a", "b.kubesplit.test": "ing-b"}
	var rules []networkingv1.IngressRule
	for host, name := range hosts {
		ingressBackend(t, cs, name)
		rules = append(rules, networkingv1.IngressRule{Host: host, IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
			Paths: []networkingv1.HTTPIngressPath{{Path: "/", PathType: ptr.To(networkingv1.PathTypePrefix),
				Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: name, Port: networkingv1.ServiceBackendPort{Number: 80}}}}},
		}}})
	}
	// no ingressClassName: the default class (traefik) is filled in
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: "two-hosts"}, Spec: networkingv1.IngressSpec{Rules: rules}}
	if _, err := cs.NetworkingV1().Ingresses("default").Create(ctx, ing, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.NetworkingV1().Ingresses("default").Delete(context.Background(), "two-hosts", metav1.DeleteOptions{})
	})

	t.Run("an Ingress routes two hosts to two Services, reached from the host", func(t *testing.T) {
		got, err := cs.NetworkingV1().Ingresses("default").Get(ctx, "two-hosts", metav1.GetOptions{})
		if err != nil || got.Spec.IngressClassName == nil || *got.Spec.IngressClassName != "traefik" {
			t.Errorf("the Ingress's class is %v (%v), want the default traefik", got.Spec.IngressClassName, err)
		}
		for _, ip := range nodeIPs {
			for host, name := range hosts {
				waitFor(t, fmt.Sprintf("http://%s/ at %s served by %s", host, ip, name), time.Minute, func(context.Context) (bool, error) {
					code, body, err := get("http", ip, host)
					return err == nil && code == http.StatusOK && strings.HasPrefix(body, name+"-"), fmt.Errorf("%d %q %v", code, body, err)
				})
				code, body, err := get("https", ip, host)
				if err != nil || code != http.StatusOK || !strings.HasPrefix(body, name+"-") {
					t.Errorf("https://%s/ at %s: %d %q %v, want %s's pod", host, ip, code, body, err, name)
				}
			}
			if code, body, err := get("http", ip, "c.kubesplit.test"); err != nil || code != http.StatusNotFound {
				t.Errorf("an unknown host at %s: %d %q %v, want 404", ip, code, body, err)
			}
		}
	})

	t.Run("the Ingress's status has the load balancer's addresses", func(t *testing.T) {
		waitFor(t, "Ingress two-hosts status", time.Minute, func(ctx context.Context) (bool, error) {
			got, err := cs.NetworkingV1().Ingresses("default").Get(ctx, "two-hosts", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			var ips []string
			for _, i := range got.Status.LoadBalancer.Ingress {
				ips = append(ips, i.IP)
			}
			slices.Sort(ips)
			return slices.Equal(ips, nodeIPs), fmt.Errorf("status %v, want %v", ips, nodeIPs)
		})
	})

	t.Run("a HelmChartConfig changes Traefik's configuration", func(t *testing.T) {
		configs := dyn.Resource(helmChartConfigGVR).Namespace("kube-system")
		hcc := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "helm.cattle.io/v1", "kind": "HelmChartConfig",
			"metadata": map[string]any{"name": "traefik", "namespace": "kube-system"},
			"spec":     map[string]any{"valuesContent": "additionalArguments:\n- --entryPoints.web.http.redirections.entryPoint.to=websecure\n"},
		}}
		if _, err := configs.Create(ctx, hcc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = configs.Delete(context.Background(), "traefik", metav1.DeleteOptions{}) }()
		ip := nodeIPs[0]
		waitFor(t, "http://a.kubesplit.test/ redirected to https", 2*time.Minute, func(context.Context) (bool, error) {
			code, body, err := get("http", ip, "a.kubesplit.test")
			return err == nil && (code == http.StatusMovedPermanently || code == http.StatusPermanentRedirect), fmt.Errorf("%d %q %v", code, body, err)
		})
		u, err := dyn.Resource(helmChartGVR).Namespace("kube-system").Get(ctx, "traefik", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if rev, _, _ := unstructured.NestedInt64(u.Object, "status", "revision"); rev < 2 {
			t.Errorf("release revision %d after the HelmChartConfig, want an upgrade", rev)
		}
		if err := configs.Delete(ctx, "traefik", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "http://a.kubesplit.test/ served again without the redirect", 2*time.Minute, func(context.Context) (bool, error) {
			code, body, err := get("http", ip, "a.kubesplit.test")
			return err == nil && code == http.StatusOK && strings.HasPrefix(body, "ing-a-"), fmt.Errorf("%d %q %v", code, body, err)
		})
	})
}

// ingressBackend runs one testapp pod behind a ClusterIP Service NAME:80.
func ingressBackend(t *testing.T, cs kubernetes.Interface, name string) {
	t.Helper()
	ctx := context.Background()
	labels := map[string]string{"app": name}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{TerminationGracePeriodSeconds: ptr.To[int64](1),
					Containers: []corev1.Container{{Name: "web", Image: testapp(), ImagePullPolicy: corev1.PullNever,
						Command: []string{"/testapp", "serve", ":8080"},
						ReadinessProbe: &corev1.Probe{PeriodSeconds: 1,
							ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}}}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	if _, err := cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Services("default").Delete(context.Background(), name, metav1.DeleteOptions{})
		_ = cs.AppsV1().Deployments("default").Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// get requests scheme://ip/ with the Host (and TLS server name) host, on a
// new connection, not following redirects; Traefik's HTTPS certificate is
// its own self-signed default, so it is not verified.
func get(scheme, ip, host string) (int, string, error) {
	port := "80"
	if scheme == "https" {
		port = "443"
	}
	client := http.Client{Timeout: 3 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{DisableKeepAlives: true,
			TLSClientConfig: &tls.Config{ServerName: host, InsecureSkipVerify: true}}} //nolint:gosec // Traefik's default certificate
	req, err := http.NewRequest(http.MethodGet, scheme+"://"+net.JoinHostPort(ip, port)+"/", nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

// dumpTraefik logs the HelmChart's status and Traefik's pods and logs.
func dumpTraefik(t *testing.T, cs kubernetes.Interface, dyn dynamic.Interface) {
	ctx := context.Background()
	if u, err := dyn.Resource(helmChartGVR).Namespace("kube-system").Get(ctx, "traefik", metav1.GetOptions{}); err == nil {
		t.Logf("HelmChart traefik status: %v", u.Object["status"])
	}
	pods, err := cs.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=traefik"})
	if err != nil {
		return
	}
	for _, p := range pods.Items {
		t.Logf("pod %s on %s: %s %+v", p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.ContainerStatuses)
		if b, err := cs.CoreV1().Pods("kube-system").GetLogs(p.Name, &corev1.PodLogOptions{TailLines: ptr.To[int64](50)}).DoRaw(ctx); err == nil {
			t.Logf("traefik log:\n%s", b)
		}
	}
}
