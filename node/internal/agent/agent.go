// Package agent is the kubesplit node agent: it joins the node through the
// tunnel gateway (CA pinned by the join token, kubelet TLS bootstrap), runs
// containerd, the upstream kubelet and kube-proxy, the pod overlay and the
// reverse tunnel that lets the apiserver reach this node's kubelet.
package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/kubernetes/pkg/kubelet/certificate/bootstrap"

	"github.com/kubesplit/kubesplit/node/internal/cni"
	"github.com/kubesplit/kubesplit/node/internal/netpol"
	"github.com/kubesplit/kubesplit/node/tunnel"
	"github.com/kubesplit/kubesplit/pkg/jointoken"
	"github.com/kubesplit/kubesplit/pkg/skew"
	"github.com/kubesplit/kubesplit/pkg/tunnelproto"
	"github.com/kubesplit/kubesplit/pkg/version"
)

// APIServerName is the default TLS server name that makes the gateway
// relay a connection to the apiserver (TLS stays end to end between node
// and apiserver); a gateway may name another (GET /v1/node-config).
const APIServerName = tunnelproto.DefaultAPIServerName

// KubeletPort is the kubelet's HTTPS port, bound to loopback: only the tunnel reaches it.
const KubeletPort = 10250

// Run starts everything and blocks until ctx ends or a part fails.
func Run(ctx context.Context, c Config, tok jointoken.Token, log *slog.Logger) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	for _, d := range []string{c.path("pki"), c.kubeletCertDir(), c.path("containerd"), c.cniConfDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	var ca *x509.CertPool
	var err error
	var nodeCfg tunnelproto.NodeConfig
	if c.ControlPlane {
		if c.NodeIP == "" {
			if c.NodeIP, err = primaryIP(); err != nil {
				return err
			}
		}
		if c.NodeNameFromDNS {
			if c.NodeName, err = nameFromDNS(ctx, c.NodeIP); err != nil {
				return err
			}
		}
		if _, err := c.prepareControlPlane(log); err != nil {
			return err
		}
		if ca, err = c.caPool(); err != nil {
			return err
		}
	} else {
		if ca, err = c.ensureCA(ctx, tok, log); err != nil {
			return err
		}
		if nodeCfg, err = c.loadNodeConfig(ctx, ca, log); err != nil {
			return err
		}
		c.apiServerName = nodeCfg.APIServerName
		if c.NodeIP == "" {
			if c.NodeIP, err = sourceIPFor(c.Gateway); err != nil {
				return fmt.Errorf("finding this node's IP (set --node-ip): %w", err)
			}
		}
		if c.NodeNameFromDNS {
			if c.NodeName, err = nameFromDNS(ctx, c.NodeIP); err != nil {
				return err
			}
		}
	}
	if c.CgroupRoot == "" {
		// one per node: node containers on a cgroup v1 host share the hierarchy
		c.CgroupRoot = "/kubesplit-" + c.NodeName
	}
	log.Info("node agent starting", "node", c.NodeName, "ip", c.NodeIP, "gateway", c.Gateway)

	if err := c.prepareHost(log); err != nil {
		return err
	}
	proxy, err := c.prepareServiceProxy(ctx, log)
	if err != nil {
		return err
	}
	ctrd, err := c.startContainerd(ctx, log)
	if err != nil {
		return err
	}
	defer ctrd.Stop(10 * time.Second)
	go func() {
		<-ctrd.Done()
		cancel(fmt.Errorf("containerd exited: %v", ctrd.Err()))
	}()
	if err := c.importImages(ctx, log); err != nil {
		return err
	}

	if c.ControlPlane {
		// the kubelet starts the roles: no API to ask before it, and the
		// skew between the box's roles and its kubelet is `kubesplit
		// upgrade`'s to check
		if err := c.checkRoleImages(ctx); err != nil {
			return err
		}
		if err := c.writeManifests(log); err != nil {
			return err
		}
		go c.announceJoin(ctx, log)
	} else {
		// Client certificate first (TLS bootstrap through the gateway), so that
		// kubelet, kube-proxy, overlay and tunnel all start with the node's identity.
		if err := c.bootstrapClient(ctx, tok, log); err != nil {
			return err
		}
		// before the kubelet and kube-proxy start: refuse an apiserver they must not run with
		if err := c.checkSkew(ctx, log); err != nil {
			return err
		}
		if nodeCfg.LocalAPIServerAddress == "" {
			removeAPIEndpointAddr()
		} else {
			// before the kubelet: pods reach the kubernetes Service's endpoint here
			ep := &apiEndpoint{Addr: netip.MustParseAddrPort(nodeCfg.LocalAPIServerAddress), Gateway: c.Gateway,
				CA: ca, GetCert: c.clientCert, Log: log.With("part", "apiserver-endpoint")}
			go func() {
				if err := ep.Run(ctx); err != nil && ctx.Err() == nil {
					cancel(fmt.Errorf("node-local apiserver endpoint: %w", err))
				}
			}()
		}
	}
	restCfg, err := clientcmd.BuildConfigFromFlags("", c.kubeletKubeconfig())
	if err != nil {
		return fmt.Errorf("reading %s: %w", c.kubeletKubeconfig(), err)
	}
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return err
	}

	resolv, err := c.setupPodDNS(ctx, log)
	if err != nil {
		return err
	}
	if err := c.writeKubeletConfig(resolv); err != nil {
		return err
	}
	go func() { cancel(fmt.Errorf("kubelet: %w", c.runKubelet(ctx))) }()

	overlay := &cni.Overlay{
		Client: client, NodeName: c.NodeName, NodeIP: net.ParseIP(c.NodeIP),
		ClusterCIDR: c.ClusterCIDR, VNI: c.VXLANID, Port: c.VXLANPort,
		CNIConfDir: c.cniConfDir(), Log: log.With("part", "overlay"),
		BeforeReady: func(ctx context.Context) {
			c.waitServiceProxy(ctx, proxy, time.Minute, log.With("part", "overlay"))
		},
	}
	go func() {
		if err := overlay.Run(ctx); err != nil && ctx.Err() == nil {
			cancel(fmt.Errorf("pod overlay: %w", err))
		}
	}()

	go func() {
		err := tunnel.Run(ctx, tunnel.Config{
			GatewayURL: c.Gateway, CA: ca, GetCert: c.clientCert, Ports: []int{KubeletPort},
			PodCIDR: overlay.PodCIDR, Log: log.With("part", "tunnel"),
		})
		if err != nil && ctx.Err() == nil {
			cancel(fmt.Errorf("tunnel: %w", err))
		}
	}()

	go func() {
		if err := c.runServiceProxy(ctx, proxy, client, log); ctx.Err() == nil {
			cancel(fmt.Errorf("service proxy (%s): %v", c.ServiceProxy, err))
		}
	}()

	if c.disabled(FeatureNetworkPolicy) {
		// a rule of an earlier run with enforcement on must not stay behind
		if err := netpol.Remove(ctx); err != nil {
			return fmt.Errorf("removing the NetworkPolicy rules of an earlier run: %w", err)
		}
	} else {
		nft, err := netpol.NewTable()
		if err != nil {
			return err
		}
		np := &netpol.Controller{Client: client, NodeName: c.NodeName, Log: log.With("part", "network-policy")}
		go func() {
			if err := np.Run(ctx, nft); err != nil && ctx.Err() == nil {
				cancel(fmt.Errorf("network policy: %w", err))
			}
		}()
	}

	<-ctx.Done()
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return nil
}

