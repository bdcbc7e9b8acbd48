package agent

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/kubesplit/kubesplit/pkg/bootstrap"
	"github.com/kubesplit/kubesplit/pkg/jointoken"
	"github.com/kubesplit/kubesplit/pkg/version"
	"github.com/kubesplit/kubesplit/roles"
)

// Config is the node agent's configuration, from its flags.
type Config struct {
	Gateway    string // https://HOST:PORT of the tunnel gateway
	Token      string // join token (ks1.…); or TokenFile
	TokenFile  string
	NodeName   string
	NodeIP     string   // empty: the address the kernel uses to reach the gateway
	DataDir    string   // certificates, kubeconfigs, generated configs
	ImagesDirs []string // image tarballs imported into containerd at start
	BinDir     string   // containerd, shim, ctr, CNI plugins (default: next to this binary)

	ContainerdRoot string
	KubeletRoot    string
	CgroupRoot     string // kubelet's cgroupRoot; one per node when nodes share a host
	// NodeNameFromDNS replaces NodeName by the reverse DNS name of NodeIP.
	NodeNameFromDNS bool
	KubeletAddress  string // where the kubelet listens; loopback keeps it reachable through the tunnel only

	ClusterCIDR   string
	ServiceCIDR   string
	ClusterDNS    string
	ClusterDomain string
	VXLANID       int
	VXLANPort     int
	PauseImage    string
	LogLevel      string
	KubeletArgs   []string // extra kubelet flags, after "--"
	// Disable lists node features turned off (Disableable).
	Disable []string
	// ServiceProxy is what routes Service addresses: ServiceProxyEBPF
	// (package svcproxy), ServiceProxyIPTables (upstream kube-proxy) or
	// ServiceProxyAuto (ebpf where the host allows it, else iptables).
	ServiceProxy string
	// FakeKubernetesVersion replaces the kubelet's Kubernetes version in the
	// version-skew check (tests only).
	FakeKubernetesVersion string

	// ControlPlane makes this box run the control plane as static pods
	// (controlplane.go), from ClusterDataDir, on images tagged ControlPlaneTag.
	ControlPlane    bool
	ClusterDataDir  string
	ControlPlaneTag string

	// apiServerName is the apiserver's TLS server name through the gateway
	// (from the gateway's node configuration; empty: APIServerName).
	apiServerName string
}

