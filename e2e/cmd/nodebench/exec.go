package main

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/pkg/layout"
)

// execPhase times exec round trips via the apiserver + gateway + tunnel and
// via a second apiserver with a route to the node (interleaved: the
// difference is the tunnel's cost), then straight to the kubelet.
// perDial adds two fresh tunneled apiservers, one with the egress relay and
// one with the per-dial egress, as two more paths.
func (b *bench) execPhase(ctx context.Context, r *result, n int, perDial bool) error {
	c := b.c
	r.Execs = n
	pod, err := c.Client.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "exec-target"},
		Spec: corev1.PodSpec{NodeName: "node-1", TerminationGracePeriodSeconds: ptr.To(int64(1)), Containers: []corev1.Container{{
			Name: "app", Image: b.image, ImagePullPolicy: corev1.PullNever, Args: []string{"sleep"}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	defer func() { _ = c.Client.CoreV1().Pods("default").Delete(ctx, pod.Name, metav1.DeleteOptions{}) }()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		if pod, err = c.Client.CoreV1().Pods("default").Get(ctx, pod.Name, metav1.GetOptions{}); err == nil && pod.Status.Phase == corev1.PodRunning {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("exec-target pod not Running")
		}
	}
	// execVia execs in the pod through the apiserver that cfg points at
	execVia := func(cfg *rest.Config) execFn {
		return func() (*remotecommand.StreamOptions, remotecommand.Executor, error) {
			req := c.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace("default").Name(pod.Name).SubResource("exec").
				VersionedParams(&corev1.PodExecOptions{Container: "app", Command: []string{"/testapp", "exit", "0"}, Stdout: true, Stderr: true}, scheme.ParameterCodec)
			u := *req.URL()
			u.Host = strings.TrimPrefix(cfg.Host, "https://")
			ex, err := remotecommand.NewSPDYExecutor(cfg, "POST", &u)
			return &remotecommand.StreamOptions{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}}, ex, err
		}
	}
	d := layout.Dir(c.DataDir)
	kubeletCfg := &rest.Config{Host: "https://" + c.IP("node-1", c.Edge) + ":10250", TLSClientConfig: rest.TLSClientConfig{
		CAFile: d.ClusterCA().Cert, CertFile: d.APIServerKubeletClient().Cert, KeyFile: d.APIServerKubeletClient().Key}}
	direct := func() (*remotecommand.StreamOptions, remotecommand.Executor, error) { // no apiserver at all
		u, _ := url.Parse(kubeletCfg.Host + "/exec/default/" + pod.Name + "/app?command=/testapp&command=exit&command=0&output=1&error=1")
		ex, err := remotecommand.NewSPDYExecutor(kubeletCfg, "POST", u)
		return &remotecommand.StreamOptions{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}}, ex, err
	}
	members := []string{routedAPI}
	if perDial {
		members = append(members, relayAPI, perDialAPI)
	}
	cfgs, err := b.apiservers(members...)
	if err != nil {
		return err
	}
	fns := []func() (float64, error){execVia(c.Config).once}
	for _, cfg := range cfgs {
		fns = append(fns, execVia(cfg).once)
	}
	// the tunneled apiservers' egress dials: the cluster's and, with
	// -per-dial, the two fresh ones (the routed one has no egress selector)
	dialCfgs := []*rest.Config{c.Config}
	if perDial {
		dialCfgs = append(dialCfgs, cfgs[1], cfgs[2])
	}
	var lat [][]float64
	dials, err := egressDialsDuring(ctx, dialCfgs, func() (err error) {
		lat, err = interleave(n, fns...)
		return err
	})
	if err != nil {
		return fmt.Errorf("exec through the apiservers: %w", err)
	}
	r.ExecDialTunnel = &dials[0]
	r.ExecTunnelP50Ms, r.ExecTunnelP99Ms = pct(lat[0], 50), pct(lat[0], 99)
	r.ExecNoTunnelP50Ms, r.ExecNoTunnelP99Ms = pct(lat[1], 50), pct(lat[1], 99)
	r.ExecOverheadP50Ms = r.ExecTunnelP50Ms - r.ExecNoTunnelP50Ms
	r.ExecOverheadPairedMs = pairedMedian(lat[0], lat[1])
	if perDial {
		relay, pd := lat[2], lat[3]
		r.ExecRelayP50Ms, r.ExecRelayP99Ms = pct(relay, 50), pct(relay, 99)
		r.ExecPerDialP50Ms, r.ExecPerDialP99Ms = pct(pd, 50), pct(pd, 99)
		r.ExecRelayOverheadPairedMs = pairedMedian(relay, lat[1])
		r.ExecPerDialOverheadPairedMs = pairedMedian(pd, lat[1])
		r.ExecRelayMinusPerDialPairedMs = pairedMedian(relay, pd)
		r.ExecDialRelay, r.ExecDialPerDial = &dials[1], &dials[2]
	}
	if lat, err = interleave(n, execFn(direct).once); err != nil {
		return fmt.Errorf("exec straight to the kubelet: %w", err)
	}
	r.ExecDirectP50Ms, r.ExecDirectP99Ms = pct(lat[0], 50), pct(lat[0], 99)
	return nil
}

