package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// podMemory is one kube-system pod's idle memory.
type podMemory struct {
	Pod  string `json:"pod"`
	Node string `json:"node"`
	// WorkingSetMiB is the pod cgroup's usage less its inactive file pages
	// (what the kubelet and `kubectl top` call working set); RSSMiB its
	// anonymous memory.
	WorkingSetMiB float64 `json:"working_set_mib"`
	RSSMiB        float64 `json:"rss_mib"`
	// MetricsAPIMiB is the pod's memory from the metrics API (the sum of its
	// containers), when metrics-server serves it.
	MetricsAPIMiB float64 `json:"metrics_api_mib,omitempty"`
	// Ready and Restarts flag a pod whose idle number is not one (it is
	// starting over, or failing its readiness probe).
	Ready    bool  `json:"ready"`
	Restarts int32 `json:"restarts"`
}

// podCgroupMemory prints "usage N", "inactive N" and "rss N" (bytes) for
// the pod cgroup named $1 below the kubelet's cgroupRoot $2, on cgroup v1
// (the memory hierarchy) or v2 (the unified one).
const podCgroupMemory = `
for base in /sys/fs/cgroup/memory /sys/fs/cgroup/unified /sys/fs/cgroup; do
  d=$(find "$base$2/kubepods" -maxdepth 3 -type d -name "$1" 2>/dev/null | head -n1)
  [ -n "$d" ] || continue
  if [ -f "$d/memory.usage_in_bytes" ]; then
    echo usage $(cat "$d/memory.usage_in_bytes")
    awk '$1=="total_inactive_file"{print "inactive",$2} $1=="total_rss"{print "rss",$2}' "$d/memory.stat"
    exit 0
  elif [ -f "$d/memory.current" ]; then
    echo usage $(cat "$d/memory.current")
    awk '$1=="inactive_file"{print "inactive",$2} $1=="anon"{print "rss",$2}' "$d/memory.stat"
    exit 0
  fi
done
echo "no memory cgroup for $1 below $2" >&2
exit 1`

// kubeSystemMemory reads every running kube-system pod's memory from its
// pod cgroup inside its node's container, and from the metrics API if it
// is served.
func (b *bench) kubeSystemMemory(ctx context.Context) ([]podMemory, error) {
	c := b.c
	pods, err := c.Client.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	fromAPI := metricsAPIMemory(ctx, b)
	var out []podMemory
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodRunning || p.Spec.NodeName == "" {
			continue
		}
		got, err := c.Exec(p.Spec.NodeName, "sh", "-c", podCgroupMemory, "sh", "pod"+string(p.UID), c.CgroupRoot(p.Spec.NodeName))
		if err != nil {
			return nil, fmt.Errorf("memory of pod kube-system/%s on %s: %w", p.Name, p.Spec.NodeName, err)
		}
		v := map[string]float64{}
		for _, line := range strings.Split(got, "\n") {
			if f := strings.Fields(line); len(f) == 2 {
				v[f[0]], _ = strconv.ParseFloat(f[1], 64)
			}
		}
		const mib = 1 << 20
		m := podMemory{Pod: p.Name, Node: p.Spec.NodeName, WorkingSetMiB: max(v["usage"]-v["inactive"], 0) / mib,
			RSSMiB: v["rss"] / mib, MetricsAPIMiB: fromAPI[p.Name] / mib, Ready: true}
		for _, st := range p.Status.ContainerStatuses {
			m.Restarts += st.RestartCount
			m.Ready = m.Ready && st.Ready
			if t := st.LastTerminationState.Terminated; t != nil {
				fmt.Fprintf(os.Stderr, "nodebench: kube-system/%s container %s restarted %d times, last: %s exit %d %s\n",
					p.Name, st.Name, st.RestartCount, t.Reason, t.ExitCode, strings.TrimSpace(t.Message))
			}
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pod < out[j].Pod })
	return out, nil
}

// metricsAPIMemory returns kube-system pods' memory in bytes from
// metrics.k8s.io, or nothing if that API is not served (metrics-server not
// deployed, or no scrape yet within 30 s).
func metricsAPIMemory(ctx context.Context, b *bench) map[string]float64 {
	var list struct {
		Items []struct {
			Metadata   struct{ Name string } `json:"metadata"`
			Containers []struct {
				Usage map[string]string `json:"usage"`
			} `json:"containers"`
		} `json:"items"`
	}
	rc := b.c.Client.CoreV1().RESTClient()
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Second) {
		var raw []byte
		if raw, err = rc.Get().AbsPath("/apis/metrics.k8s.io/v1beta1/namespaces/kube-system/pods").DoRaw(ctx); err == nil {
			if err = json.Unmarshal(raw, &list); err == nil && len(list.Items) > 0 {
				break
			}
		}
	}
	out := map[string]float64{}
	for _, it := range list.Items {
		for _, ct := range it.Containers {
			if q, err := resource.ParseQuantity(ct.Usage["memory"]); err == nil {
				out[it.Metadata.Name] += float64(q.Value())
			}
		}
	}
	if len(out) == 0 {
		fmt.Fprintf(os.Stderr, "nodebench: no pod memory from the metrics API (%v): reporting pod cgroups only\n", err)
	}
	return out
}

// loadBalancer creates a LoadBalancer Service, so that ServiceLB runs its
// forwarder pods, and waits (bounded) for them; it returns the clean-up.
// Without ServiceLB (disabled, or not built in) the wait ends after a
// minute and the memory table has no forwarder.
func (b *bench) loadBalancer(ctx context.Context) (func(), error) {
	cs := b.c.Client
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "bench-lb"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer,
		Selector: map[string]string{"app": "bench-lb"}, Ports: []corev1.ServicePort{{Port: 18080}}}}
	if _, err := cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	done := func() { _ = cs.CoreV1().Services("default").Delete(ctx, svc.Name, metav1.DeleteOptions{}) }
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		list, err := cs.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "kubesplit.io/servicelb-service=bench-lb"})
		running := 0
		if err == nil {
			for _, p := range list.Items {
				if p.Status.Phase == corev1.PodRunning {
					running++
				}
			}
		}
		if running > 0 && running == len(list.Items) {
			return done, nil
		}
	}
	fmt.Fprintln(os.Stderr, "nodebench: no ServiceLB forwarder pod ran within a minute of creating a LoadBalancer Service")
	return done, nil
}