// AddFlags registers the agent's flags.
func (c *Config) AddFlags(fs *pflag.FlagSet) {
	host, _ := os.Hostname()
	fs.StringVar(&c.Gateway, "gateway", "", "tunnel gateway URL, https://HOST:8132 (required)")
	fs.StringVar(&c.Token, "token", os.Getenv("KUBESPLIT_TOKEN"), "join token from `kubesplit token create` (or $KUBESPLIT_TOKEN)")
	fs.StringVar(&c.TokenFile, "token-file", "", "file holding the join token")
	fs.StringVar(&c.NodeName, "node-name", strings.ToLower(host), "name of this node")
	fs.BoolVar(&c.NodeNameFromDNS, "node-name-from-dns", false, "name the node after the reverse DNS name of its IP (in Docker Compose: the container's name, stable across down/up and distinct per replica)")
	fs.StringVar(&c.NodeIP, "node-ip", "", "this node's IP (default: the local address used to reach the gateway)")
	fs.StringVar(&c.DataDir, "data-dir", roles.NodeDataDir, "agent state: certificates, kubeconfigs, generated configs")
	fs.StringSliceVar(&c.ImagesDirs, "images-dir", []string{"/usr/share/kubesplit/images", "/var/lib/kubesplit-node/images"},
		"directories of image tarballs (docker save or OCI archives) imported into containerd at start; missing ones are skipped")
	fs.StringVar(&c.BinDir, "bin-dir", "", "directory of containerd, containerd-shim-runc-v2, ctr and cni/ plugins (default: this binary's directory)")
	fs.StringVar(&c.ContainerdRoot, "containerd-root", "/var/lib/containerd", "containerd's state directory")
	fs.StringVar(&c.KubeletRoot, "kubelet-root", "/var/lib/kubelet", "kubelet's root directory")
	fs.StringVar(&c.CgroupRoot, "cgroup-root", "", "cgroup under which the kubelet puts pods (default /kubesplit-NODE_NAME: distinct per node, as node containers on a cgroup v1 host share one hierarchy)")
	fs.StringVar(&c.KubeletAddress, "kubelet-address", "127.0.0.1", "address the kubelet's API listens on; the default keeps it reachable only through the tunnel")
	fs.StringVar(&c.ClusterCIDR, "cluster-cidr", bootstrap.DefaultClusterCIDR, "pod IP range of the cluster (as given to the controllers)")
	fs.StringVar(&c.ServiceCIDR, "service-cidr", bootstrap.DefaultServiceCIDR, "Service IP range (as given to the apiserver)")
	fs.StringVar(&c.ClusterDNS, "cluster-dns", "", "cluster DNS Service IP (default: the 10th address of --service-cidr)")
	fs.StringVar(&c.ClusterDomain, "cluster-domain", bootstrap.DefaultClusterDNS, "cluster DNS domain")
	fs.IntVar(&c.VXLANID, "vxlan-id", 1, "VXLAN network identifier of the pod overlay")
	fs.IntVar(&c.VXLANPort, "vxlan-port", 8472, "UDP port of the pod overlay")
	fs.StringVar(&c.PauseImage, "pause-image", DefaultPauseImage, "pod sandbox image (preloaded from --images-dir)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringSliceVar(&c.Disable, "disable", nil, "node features to turn off: "+strings.Join(Disableable, ", ")+
		" (network-policy: NetworkPolicies are not enforced on this node)")
	fs.StringVar(&c.ServiceProxy, "service-proxy", ServiceProxyAuto, "what routes Service addresses: "+ServiceProxyEBPF+
		" (eBPF programs translate Service addresses at connect(); NodePorts through nftables), "+ServiceProxyIPTables+
		" (upstream kube-proxy, iptables mode) or "+ServiceProxyAuto+" ("+ServiceProxyEBPF+" where the host allows it, else "+ServiceProxyIPTables+", with a warning naming why)")
	fs.StringVar(&c.FakeKubernetesVersion, "fake-kubernetes-version", "", "pretend the kubelet and kube-proxy are this Kubernetes version in the version-skew check (testing only)")
	fs.BoolVar(&c.ControlPlane, "control-plane", false, "also run the control plane on this box: the five roles as static pods of this node's kubelet (initialises --cluster-data-dir when empty; no --gateway or token needed)")
	fs.StringVar(&c.ClusterDataDir, "cluster-data-dir", "/var/lib/kubesplit", "with --control-plane: the cluster's data directory (PKI, datastore, kubeconfigs), mounted into every role")
	fs.StringVar(&c.ControlPlaneTag, "control-plane-image-tag", version.Version, "with --control-plane: tag of the role images kubesplit/ROLE written into new manifests (they must be in --images-dir)")
	_ = fs.MarkHidden("fake-kubernetes-version")
}

// Validate checks the flags and fills defaults. Errors name the flag and the fix.
func (c *Config) Validate() (jointoken.Token, error) {
	var tok jointoken.Token
	if c.ControlPlane {
		if c.Gateway != "" || c.Token != "" || c.TokenFile != "" {
			return tok, errors.New("--control-plane runs its own gateway and needs no join token: drop --gateway, --token and --token-file")
		}
		if !filepath.IsAbs(c.ClusterDataDir) {
			return tok, fmt.Errorf("--cluster-data-dir %q must be an absolute path", c.ClusterDataDir)
		}
		if c.ControlPlaneTag == "" {
			return tok, errors.New("--control-plane-image-tag must not be empty")
		}
		// the box's kubelet, like every node's, reaches the API through a gateway: its own
		c.Gateway = "https://127.0.0.1:" + strconv.Itoa(roles.DefaultPorts().GatewayNodes)
	}
	if c.Gateway == "" {
		return tok, errors.New("--gateway is required (the tunnel gateway's URL, e.g. https://tunnel-gateway:8132)")
	}
	u, err := url.Parse(c.Gateway)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return tok, fmt.Errorf("--gateway %q is not an https://HOST:PORT URL", c.Gateway)
	}
	c.Gateway = "https://" + u.Host
	raw := c.Token
	if c.TokenFile != "" {
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return tok, fmt.Errorf("--token-file: %w", err)
		}
		raw = string(b)
	}
	if raw == "" && !c.joined() && !c.ControlPlane {
		return tok, errors.New("--token (or --token-file, $KUBESPLIT_TOKEN) is required to join: create one with `kubesplit token create`")
	}
	if raw != "" {
		if tok, err = jointoken.Parse(raw); err != nil {
			return tok, fmt.Errorf("--token: %w", err)
		}
	}
	if c.NodeName == "" || strings.ContainsAny(c.NodeName, "/ _") || strings.ToLower(c.NodeName) != c.NodeName {
		return tok, fmt.Errorf("--node-name %q is not a valid node name (lower-case DNS name)", c.NodeName)
	}
	if net.ParseIP(c.KubeletAddress) == nil {
		return tok, fmt.Errorf("--kubelet-address %q is not an IP address", c.KubeletAddress)
	}
	if c.NodeIP != "" && net.ParseIP(c.NodeIP) == nil {
		return tok, fmt.Errorf("--node-ip %q is not an IP address", c.NodeIP)
	}
	for flag, v := range map[string]string{"--cluster-cidr": c.ClusterCIDR, "--service-cidr": c.ServiceCIDR} {
		if _, _, err := net.ParseCIDR(v); err != nil {
			return tok, fmt.Errorf("%s %q is not a CIDR", flag, v)
		}
	}
	if c.ClusterDNS == "" {
		_, n, _ := net.ParseCIDR(c.ServiceCIDR)
		ip := n.IP.To4()
		if ip == nil {
			return tok, errors.New("--cluster-dns is required with an IPv6 --service-cidr")
		}
		c.ClusterDNS = net.IPv4(ip[0], ip[1], ip[2], ip[3]+10).String()
	}
	for _, d := range c.Disable {
		if !slices.Contains(Disableable, d) {
			return tok, fmt.Errorf("--disable %q: not a node feature; the ones that can be turned off are %s", d, strings.Join(Disableable, ", "))
		}
	}
	if !slices.Contains(ServiceProxies, c.ServiceProxy) {
		return tok, fmt.Errorf("--service-proxy %q: not a Service proxy; use %s", c.ServiceProxy, strings.Join(ServiceProxies, ", "))
	}
	if c.VXLANID < 1 || c.VXLANID > 1<<24-1 {
		return tok, fmt.Errorf("--vxlan-id %d is out of range (1-16777215)", c.VXLANID)
	}
	if c.BinDir == "" {
		exe, err := os.Executable()
		if err != nil {
			return tok, err
		}
		c.BinDir = filepath.Dir(exe)
	}
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "cni/bridge", "cni/host-local", "cni/loopback"} {
		if _, err := os.Stat(filepath.Join(c.BinDir, b)); err != nil {
			return tok, fmt.Errorf("%s is missing from --bin-dir %s", b, c.BinDir)
		}
	}
	return tok, nil
}