type execFn func() (*remotecommand.StreamOptions, remotecommand.Executor, error)

// once times one exec round trip in milliseconds.
func (mk execFn) once() (float64, error) {
	opts, ex, err := mk()
	if err != nil {
		return 0, err
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ex.StreamWithContext(ctx, *opts); err != nil {
		return 0, err
	}
	return msSince(start), nil
}

// dialStats is an apiserver's egress dials so far
// (apiserver_egress_dialer_dial_duration_seconds: from its dial of the
// egress to the CONNECT's 200), summed over its label sets: how many, their
// total time, and how many took at most 5 ms (the histogram's first bucket).
// Read before and after a phase, it splits a tunneled exec's overhead into
// the dial and the rest (the round trips through the tunnel).
type dialStats struct{ n, ms, fast float64 }

// egressDials reads an apiserver's dialStats from its /metrics.
func egressDials(ctx context.Context, cfg *rest.Config) (dialStats, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return dialStats{}, err
	}
	raw, err := cs.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return dialStats{}, err
	}
	return dialStatsFrom(raw)
}

// dialStatsFrom reads the egress dial histogram from a /metrics page, with
// the text format's own parser (prometheus/common, which client-go's
// dependencies bring already).
func dialStatsFrom(raw []byte) (dialStats, error) {
	var d dialStats
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		return d, fmt.Errorf("the apiserver's /metrics: %w", err)
	}
	if f := families["apiserver_egress_dialer_dial_duration_seconds"]; f != nil {
		for _, m := range f.GetMetric() {
			h := m.GetHistogram()
			d.n += float64(h.GetSampleCount())
			d.ms += h.GetSampleSum() * 1000
			for _, b := range h.GetBucket() {
				if b.GetUpperBound() == 0.005 {
					d.fast += float64(b.GetCumulativeCount())
				}
			}
		}
	}
	return d, nil
}

// egressDialsDuring reads egressDials of each config before and after f
// and returns, per config, f's dials: their mean in ms and the share that
// took at most 5 ms, in percent (0, 0 where none).
func egressDialsDuring(ctx context.Context, cfgs []*rest.Config, f func() error) ([]dialResult, error) {
	before := make([]dialStats, len(cfgs))
	for i, cfg := range cfgs {
		d, err := egressDials(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("egress dial metrics: %w", err)
		}
		before[i] = d
	}
	if err := f(); err != nil {
		return nil, err
	}
	out := make([]dialResult, len(cfgs))
	for i, cfg := range cfgs {
		d, err := egressDials(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("egress dial metrics: %w", err)
		}
		if dn := d.n - before[i].n; dn > 0 {
			out[i] = dialResult{MeanMs: (d.ms - before[i].ms) / dn, Under5msPct: 100 * (d.fast - before[i].fast) / dn}
		}
	}
	return out, nil
}

// dialResult is one path's egress dials in a phase.
type dialResult struct {
	MeanMs      float64 `json:"mean_ms"`
	Under5msPct float64 `json:"under_5ms_percent"`
}

func (d dialResult) String() string {
	return fmt.Sprintf("%.1f ms, %.0f%% ≤ 5 ms", d.MeanMs, d.Under5msPct)
}
