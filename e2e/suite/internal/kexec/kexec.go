// Package kexec runs commands in pods the way kubectl exec does (through the
// apiserver, the gateway and the node's tunnel), for the suite and its
// benchmarks.
package kexec

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
)

// Exec runs cmd in the first container of pod ns/name (the API wants a
// container when a pod has several; kubectl picks the first) and writes its
// stdout to w; an error carries its stderr and wraps the exit status
// (k8s.io/client-go/util/exec.ExitError).
func Exec(ctx context.Context, cfg *rest.Config, cs kubernetes.Interface, ns, name string, w io.Writer, cmd ...string) error {
	p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	req := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(name).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: p.Spec.Containers[0].Name, Command: cmd, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ex, err := remotecommand.NewWebSocketExecutor(cfg, "GET", req.URL().String())
	if err != nil {
		return err
	}
	var stderr strings.Builder
	if err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: w, Stderr: &stderr}); err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// Latency is what `testapp dial-latency` prints.
type Latency struct {
	N      int     `json:"n"`
	Errors int     `json:"errors"`
	P50ms  float64 `json:"p50_ms"`
	P99ms  float64 `json:"p99_ms"`
}

// DialLatency has pod ns/name open n new TCP connections to addr, one after
// the other, and returns the percentiles of connect().
func DialLatency(ctx context.Context, cfg *rest.Config, cs kubernetes.Interface, ns, name, addr string, n int) (Latency, error) {
	var b strings.Builder
	var l Latency
	if err := Exec(ctx, cfg, cs, ns, name, &b, "/testapp", "dial-latency", addr, strconv.Itoa(n)); err != nil {
		return l, fmt.Errorf("dial-latency: %w: %s", err, b.String())
	}
	return l, json.Unmarshal([]byte(b.String()), &l)
}
