package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/metrics-server/cmd/metrics-server/app/options"
	"sigs.k8s.io/metrics-server/pkg/scraper/client"
)

// Why --kubelet-via-apiserver: a kubesplit kubelet listens on loopback only,
// and only the apiserver reaches it, through the tunnel gateway and the
// node's reverse tunnel (nodes sit behind NAT). So metrics-server asks the
// apiserver's node proxy, GET /api/v1/nodes/NODE/proxy/metrics/resource,
// with its service account: the apiserver dials the kubelet through the
// tunnel and verifies the kubelet's serving certificate against the cluster
// CA (--kubelet-certificate-authority), and metrics-server verifies the
// apiserver. The price is RBAC get on nodes/proxy, which the bundled manifest
// narrows with a ValidatingAdmissionPolicy to that one path.

// checkViaAPIServer refuses kubelet flags that mean nothing when the
// apiserver dials the kubelets.
func checkViaAPIServer(o *options.KubeletClientOptions) error {
	switch {
	case o.InsecureKubeletTLS, o.DeprecatedCompletelyInsecureKubelet:
		return errors.New("--kubelet-via-apiserver: the apiserver verifies the kubelets' certificates; drop --kubelet-insecure-tls and --deprecated-kubelet-completely-insecure")
	case o.KubeletCAFile != "", o.KubeletClientCertFile != "", o.KubeletClientKeyFile != "":
		return errors.New("--kubelet-via-apiserver: metrics-server does not dial the kubelets, so --kubelet-certificate-authority, --kubelet-client-certificate and --kubelet-client-key do not apply; drop them")
	}
	return nil
}

// kubeletViaAPIServer points metrics-server's kubelet client at the
// apiserver: it asks for https://NODE/PATH (the node's Hostname address,
// which is the node's name: the node agent passes --hostname-override), and
// the transport turns that into APISERVER/api/v1/nodes/NODE/proxy/PATH. The
// apiserver picks the kubelet's address and port itself.
func kubeletViaAPIServer(kc *client.KubeletClientConfig, apiserver *rest.Config) error {
	base, _, err := rest.DefaultServerURL(apiserver.Host, "", schema.GroupVersion{}, true)
	if err != nil {
		return fmt.Errorf("the apiserver address %q: %w", apiserver.Host, err)
	}
	if base.Path == "" {
		base.Path = "/" // (JoinPath keeps a relative path relative)
	}
	kc.Client = *rest.CopyConfig(apiserver)
	kc.Scheme = "https"
	kc.AddressTypePriority = []corev1.NodeAddressType{corev1.NodeHostName}
	kc.UseNodeStatusPort = false
	kc.Client.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &nodeProxy{next: rt, apiserver: base} })
	return nil
}

// nodeProxy rewrites kubelet requests into node proxy requests. It sits
// under client-go's authentication wrappers, so the service account's token
// goes to the apiserver, as on any API call.
type nodeProxy struct {
	next      http.RoundTripper
	apiserver *url.URL
}

func (p *nodeProxy) RoundTrip(req *http.Request) (*http.Response, error) {
	node := req.URL.Hostname()
	if node == "" {
		return nil, fmt.Errorf("kubelet request %s names no node", req.URL.Redacted())
	}
	u := p.apiserver.JoinPath("api/v1/nodes", node, "proxy", req.URL.Path)
	u.RawQuery = req.URL.RawQuery
	r := req.Clone(req.Context())
	r.URL, r.Host = u, ""
	return p.next.RoundTrip(r)
}