// ensureCA fetches the cluster CA from the gateway, accepted only if it has
// the join token's pinned hash; on a restart without a token the stored CA is used.
func (c *Config) ensureCA(ctx context.Context, tok jointoken.Token, log *slog.Logger) (*x509.CertPool, error) {
	if tok.CAHash != "" {
		var cert *x509.Certificate
		var err error
		for attempt := 0; ; attempt++ {
			cert, err = jointoken.FetchCA(ctx, c.Gateway, tok)
			if err == nil || errors.Is(err, jointoken.ErrPinMismatch) || attempt == 120 || ctx.Err() != nil {
				break
			}
			if attempt%4 == 0 {
				log.Info("waiting for the gateway", "err", err)
			}
			time.Sleep(500 * time.Millisecond)
		}
		if err != nil {
			return nil, err
		}
		pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
		if old, err := os.ReadFile(c.caFile()); err == nil && !bytes.Equal(old, pemBytes) {
			return nil, fmt.Errorf("the gateway's CA (pinned by the token) differs from the one this node joined with (%s): "+
				"this node belongs to another cluster; remove %s to join anew", c.caFile(), c.DataDir)
		}
		if err := os.WriteFile(c.caFile(), pemBytes, 0o644); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(c.caFile()); err != nil {
		return nil, fmt.Errorf("no cluster CA at %s: give a join token (--token)", c.caFile())
	}
	return c.caPool()
}

// caPool is the stored cluster CA as a pool.
func (c *Config) caPool() (*x509.CertPool, error) {
	b, err := os.ReadFile(c.caFile())
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no certificate", c.caFile())
	}
	return pool, nil
}

