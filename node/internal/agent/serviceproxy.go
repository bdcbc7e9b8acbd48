package agent

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/kubesplit/kubesplit/node/internal/svcproxy"
)

// proxyMetricsAddress is where kube-proxy serves its metrics; in ebpf mode
// the agent serves the same registry (Service proxy and NetworkPolicy
// metrics) there, so that one address answers in both modes.
const proxyMetricsAddress = "127.0.0.1:10249"

// prepareServiceProxy runs before containerd starts any pod. With ebpf, it
// attaches the socket programs to the node's pod cgroup, so that no pod ever
// runs untranslated, and fails with one line when the host cannot; with
// iptables, it removes what an earlier ebpf run left; auto is ebpf unless
// the host cannot, then iptables with a warning naming why.
func (c *Config) prepareServiceProxy(ctx context.Context, log *slog.Logger) (*svcproxy.Proxy, error) {
	p := &svcproxy.Proxy{NodeName: c.NodeName, Log: log.With("part", "service-proxy")}
	chosen, err := chooseServiceProxy(c.ServiceProxy, func() error { return p.Start(svcproxy.DefaultPinDir, c.CgroupRoot) }, log)
	if err != nil {
		return nil, configError{err}
	}
	c.ServiceProxy = chosen
	if chosen == ServiceProxyEBPF {
		return p, nil
	}
	if err := svcproxy.Remove(ctx, svcproxy.DefaultPinDir); err != nil {
		log.Warn("removing the eBPF Service proxy of an earlier run", "err", err)
	}
	return nil, nil
}

// chooseServiceProxy resolves --service-proxy: startEBPF is tried unless
// iptables was asked for; its error is fatal when ebpf was asked for, and a
// warning naming why when auto falls back to iptables.
func chooseServiceProxy(mode string, startEBPF func() error, log *slog.Logger) (string, error) {
	if mode == ServiceProxyIPTables {
		return mode, nil
	}
	err := startEBPF()
	switch {
	case err == nil:
		return ServiceProxyEBPF, nil
	case mode == ServiceProxyEBPF:
		return "", err
	}
	log.Warn("the eBPF Service proxy cannot run on this host; using kube-proxy (iptables) instead", "why", err)
	return ServiceProxyIPTables, nil
}

// runServiceProxy runs the chosen proxy until ctx ends.
func (c *Config) runServiceProxy(ctx context.Context, p *svcproxy.Proxy, client kubernetes.Interface, log *slog.Logger) error {
	if p == nil {
		if err := c.writeProxyConfig(); err != nil {
			return err
		}
		return c.runKubeProxy(ctx)
	}
	cleanupKubeProxy(ctx, log)
	srv := &http.Server{Handler: proxyMetricsHandler(), ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", proxyMetricsAddress)
	if err != nil {
		return err
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	p.Client = client
	return p.Run(ctx)
}

func proxyMetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", legacyregistry.Handler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	return mux
}

// cleanupKubeProxy removes the iptables rules of an earlier kube-proxy on
// this node (it ran in iptables mode before the switch to ebpf): its
// Service chains would otherwise still DNAT packets. kube-proxy's own
// --cleanup does it; it runs only when the chain is there.
func cleanupKubeProxy(ctx context.Context, log *slog.Logger) {
	if exec.CommandContext(ctx, "iptables", "-w", "-t", "nat", "-n", "-L", "KUBE-SERVICES").Run() != nil {
		return
	}
	cmd := kubeProxyCommand()
	cmd.SetArgs([]string{"--cleanup"})
	if err := cmd.ExecuteContext(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Warn("removing kube-proxy's iptables rules of an earlier run", "err", err)
		return
	}
	log.Info("removed kube-proxy's iptables rules of an earlier run")
}

// waitServiceProxy is the overlay's BeforeReady: the node turns Ready (and
// gets pods) only once Service addresses work, bounded by timeout.
func (c *Config) waitServiceProxy(ctx context.Context, p *svcproxy.Proxy, timeout time.Duration, log *slog.Logger) {
	if p == nil {
		waitProxySynced(ctx, "http://"+proxyMetricsAddress+"/metrics", timeout, log)
		return
	}
	start := time.Now()
	select {
	case <-p.Synced():
		log.Info("eBPF Service proxy synced Service routing", "waited", time.Since(start).Round(time.Millisecond))
	case <-time.After(timeout):
		log.Warn("the eBPF Service proxy has not synced; going on without it", "waited", timeout)
	case <-ctx.Done():
	}
}
