package app

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The chart's online restore stops the roles that write (apiservers,
// controllers, scheduler: Deployments beside the Job in the host cluster)
// while it rewrites the key space, and starts them again after, as a k3s
// restore stops its server: nothing acts on a half-restored state, and the
// apiservers list the restored one when they start.
//
// These are three REST calls to the host cluster's API made with the pod's
// service account. They are written against net/http on purpose: client-go
// would bring Kubernetes' whole typed API into a binary that talks to no
// Kubernetes API otherwise, for three calls.

// pauseTarget is a Deployment to stop and the replicas to start it with.
type pauseTarget struct {
	name     string
	replicas int
}

// parsePause reads NAME=REPLICAS,... (the chart renders its values there).
func parsePause(s string) ([]pauseTarget, error) {
	if s == "" {
		return nil, nil
	}
	var out []pauseTarget
	for _, part := range strings.Split(s, ",") {
		name, n, ok := strings.Cut(part, "=")
		replicas, err := strconv.Atoi(n)
		if !ok || name == "" || err != nil || replicas < 0 {
			return nil, fmt.Errorf("--pause %q: want DEPLOYMENT=REPLICAS,... (the replicas to start it with after the restore), e.g. apiserver=2,scheduler=2", part)
		}
		out = append(out, pauseTarget{name, replicas})
	}
	return out, nil
}

// hostAPI is the host cluster's API as seen from a pod.
type hostAPI struct {
	base      string
	namespace string
	token     string
	client    *http.Client
}

const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func inClusterAPI(dir string) (*hostAPI, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	token, errT := os.ReadFile(filepath.Join(dir, "token"))
	ns, errN := os.ReadFile(filepath.Join(dir, "namespace"))
	ca, errC := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if host == "" || port == "" || errors.Join(errT, errN, errC) != nil {
		return nil, fmt.Errorf("--pause works in a pod with a service account token (the chart's restore Job): %w", errors.Join(errT, errN, errC))
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("%s/ca.crt holds no certificate", dir)
	}
	return &hostAPI{
		base:      "https://" + net.JoinHostPort(host, port),
		namespace: strings.TrimSpace(string(ns)),
		token:     strings.TrimSpace(string(token)),
		client:    &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}},
	}, nil
}

func (h *hostAPI) do(ctx context.Context, method, path, contentType string, body, into any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.base+path, r)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+h.token)
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		var status struct{ Message string }
		_ = json.Unmarshal(b, &status)
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, status.Message)
	}
	if into != nil {
		return json.Unmarshal(b, into)
	}
	return nil
}

type deployment struct {
	Spec struct {
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
	} `json:"spec"`
	Status struct {
		AvailableReplicas int `json:"availableReplicas"`
	} `json:"status"`
}

func (h *hostAPI) deploymentPath(name string) string {
	return "/apis/apps/v1/namespaces/" + url.PathEscape(h.namespace) + "/deployments/" + url.PathEscape(name)
}

func (h *hostAPI) scale(ctx context.Context, name string, replicas int) error {
	return h.do(ctx, http.MethodPatch, h.deploymentPath(name)+"/scale", "application/merge-patch+json",
		map[string]any{"spec": map[string]any{"replicas": replicas}}, nil)
}

// pods counts the pods of a Deployment, terminating ones included.
func (h *hostAPI) pods(ctx context.Context, name string) (int, error) {
	var d deployment
	if err := h.do(ctx, http.MethodGet, h.deploymentPath(name), "", nil, &d); err != nil {
		return 0, err
	}
	var sel []string
	for k, v := range d.Spec.Selector.MatchLabels {
		sel = append(sel, k+"="+v)
	}
	if len(sel) == 0 {
		return 0, fmt.Errorf("deployment %s has no matchLabels selector", name)
	}
	var list struct{ Items []json.RawMessage }
	path := "/api/v1/namespaces/" + url.PathEscape(h.namespace) + "/pods?labelSelector=" + url.QueryEscape(strings.Join(sel, ","))
	if err := h.do(ctx, http.MethodGet, path, "", nil, &list); err != nil {
		return 0, err
	}
	return len(list.Items), nil
}

func (h *hostAPI) available(ctx context.Context, name string) (int, error) {
	var d deployment
	err := h.do(ctx, http.MethodGet, h.deploymentPath(name), "", nil, &d)
	return d.Status.AvailableReplicas, err
}

// stop scales every target to zero and waits until their pods are gone.
func (h *hostAPI) stop(ctx context.Context, targets []pauseTarget, log io.Writer) error {
	began := time.Now()
	for _, t := range targets {
		if err := h.scale(ctx, t.name, 0); err != nil {
			return fmt.Errorf("stopping %s for the restore: %w", t.name, err)
		}
	}
	for _, t := range targets {
		if err := poll(ctx, func() (bool, error) {
			n, err := h.pods(ctx, t.name)
			return n == 0, err
		}); err != nil {
			return fmt.Errorf("waiting for %s's pods to stop: %w", t.name, err)
		}
		fmt.Fprintf(log, "stopped %s (%v)\n", t.name, time.Since(began).Round(100*time.Millisecond))
	}
	return nil
}

// start scales every target to its replicas and waits until they are available.
func (h *hostAPI) start(ctx context.Context, targets []pauseTarget, log io.Writer) error {
	began := time.Now()
	for _, t := range targets {
		if err := h.scale(ctx, t.name, t.replicas); err != nil {
			return fmt.Errorf("starting %s after the restore: %w", t.name, err)
		}
	}
	for _, t := range targets {
		if err := poll(ctx, func() (bool, error) {
			n, err := h.available(ctx, t.name)
			return n >= t.replicas, err
		}); err != nil {
			return fmt.Errorf("waiting for %s to be available: %w", t.name, err)
		}
		fmt.Fprintf(log, "started %s (%d replicas, available after %v)\n", t.name, t.replicas, time.Since(began).Round(100*time.Millisecond))
	}
	return nil
}

// poll calls f every second until it is done or ctx ends; f's last error
// explains a timeout.
func poll(ctx context.Context, f func() (bool, error)) error {
	var last error
	for {
		done, err := f()
		if done && err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), last)
		case <-time.After(time.Second):
		}
	}
}
