package compose

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// loadBalancerFromHost puts a LoadBalancer Service in front of the web
// pods and fetches it from this process (the host) at every address in
// its status: ServiceLB lists each node, and the host reaches the edge
// network's node addresses directly (the edge bridge is the host's). The
// Service's forwarders go with it. (waitFor here is done only when cond
// returns no error.)
func loadBalancerFromHost(t *testing.T, c *cluster) {
	ctx := context.Background()
	const name, port = "web-lb", 8082
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Port: port, TargetPort: intstr.FromInt32(8080)}}},
	}
	if _, err := c.client.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.client.CoreV1().Services("default").Delete(ctx, name, metav1.DeleteOptions{}) }()
	var ips []string
	waitFor(t, "both nodes in the Service's status", 2*time.Minute, func(ctx context.Context) (bool, error) {
		s, err := c.client.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		ips = nil
		for _, i := range s.Status.LoadBalancer.Ingress {
			ips = append(ips, i.IP)
		}
		if len(ips) != 2 {
			return false, fmt.Errorf("ingress %v", ips)
		}
		return true, nil
	})
	client := http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for _, ip := range ips {
		url := "http://" + net.JoinHostPort(ip, fmt.Sprint(port)) + "/"
		waitFor(t, url+" answering the host", time.Minute, func(context.Context) (bool, error) {
			resp, err := client.Get(url)
			if err != nil {
				return false, err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil || !strings.HasPrefix(string(b), "web-") {
				return false, fmt.Errorf("body %q, %v", b, err)
			}
			return true, nil
		})
	}
	if err := c.client.CoreV1().Services("default").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the Service's forwarders gone", time.Minute, func(ctx context.Context) (bool, error) {
		l, err := c.client.AppsV1().DaemonSets("kube-system").List(ctx, metav1.ListOptions{
			LabelSelector: "kubesplit.io/servicelb-namespace=default,kubesplit.io/servicelb-service=" + name})
		if err != nil {
			return false, err
		}
		if len(l.Items) != 0 {
			return false, fmt.Errorf("%d DaemonSets", len(l.Items))
		}
		return true, nil
	})
}

// ingressFromHost does what the README shows: `kubectl create ingress`
// for the web Service, then a request from this process (the host) to the
// address in the Ingress's status with the rule's Host: Traefik, the
// bundled ingress controller, answers from a web pod.
func ingressFromHost(t *testing.T, c *cluster) {
	if out, err := c.kubectl("create", "ingress", "web", "--rule", "web.example/*=web:80"); err != nil {
		t.Fatalf("kubectl create ingress: %v\n%s", err, out)
	}
	defer func() { _, _ = c.kubectl("delete", "ingress", "web") }()
	var ip string
	waitFor(t, "an address in the Ingress's status", 3*time.Minute, func(ctx context.Context) (bool, error) {
		ing, err := c.client.NetworkingV1().Ingresses("default").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if len(ing.Status.LoadBalancer.Ingress) == 0 {
			return false, fmt.Errorf("no address yet")
		}
		ip = ing.Status.LoadBalancer.Ingress[0].IP
		return true, nil
	})
	client := http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	waitFor(t, "http://web.example/ at "+ip+" served by a web pod", time.Minute, func(context.Context) (bool, error) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+ip+"/", nil)
		req.Host = "web.example"
		resp, err := client.Do(req)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(b), "web-") {
			return false, fmt.Errorf("%d %q, %v", resp.StatusCode, b, err)
		}
		return true, nil
	})
}
