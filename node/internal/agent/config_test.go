package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

const goodToken = "ks1.0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.abcdef.0123456789abcdef"

func binDir(t *testing.T, skip string) string {
	d := t.TempDir()
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "cni/bridge", "cni/host-local", "cni/loopback"} {
		if b == skip {
			continue
		}
		_ = os.MkdirAll(filepath.Dir(filepath.Join(d, b)), 0o755)
		if err := os.WriteFile(filepath.Join(d, b), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func parse(t *testing.T, args ...string) *Config {
	t.Helper()
	c := &Config{}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	c.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestValidate(t *testing.T) {
	bins := binDir(t, "")
	base := []string{"--gateway", "https://tunnel-gateway:8132", "--token", goodToken, "--node-name", "node-1",
		"--bin-dir", bins, "--data-dir", t.TempDir()}
	c := parse(t, base...)
	tok, err := c.Validate()
	if err != nil {
		t.Fatal(err)
	}
	if tok.ID != "abcdef" || c.ClusterDNS != "10.43.0.10" || c.KubeletAddress != "127.0.0.1" {
		t.Fatalf("defaults: token %q, dns %q, kubelet address %q", tok.ID, c.ClusterDNS, c.KubeletAddress)
	}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--gateway", ""}, "--gateway is required"},
		{[]string{"--gateway", "http://gw:8132"}, "is not an https://HOST:PORT URL"},
		{[]string{"--token", "ks1.nope"}, "not a kubesplit join token"},
		{[]string{"--node-name", "Node_1"}, "is not a valid node name"},
		{[]string{"--node-ip", "10.0.0.300"}, "--node-ip"},
		{[]string{"--kubelet-address", "localhost"}, "--kubelet-address"},
		{[]string{"--cluster-cidr", "10.42/16"}, "--cluster-cidr"},
		{[]string{"--vxlan-id", "0"}, "--vxlan-id"},
		{[]string{"--disable", "networkpolicy"}, `--disable "networkpolicy": not a node feature; the ones that can be turned off are network-policy`},
		{[]string{"--bin-dir", binDir(t, "cni/bridge")}, "cni/bridge is missing"},
		{[]string{"--service-proxy", "bpf"}, `--service-proxy "bpf": not a Service proxy; use ebpf, iptables, auto`},
	}
	for _, tc := range cases {
		c := parse(t, append(append([]string{}, base...), tc.args...)...)
		_, err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: want error containing %q, got %v", tc.args, tc.want, err)
		}
		if err != nil && strings.Contains(err.Error(), "0123456789abcdef.abcdef") {
			t.Errorf("%v: error repeats the token: %v", tc.args, err)
		}
	}
	c = parse(t, append(append([]string{}, base...), "--disable", "network-policy")...)
	if _, err := c.Validate(); err != nil || !c.disabled(FeatureNetworkPolicy) {
		t.Fatalf("--disable network-policy: %v, disabled %v", err, c.disabled(FeatureNetworkPolicy))
	}
	for _, sp := range ServiceProxies {
		c = parse(t, append(append([]string{}, base...), "--service-proxy", sp)...)
		if _, err := c.Validate(); err != nil || c.ServiceProxy != sp {
			t.Fatalf("--service-proxy %s: %v", sp, err)
		}
	}
	// no token and never joined: say how to get one
	c = parse(t, "--gateway", "https://gw:8132", "--bin-dir", bins, "--data-dir", t.TempDir(), "--token", "")
	if _, err := c.Validate(); err == nil || !strings.Contains(err.Error(), "kubesplit token create") {
		t.Fatalf("missing token: %v", err)
	}
}
