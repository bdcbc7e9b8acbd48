package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/utils/ptr"

	"github.com/kubesplit/kubesplit/e2e/dockercluster"
	"github.com/kubesplit/kubesplit/pkg/layout"
)

// execPhase times exec round trips via the apiserver + gateway + tunnel and
// via a second apiserver with a route to the node (interleaved: the
// difference is the tunnel's cost), then straight to the kubelet.
// perDial adds the per-dial egress apiserver as a third path.
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
	routed, err := b.directAPI()
	if err != nil {
		return err
	}
	fns := []func() (float64, error){execVia(c.Config).once, execVia(routed).once}
	if perDial {
		pd, err := b.perDialAPI()
		if err != nil {
			return err
		}
		fns = append(fns, execVia(pd).once)
	}
	lat, err := interleave(n, fns...)
	if err != nil {
		return fmt.Errorf("exec through the apiservers: %w", err)
	}
	r.ExecTunnelP50Ms, r.ExecTunnelP99Ms = pct(lat[0], 50), pct(lat[0], 99)
	r.ExecNoTunnelP50Ms, r.ExecNoTunnelP99Ms = pct(lat[1], 50), pct(lat[1], 99)
	r.ExecOverheadP50Ms = r.ExecTunnelP50Ms - r.ExecNoTunnelP50Ms
	if perDial {
		r.ExecPerDialP50Ms, r.ExecPerDialP99Ms = pct(lat[2], 50), pct(lat[2], 99)
		r.ExecPerDialOverheadP50Ms = r.ExecPerDialP50Ms - r.ExecNoTunnelP50Ms
	}
	if lat, err = interleave(n, execFn(direct).once); err != nil {
		return fmt.Errorf("exec straight to the kubelet: %w", err)
	}
	r.ExecDirectP50Ms, r.ExecDirectP99Ms = pct(lat[0], 50), pct(lat[0], 99)
	return nil
}

// directAPI starts (once) a second apiserver on both networks, without the
// egress selector (it dials kubelets and pods directly), and returns a config for it.
func (b *bench) directAPI() (*rest.Config, error) {
	if b.direct == nil {
		cfg, err := b.startAPIServer("apiserver-direct", false)
		if err != nil {
			return nil, err
		}
		b.direct = cfg
	}
	return b.direct, nil
}

// perDialAPI starts (once) a third apiserver which, like the first, has no
// route to the nodes and reaches them through the gateway, but with a new
// mutual-TLS connection to it per dial (--egress-relay=false) instead of
// streams of one long-lived connection: the egress relay's A/B in one run.
func (b *bench) perDialAPI() (*rest.Config, error) {
	if b.perDial == nil {
		cfg, err := b.startAPIServer("apiserver-perdial", true, "--egress-gateway", "https://tunnel-gateway:8131", "--egress-relay=false")
		if err != nil {
			return nil, err
		}
		b.perDial = cfg
	}
	return b.perDial, nil
}

// startAPIServer runs one more apiserver on the cluster's datastore, with
// a state directory of its own, and waits for its /readyz. tunneled keeps
// it off the edge network (and unable to route there, like the first);
// otherwise it joins the edge network and dials nodes directly.
func (b *bench) startAPIServer(member string, tunneled bool, extra ...string) (*rest.Config, error) {
	c := b.c
	ctx := context.Background()
	name := c.Name(member)
	state := fmt.Sprintf("/data/state/apiserver:uid=%d,gid=%d,mode=0700", dockercluster.NonRoot, dockercluster.NonRoot)
	args := []string{"run", "-d", "--name", name, "--label", "kubesplit.test=" + c.ID,
		"--network", c.Control, "-v", c.DataDir + ":/data", "--tmpfs", state, "kubesplit/apiserver:" + dockercluster.DefaultTag(),
		"--data-dir", "/data", "--datastore-endpoint", "https://datastore:2379", "--bind-address", "0.0.0.0", "--secure-port", "6443"}
	if _, err := dockercluster.Docker(ctx, append(args, extra...)...); err != nil {
		return nil, err
	}
	if tunneled {
		subnet, err := dockercluster.Docker(ctx, "network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", c.Edge)
		if err != nil {
			return nil, err
		}
		if out, err := c.InNetns(ctx, member, "ip", "route", "add", "unreachable", subnet); err != nil {
			return nil, fmt.Errorf("%v: %s", err, out)
		}
	} else if _, err := dockercluster.Docker(ctx, "network", "connect", c.Edge, name); err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(c.Config)
	cfg.Host = "https://" + c.IP(member, c.Control) + ":6443"
	tlsCfg, err := rest.TLSConfigFor(cfg)
	if err != nil {
		return nil, err
	}
	cl := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := cl.Get(cfg.Host + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return cfg, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s not ready: %v", member, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
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
