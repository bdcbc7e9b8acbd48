package suite

import (
	"context"
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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/testcluster"
)

// ServiceLB's labels on a Service's forwarders (services/controllers/internal/servicelb).
const lbOwner = "kubesplit.io/servicelb-namespace=default,kubesplit.io/servicelb-service="

// serviceLB: a LoadBalancer Service in front of testapp gets both nodes'
// addresses in its status and serves HTTP to this test process at each;
// loadBalancerSourceRanges without this host refuse it, with it serve it;
// externalTrafficPolicy Local lists only the node with the endpoint and
// serves there; deleting the Service removes its DaemonSet.
func serviceLB(t *testing.T, c *testcluster.Cluster) {
	ctx := context.Background()
	cs := c.Client()
	const name, port = "lbweb", 8081
	app := map[string]string{"app": name}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: app},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: app},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](1),
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: corev1.LabelHostname,
						WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: &metav1.LabelSelector{MatchLabels: app}}},
					Containers: []corev1.Container{{Name: "web", Image: testapp(), ImagePullPolicy: corev1.PullNever,
						Command: []string{"/testapp", "serve", ":8080"},
						ReadinessProbe: &corev1.Probe{PeriodSeconds: 1,
							ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}}}},
				},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: app,
			Ports: []corev1.ServicePort{{Name: "http", Port: port, TargetPort: intstr.FromInt32(8080)}}},
	}
	if _, err := cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpForwarders(t, cs, name)
		}
		_ = cs.CoreV1().Services("default").Delete(context.Background(), name, metav1.DeleteOptions{})
		_ = cs.AppsV1().Deployments("default").Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	nodeIPs := internalIPs(t, cs)

	t.Run("status lists both nodes and each serves the host", func(t *testing.T) {
		got := waitIngress(t, cs, name, len(nodeIPs))
		if !slices.Equal(got, slices.Sorted(slices.Values(nodeIPs))) {
			t.Fatalf("status.loadBalancer.ingress %v, want the nodes' InternalIPs %v", got, nodeIPs)
		}
		for _, ip := range got {
			waitServes(t, ip, port, name+"-")
		}
	})

	t.Run("loadBalancerSourceRanges refuse other sources", func(t *testing.T) {
		setService(t, cs, name, func(s *corev1.Service) { s.Spec.LoadBalancerSourceRanges = []string{"192.0.2.0/24"} })
		waitRolledOut(t, cs, name)
		for _, ip := range nodeIPs {
			if body, err := fetch(ip, port); err == nil {
				t.Errorf("%s:%d served %q to %s, outside 192.0.2.0/24", ip, port, body, c.HostAddress())
			} else {
				t.Logf("%s:%d from %s: %v (refused, as it should be)", ip, port, c.HostAddress(), err)
			}
		}
		setService(t, cs, name, func(s *corev1.Service) {
			s.Spec.LoadBalancerSourceRanges = []string{"192.0.2.0/24", c.HostAddress() + "/32"}
		})
		waitRolledOut(t, cs, name)
		for _, ip := range nodeIPs {
			waitServes(t, ip, port, name+"-")
		}
	})

	t.Run("externalTrafficPolicy Local lists only the node with the endpoint", func(t *testing.T) {
		setService(t, cs, name, func(s *corev1.Service) {
			s.Spec.LoadBalancerSourceRanges = nil
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		})
		waitRolledOut(t, cs, name)
		d, err := cs.AppsV1().Deployments("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		d.Spec.Replicas = ptr.To[int32](1)
		if _, err := cs.AppsV1().Deployments("default").Update(ctx, d, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		var withPod string
		waitFor(t, "one "+name+" pod left", time.Minute, func(ctx context.Context) (bool, error) {
			pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
			if err != nil || len(pods.Items) != 1 {
				return false, fmt.Errorf("%v pods (%v)", len(pods.Items), err)
			}
			withPod = pods.Items[0].Status.HostIP
			return withPod != "", nil
		})
		waitFor(t, "status listing only "+withPod, 2*time.Minute, func(ctx context.Context) (bool, error) {
			got := ingressIPs(ctx, cs, name)
			return slices.Equal(got, []string{withPod}), fmt.Errorf("ingress %v", got)
		})
		waitServes(t, withPod, port, name+"-")
		for _, ip := range nodeIPs {
			if ip == withPod {
				continue
			}
			if body, err := fetch(ip, port); err == nil {
				t.Errorf("node %s, which has no endpoint, served %q under Local", ip, body)
			}
		}
	})

	t.Run("deleting the Service removes its DaemonSet", func(t *testing.T) {
		if len(daemonSets(t, cs, name)) != 1 {
			t.Fatalf("want one DaemonSet for %s before the delete", name)
		}
		if err := cs.CoreV1().Services("default").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the DaemonSet gone", time.Minute, func(ctx context.Context) (bool, error) {
			n := len(daemonSets(t, cs, name))
			return n == 0, fmt.Errorf("%d DaemonSets", n)
		})
	})
}

