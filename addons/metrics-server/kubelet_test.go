package main

import (
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/metrics-server/cmd/metrics-server/app/options"
	"sigs.k8s.io/metrics-server/pkg/scraper/client/resource"
)

// What a kubelet's /metrics/resource answers, cut down to one node and one
// container.
const kubeletMetrics = `# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 12.5 1700000000000
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 1.048576e+08 1700000000000
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="web",namespace="default",pod="web-1"} 0.5 1700000000000
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="web",namespace="default",pod="web-1"} 4.194304e+06 1700000000000
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container="web",namespace="default",pod="web-1"} 1.6999e+09 1700000000000
`

// metrics-server's own kubelet client, configured by kubeletViaAPIServer,
// asks the apiserver's node proxy with the apiserver's credentials (and
// TLS trust), and decodes the kubelet's answer as usual.
func TestKubeletViaAPIServer(t *testing.T) {
	t.Parallel()
	var got []string
	apiserver := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("Authorization"))
		if r.URL.Path != "/api/v1/nodes/node-1/proxy/metrics/resource" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(kubeletMetrics))
	}))
	t.Cleanup(apiserver.Close)
	cfg := &rest.Config{Host: apiserver.URL, BearerToken: "sa-token", TLSClientConfig: rest.TLSClientConfig{CAData: pemOf(t, apiserver)}}

	kc := options.NewKubeletClientOptions().Config(&rest.Config{Host: "https://unused"})
	if err := kubeletViaAPIServer(kc, cfg); err != nil {
		t.Fatal(err)
	}
	c, err := resource.NewForConfig(kc)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: "172.18.0.5"}, {Type: corev1.NodeHostName, Address: "node-1"},
	}}}
	batch, err := c.GetMetrics(context.Background(), node)
	if err != nil {
		t.Fatalf("GetMetrics: %v (requests: %q)", err, got)
	}
	if want := []string{"GET /api/v1/nodes/node-1/proxy/metrics/resource Bearer sa-token"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("requests %q, want %q", got, want)
	}
	n, ok := batch.Nodes["node-1"]
	if !ok || n.CumulativeCPUUsed != 12_500_000_000 || n.MemoryUsage != 104857600 {
		t.Fatalf("node metrics %+v (ok %v), want 12.5 CPU-seconds and 100 MiB", n, ok)
	}
	if len(batch.Pods) != 1 {
		t.Fatalf("pod metrics %+v, want web-1's", batch.Pods)
	}
}

func TestCheckViaAPIServerRefusesKubeletTLSFlags(t *testing.T) {
	t.Parallel()
	for name, set := range map[string]func(*options.KubeletClientOptions){
		"insecure":    func(o *options.KubeletClientOptions) { o.InsecureKubeletTLS = true },
		"plain http":  func(o *options.KubeletClientOptions) { o.DeprecatedCompletelyInsecureKubelet = true },
		"CA":          func(o *options.KubeletClientOptions) { o.KubeletCAFile = "/ca.crt" },
		"client cert": func(o *options.KubeletClientOptions) { o.KubeletClientCertFile, o.KubeletClientKeyFile = "/c", "/k" },
	} {
		o := options.NewKubeletClientOptions()
		set(o)
		if err := checkViaAPIServer(o); err == nil || !strings.Contains(err.Error(), "--kubelet-via-apiserver") {
			t.Errorf("%s: err %v, want one naming --kubelet-via-apiserver", name, err)
		}
	}
	if err := checkViaAPIServer(options.NewKubeletClientOptions()); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

func pemOf(t *testing.T, s *httptest.Server) []byte {
	t.Helper()
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
}
