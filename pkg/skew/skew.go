// Package skew asks the apiserver for its version, for the version-skew check
// every role makes before it starts.
package skew

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// ErrUnauthorized means the role's credentials were refused: retrying will not help.
var ErrUnauthorized = errors.New("the apiserver refused this role's credentials")

// APIServerVersion returns the apiserver's gitVersion, using kubeconfig.
func APIServerVersion(ctx context.Context, kubeconfig string) (string, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return "", fmt.Errorf("loading %s: %w", kubeconfig, err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return "", err
	}
	body, err := cs.Discovery().RESTClient().Get().AbsPath("/version").Do(ctx).Raw()
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