// Disableable are the node features --disable turns off.
var Disableable = []string{FeatureNetworkPolicy}

// The Service proxies --service-proxy chooses from. ebpf is preferred (make
// bench, svcbench: updates ~10x and connects ~2x faster than kube-proxy
// iptables, flat as Services grow), iptables kept for hosts without cgroup
// v2 or eBPF privileges.
const (
	ServiceProxyEBPF     = "ebpf"
	ServiceProxyIPTables = "iptables"
	ServiceProxyAuto     = "auto"
)

// ServiceProxies are --service-proxy's values.
var ServiceProxies = []string{ServiceProxyEBPF, ServiceProxyIPTables, ServiceProxyAuto}

// FeatureNetworkPolicy is NetworkPolicy enforcement (node/internal/netpol).
const FeatureNetworkPolicy = "network-policy"

func (c *Config) disabled(feature string) bool { return slices.Contains(c.Disable, feature) }

// joined reports whether this node already has a kubelet client certificate,
// so it can restart without a token.
func (c *Config) joined() bool {
	_, err := os.Stat(c.kubeletKubeconfig())
	return err == nil
}

func (c *Config) path(elem ...string) string {
	return filepath.Join(append([]string{c.DataDir}, elem...)...)
}
func (c *Config) caFile() string              { return c.path("pki", "ca.crt") }
func (c *Config) bootstrapKubeconfig() string { return c.path("bootstrap.kubeconfig") }
func (c *Config) kubeletKubeconfig() string   { return c.path("kubelet.kubeconfig") }
func (c *Config) kubeletCertDir() string      { return c.path("pki", "kubelet") }
func (c *Config) kubeletClientCert() string {
	return filepath.Join(c.kubeletCertDir(), "kubelet-client-current.pem")
}
func (c *Config) containerdState() string             { return "/run/containerd" }
func (c *Config) containerdSocket() string            { return roles.ContainerdSocket }
func (c *Config) containerdConfig() string            { return c.path("containerd", "config.toml") }
func (c *Config) kubeletConfig() string               { return c.path("kubelet-config.yaml") }
func (c *Config) proxyConfig() string                 { return c.path("kube-proxy-config.yaml") }
func (c *Config) cniBinDir() string                   { return filepath.Join(c.BinDir, "cni") }
func (c *Config) cniConfDir() string                  { return "/etc/cni/net.d" }
func (c *Config) bin(name string) string              { return filepath.Join(c.BinDir, name) }
func (c *Config) importedMarker(digest string) string { return c.path("images-imported", digest) }