// bootstrapClient gets the node's client certificate with the bootstrap
// token (a CSR the controllers approve), using the kubelet's own bootstrap
// code, and writes kubelet.kubeconfig pointing at the gateway.
func (c *Config) bootstrapClient(ctx context.Context, tok jointoken.Token, log *slog.Logger) error {
	server := c.Gateway
	if tok.ID != "" {
		bc := clientcmdapi.NewConfig()
		bc.Clusters["kubesplit"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: c.caFile(), TLSServerName: c.serverName()}
		bc.AuthInfos["bootstrap"] = &clientcmdapi.AuthInfo{Token: tok.Bootstrap()}
		bc.Contexts["bootstrap"] = &clientcmdapi.Context{Cluster: "kubesplit", AuthInfo: "bootstrap"}
		bc.CurrentContext = "bootstrap"
		if err := clientcmd.WriteToFile(*bc, c.bootstrapKubeconfig()); err != nil {
			return err
		}
	}
	if _, err := os.Stat(c.kubeletKubeconfig()); err != nil && tok.ID != "" {
		if err := c.checkToken(ctx, tok, log); err != nil {
			return err
		}
	}
	bctx, bcancel := context.WithTimeout(ctx, 5*time.Minute)
	defer bcancel()
	if err := bootstrap.LoadClientCert(bctx, c.kubeletKubeconfig(), c.bootstrapKubeconfig(), c.kubeletCertDir(), types.NodeName(c.NodeName)); err != nil {
		// the token's secret is never part of this error: client-go redacts bearer tokens
		return fmt.Errorf("kubelet TLS bootstrap through %s failed (is the join token valid and unexpired?): %w", c.Gateway, err)
	}
	// The kubelet writes the kubeconfig without the TLS server name; without it
	// the gateway would answer itself instead of relaying to the apiserver.
	kc, err := clientcmd.LoadFromFile(c.kubeletKubeconfig())
	if err != nil {
		return err
	}
	for _, cl := range kc.Clusters {
		cl.Server = server
		cl.TLSServerName = c.serverName()
		cl.CertificateAuthority, cl.CertificateAuthorityData = c.caFile(), nil
	}
	if err := clientcmd.WriteToFile(*kc, c.kubeletKubeconfig()); err != nil {
		return err
	}
	// the bootstrap token is not needed any more; do not leave it on disk
	_ = os.Remove(c.bootstrapKubeconfig())
	log.Info("node client certificate ready", "file", c.kubeletClientCert())
	return nil
}

