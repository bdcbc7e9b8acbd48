// Package skew asks the apiserver for its version, for the version-skew check
// every role (and the node agent, for its kubelet and kube-proxy) makes before
// it starts.
package skew

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubesplit/kubesplit/pkg/version"
)

// ErrUnauthorized means the role's credentials were refused: retrying will not help.
var ErrUnauthorized = errors.New("the apiserver refused this role's credentials")

const (
	// Timeout bounds how long Check waits for the apiserver to answer.
	Timeout = 5 * time.Minute
	// attemptTimeout bounds one /version request (a relay that accepts the
	// connection and then hangs must not use up the whole wait).
	attemptTimeout = 10 * time.Second
	retryInterval  = 250 * time.Millisecond
	// reportInterval is how often Check reports that it is still waiting.
	reportInterval = 10 * time.Second
)

// Check waits for the apiserver to answer /version (through kubeconfig) and
// applies version.CheckSkew to role at roleVersion. It returns the
// apiserver's version, and a *version.SkewError when the policy forbids the
// pair. Transient errors (apiserver not answering, 5xx, 403 while its RBAC
// is set up) are retried every second for up to Timeout (or until ctx
// ends), and passed to waiting, if not nil, about every 10 seconds; refused
// credentials (ErrUnauthorized) and an unreadable kubeconfig are not retried.
func Check(ctx context.Context, kubeconfig string, role version.Role, roleVersion string, waiting func(error)) (string, error) {
	rc, err := restClient(kubeconfig)
	if err != nil {
		return "", err
	}
	var apiVersion string
	err = retry(ctx, "the apiserver did not answer /version for the version-skew check", waiting, func(ctx context.Context) error {
		var err error
		apiVersion, err = serverVersion(ctx, rc)
		return err
	})
	if err != nil {
		return "", err
	}
	return apiVersion, version.CheckSkew(role, roleVersion, apiVersion)
}

// WaitHealthy waits for the apiserver's /healthz (through kubeconfig) to
// answer ok, retrying as Check does, for up to Timeout. A starting apiserver
// answers /version before its post-start hooks (its default RBAC, priority
// levels, ...) are done and /healthz is ok; upstream's scheduler and
// controller-manager exit when that RBAC is missing at their start, and the
// controller-manager also when /healthz is not ok 10 seconds after it took
// its lease, so those roles wait here first. waiting, if not nil, gets the
// unhealthy answer (the failing checks) about every 10 seconds.
func WaitHealthy(ctx context.Context, kubeconfig string, waiting func(error)) error {
	rc, err := restClient(kubeconfig)
	if err != nil {
		return err
	}
	return retry(ctx, "the apiserver's /healthz was not ok", waiting, func(ctx context.Context) error {
		body, err := rc.Get().AbsPath("/healthz").Do(ctx).Raw()
		switch {
		case err == nil:
			return nil
		case apierrors.IsUnauthorized(err):
			return fmt.Errorf("%w: %v", ErrUnauthorized, err)
		case len(body) > 0:
			return fmt.Errorf("%w: %s", err, body)
		}
		return err
	})
}

// retry calls attempt, each call bounded by attemptTimeout, every
// retryInterval until it succeeds or fails with ErrUnauthorized, for up to
// Timeout or until ctx ends; waiting, if not nil, gets the last error about
// every reportInterval. what begins the error when Timeout passes.
func retry(ctx context.Context, what string, waiting func(error), attempt func(context.Context) error) error {
	wctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	lastReport := time.Now()
	for {
		actx, acancel := context.WithTimeout(wctx, attemptTimeout)
		err := attempt(actx)
		acancel()
		if err == nil || errors.Is(err, ErrUnauthorized) {
			return err
		}
		if waiting != nil && time.Since(lastReport) >= reportInterval {
			waiting(err)
			lastReport = time.Now()
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%s within %s: %w", what, Timeout, err)
		case <-time.After(retryInterval):
		}
	}
}

// APIServerVersion returns the apiserver's gitVersion, using kubeconfig (one attempt).
func APIServerVersion(ctx context.Context, kubeconfig string) (string, error) {
	rc, err := restClient(kubeconfig)
	if err != nil {
		return "", err
	}
	return serverVersion(ctx, rc)
}

func restClient(kubeconfig string) (rest.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", kubeconfig, err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return cs.Discovery().RESTClient(), nil
}

func serverVersion(ctx context.Context, rc rest.Interface) (string, error) {
	body, err := rc.Get().AbsPath("/version").Do(ctx).Raw()
	if err != nil {
		// 403 is retried: while the apiserver starts, its default RBAC
		// (public-info-viewer) may not be in place yet
		if apierrors.IsUnauthorized(err) {
			return "", fmt.Errorf("%w: %v", ErrUnauthorized, err)
		}
		return "", err
	}
	var info struct {
		GitVersion string `json:"gitVersion"`
	}
	if err := json.Unmarshal(body, &info); err != nil {
		return "", fmt.Errorf("decoding /version: %w", err)
	}
	return info.GitVersion, nil
}