func internalIPs(t *testing.T, cs kubernetes.Interface) []string {
	t.Helper()
	nodes, err := cs.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, n := range nodes.Items {
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				ips = append(ips, a.Address)
			}
		}
	}
	return ips
}

func ingressIPs(ctx context.Context, cs kubernetes.Interface, name string) []string {
	s, err := cs.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	var ips []string
	for _, i := range s.Status.LoadBalancer.Ingress {
		ips = append(ips, i.IP)
	}
	return ips
}

func waitIngress(t *testing.T, cs kubernetes.Interface, name string, n int) []string {
	t.Helper()
	var got []string
	waitFor(t, fmt.Sprintf("%d addresses in the status of %s", n, name), 2*time.Minute, func(ctx context.Context) (bool, error) {
		got = ingressIPs(ctx, cs, name)
		return len(got) == n, fmt.Errorf("ingress %v", got)
	})
	return got
}

func setService(t *testing.T, cs kubernetes.Interface, name string, mod func(*corev1.Service)) {
	t.Helper()
	waitFor(t, "updating Service "+name, 30*time.Second, func(ctx context.Context) (bool, error) {
		s, err := cs.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		mod(s)
		_, err = cs.CoreV1().Services("default").Update(ctx, s, metav1.UpdateOptions{})
		return err == nil, err // (a conflict with the controller's status write is retried)
	})
}

func daemonSets(t *testing.T, cs kubernetes.Interface, name string) []appsv1.DaemonSet {
	t.Helper()
	l, err := cs.AppsV1().DaemonSets("kube-system").List(context.Background(), metav1.ListOptions{LabelSelector: lbOwner + name})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

// waitRolledOut waits until the Service's forwarders run the current
// template on every node and are ready: what they refuse is then theirs to
// refuse, not a gap in a rolling update.
func waitRolledOut(t *testing.T, cs kubernetes.Interface, name string) {
	t.Helper()
	time.Sleep(time.Second) // (the controller renders the change first)
	waitFor(t, "the forwarders of "+name+" rolled out", 2*time.Minute, func(ctx context.Context) (bool, error) {
		l, err := cs.AppsV1().DaemonSets("kube-system").List(ctx, metav1.ListOptions{LabelSelector: lbOwner + name})
		if err != nil || len(l.Items) != 1 {
			return false, fmt.Errorf("DaemonSets: %v", err)
		}
		d := l.Items[0]
		s := d.Status
		return s.ObservedGeneration == d.Generation && s.DesiredNumberScheduled > 0 && s.UpdatedNumberScheduled == s.DesiredNumberScheduled &&
				s.NumberReady == s.DesiredNumberScheduled && s.NumberUnavailable == 0,
			fmt.Errorf("generation %d/%d, %d desired, %d updated, %d ready", s.ObservedGeneration, d.Generation,
				s.DesiredNumberScheduled, s.UpdatedNumberScheduled, s.NumberReady)
	})
}

// fetch GETs http://ip:port/ from this process on a new connection.
func fetch(ip string, port int) (string, error) {
	client := http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + net.JoinHostPort(ip, fmt.Sprint(port)) + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b)), err
}

// waitServes waits until ip:port answers with a body starting with prefix
// (the new forwarder's rules take a moment on the node).
func waitServes(t *testing.T, ip string, port int, prefix string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("http://%s:%d/ answering from the host", ip, port), time.Minute, func(context.Context) (bool, error) {
		body, err := fetch(ip, port)
		if err != nil {
			return false, err
		}
		return strings.HasPrefix(body, prefix), fmt.Errorf("body %q", body)
	})
}

// dumpForwarders logs what the Service's forwarders are doing.
func dumpForwarders(t *testing.T, cs kubernetes.Interface, name string) {
	ctx := context.Background()
	if s, err := cs.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{}); err == nil {
		t.Logf("Service %s: %+v status %+v", name, s.Spec, s.Status)
	}
	pods, err := cs.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: lbOwner + name})
	if err != nil {
		t.Logf("listing forwarders: %v", err)
		return
	}
	for _, p := range pods.Items {
		t.Logf("forwarder %s on %s (%s): phase %s, conditions %+v, annotations %v, args %q", p.Name, p.Spec.NodeName, p.Status.PodIP,
			p.Status.Phase, p.Status.Conditions, p.Annotations, p.Spec.Containers[0].Args)
		if b, err := cs.CoreV1().Pods("kube-system").GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(ctx); err == nil {
			t.Logf("forwarder %s log:\n%s", p.Name, b)
		}
	}
}