// checkToken asks the apiserver (through the gateway) who the join token
// is, so that an expired, revoked or mistyped token fails at once with a
// clear message, not after the kubelet's bootstrap has waited out its
// timeouts. Only the token's public ID is ever printed.
func (c *Config) checkToken(ctx context.Context, tok jointoken.Token, log *slog.Logger) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.bootstrapKubeconfig())
	if err != nil {
		return err
	}
	cfg.Timeout = 10 * time.Second
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	// A starting apiserver answers 401 until its token informers have synced,
	// and on a new cluster the controllers store the default node token a
	// moment after the apiserver is ready: so wait for /readyz (anonymous),
	// then give a refused token a few seconds before calling it wrong.
	anon := rest.AnonymousClientConfig(cfg)
	anonClient, err := kubernetes.NewForConfig(anon)
	if err != nil {
		return err
	}
	// polled every 250ms: each second saved here is a second off a node's join
	const poll = 250 * time.Millisecond
	readyBy := time.Now().Add(time.Minute)
	for attempt := 0; ; attempt++ {
		_, err := anonClient.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil {
			break
		}
		if time.Now().After(readyBy) || ctx.Err() != nil {
			return fmt.Errorf("cannot reach a ready apiserver through %s: %w", c.Gateway, err)
		}
		if attempt%20 == 0 {
			log.Info("waiting for the apiserver through the gateway", "err", err)
		}
		time.Sleep(poll)
	}
	refusedBy, reachBy := time.Now().Add(10*time.Second), time.Now().Add(30*time.Second)
	for attempt := 0; ; attempt++ {
		_, err = client.Discovery().ServerVersion()
		switch {
		case err == nil:
			return nil
		case apierrors.IsUnauthorized(err) && time.Now().After(refusedBy):
			return fmt.Errorf("the apiserver refused join token %s: it is expired, revoked or wrong "+
				"(list tokens with `kubesplit token list`, create one with `kubesplit token create`)", tok.ID)
		case apierrors.IsUnauthorized(err):
			if attempt == 0 {
				log.Info("join token not accepted yet; retrying for a few seconds", "token", tok.ID)
			}
		case time.Now().After(reachBy) || ctx.Err() != nil:
			return fmt.Errorf("cannot reach the apiserver through %s: %w", c.Gateway, err)
		case attempt%20 == 0:
			log.Info("waiting for the apiserver through the gateway", "err", err)
		}
		time.Sleep(poll)
	}
}

// checkSkew asks the apiserver (through the gateway, with the node's client
// certificate) for its version and refuses, with a *version.SkewError, a
// kubelet the version-skew policy forbids. kube-proxy is the same binary and
// version and has the same rule, so the kubelet's check covers it. An
// apiserver that does not answer is waited for up to skew.Timeout.
func (c *Config) checkSkew(ctx context.Context, log *slog.Logger) error {
	own := version.Kubernetes
	if c.FakeKubernetesVersion != "" {
		own = c.FakeKubernetesVersion
	}
	apiVersion, err := skew.Check(ctx, c.kubeletKubeconfig(), version.RoleKubelet, own, func(err error) {
		log.Info("waiting for the apiserver to check version skew", "err", err)
	})
	if err != nil {
		return err
	}
	log.Info("version skew checked", "kubelet", own, "apiserver", apiVersion)
	return nil
}

// serverName is the TLS server name of the apiserver through the gateway.
func (c *Config) serverName() string {
	if c.apiServerName != "" {
		return c.apiServerName
	}
	return APIServerName
}

// clientCert reads the kubelet's current client certificate (it rotates).
func (c *Config) clientCert() (tls.Certificate, error) {
	return tls.LoadX509KeyPair(c.kubeletClientCert(), c.kubeletClientCert())
}

// sourceIPFor returns the local address the kernel picks to reach the gateway.
func sourceIPFor(gateway string) (string, error) {
	u, err := url.Parse(gateway)
	if err != nil {
		return "", err
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "443"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var addrs []net.IP
	for ctx.Err() == nil {
		if addrs, err = net.DefaultResolver.LookupIP(ctx, "ip4", host); err == nil && len(addrs) > 0 {
			break
		}
		time.Sleep(time.Second)
	}
	if len(addrs) == 0 {
		return "", fmt.Errorf("cannot resolve %s: %v", host, err)
	}
	// UDP "connect" sends nothing; it only asks the kernel for the route.
	conn, err := net.Dial("udp4", net.JoinHostPort(addrs[0].String(), port))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return conn.LocalAddr().(*net.UDPAddr).IP.String(), nil
}
