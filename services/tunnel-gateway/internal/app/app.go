// Package app is the tunnel gateway's command line.
package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubesplit/kubesplit/pkg/bootstrap"
	"github.com/kubesplit/kubesplit/pkg/config"
	"github.com/kubesplit/kubesplit/pkg/health"
	"github.com/kubesplit/kubesplit/pkg/jointoken"
	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/lifecycle"
	"github.com/kubesplit/kubesplit/pkg/logging"
	"github.com/kubesplit/kubesplit/pkg/netutil"
	"github.com/kubesplit/kubesplit/pkg/pki"
	"github.com/kubesplit/kubesplit/pkg/tunnelproto"
	"github.com/kubesplit/kubesplit/pkg/version"
	"github.com/kubesplit/kubesplit/services/tunnel-gateway/internal/tunnel"
)

const summary = `kubesplit tunnel-gateway: the endpoint nodes behind NAT dial.
On --listen-address it relays TLS connections for server name "kubernetes" (and
each --apiserver-server-name) to the apiserver unchanged, and itself serves the
cluster CA bundle that join tokens pin (GET /cacerts), what nodes need to know
(GET /v1/node-config), nodes' reverse tunnels (GET /v1/tunnel, node client
certificate) and, to node certificates, CONNECT apiserver:443 (pods'
connections to the kubernetes Service, carried by their node's agent when
--node-apiserver-address is set); on --egress-address the apiserver's HTTP
CONNECT egress rides those tunnels, to a node's kubelet ports or to the pods of
the node whose pod range holds the address (routes come from the Node objects,
read with --kubeconfig), and /debug/tunnels (JSON, per node) and /metrics
(Prometheus: sessions open, connects, dials, dial failures, bytes per node) are
served to the apiserver's egress certificate and to system:masters
certificates only; --health-address serves /healthz and /readyz alone (plain
HTTP).`

type options struct {
	dataDir, listen, egress, health string
	kubeconfig                      string
	apiserver, relay                string
	apiserverNames                  []string
	nodeAPIServer                   string
	nodePorts                       []int
	showVersion                     bool
}

// Main runs the gateway and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	var o options
	fs := config.NewFlagSet("tunnel-gateway")
	fs.StringVar(&o.dataDir, "data-dir", "", "data directory written by 'kubesplit init' (required)")
	fs.StringVar(&o.listen, "listen-address", "0.0.0.0:8132", "host:port nodes dial (TLS)")
	fs.StringVar(&o.apiserver, "apiserver-address", "127.0.0.1:6443", "host:port of the apiserver; node connections with TLS server name 'kubernetes' are relayed there unchanged")
	fs.StringVar(&o.relay, "apiserver-relay-address", "", "host:port (node side) relaying plain TCP to the apiserver for pods: give the apiserver this IP and port as --advertise-address/--secure-port so the kubernetes Service works from pods (empty: off)")
	fs.StringSliceVar(&o.apiserverNames, "apiserver-server-name", nil, "more TLS server names (besides 'kubernetes') whose node connections are relayed to the apiserver; the first is the one nodes are told to use (a release's own name behind a shared SNI router, e.g. kubernetes.cp1.example.com; the apiserver's certificate must hold it)")
	fs.StringVar(&o.nodeAPIServer, "node-apiserver-address", "", "IPv4:PORT every node serves as the kubernetes Service's endpoint, carrying pods' connections to the apiserver over CONNECT through this gateway; give the apiserver the same IP and port as --advertise-address/--secure-port (for a gateway behind an SNI router; empty: off)")
	fs.StringVar(&o.egress, "egress-address", "0.0.0.0:8131", "host:port of the apiserver's HTTP CONNECT egress (mutual TLS)")
	fs.IntSliceVar(&o.nodePorts, "node-ports", []int{10250}, "node ports the apiserver may reach through a tunnel (the kubelet's)")
	fs.StringVar(&o.health, "health-address", "0.0.0.0:8133", "host:port of /healthz and /readyz (plain HTTP)")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig for the Node watch that routes traffic (default: DATA_DIR/tunnel-gateway.kubeconfig, written by 'kubesplit init')")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	if err := config.Parse(fs, args); err != nil {
		if errors.Is(err, config.ErrHelp) {
			config.PrintUsage(stdout, fs, summary)
			return 0
		}
		fmt.Fprintf(stderr, "tunnel-gateway: %v\n", err)
		return 1
	}
	if o.showVersion {
		fmt.Fprintln(stdout, version.Info("tunnel-gateway"))
		return 0
	}
	if err := o.nodeConfig().Validate(); err != nil {
		fmt.Fprintf(stderr, "tunnel-gateway: --apiserver-server-name/--node-apiserver-address: %v\n", err)
		return 1
	}
	if err := run(o, stderr); err != nil {
		fmt.Fprintf(stderr, "tunnel-gateway: %v\n", err)
		return 1
	}
	return 0
}

func run(o options, stderr io.Writer) error {
	if err := config.CheckDataDir(o.dataDir, false); err != nil {
		return err
	}
	d := layout.Dir(o.dataDir)
	if o.kubeconfig == "" {
		o.kubeconfig = d.Kubeconfig(layout.TunnelGateway)
	}
	if err := config.RequireFiles(d.ClusterCA().Cert, d.TunnelGateway().Cert, d.TunnelGateway().Key, o.kubeconfig); err != nil {
		return err
	}
	restCfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return fmt.Errorf("--kubeconfig %s: %w", o.kubeconfig, err)
	}
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("--kubeconfig %s: %w", o.kubeconfig, err)
	}
	caPEM, err := os.ReadFile(d.ClusterCA().Cert)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("%s holds no certificate", d.ClusterCA().Cert)
	}
	// read again when renewed: nodes and the apiserver get the new one at
	// their next handshake, open tunnels stay
	cert, err := pki.NewFilePair(d.TunnelGateway().Cert, d.TunnelGateway().Key)
	if err != nil {
		return err
	}
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for _, l := range []struct{ addr, flag string }{{o.listen, "--listen-address"}, {o.egress, "--egress-address"}, {o.health, "--health-address"}} {
		ln, err := netutil.Listen(l.addr)
		if err != nil {
			return fmt.Errorf("cannot listen on %s: %w; choose another %s", l.addr, err, l.flag)
		}
		listeners = append(listeners, ln)
	}
	var relayLn net.Listener
	if o.relay != "" {
		if relayLn, err = netutil.Listen(o.relay); err != nil {
			return fmt.Errorf("cannot listen on %s: %w; choose another --apiserver-relay-address", o.relay, err)
		}
		listeners = append(listeners, relayLn)
	}
	log := logging.New("tunnel-gateway", stderr, 0)
	logging.BridgeLogrus(log, slog.LevelWarn, "remotedialer") // its info lines log every stream
	ctx, stop := lifecycle.SignalContext()
	defer stop()
	routes := tunnel.NewRoutes()
	if err := tunnel.WatchNodes(ctx, client, routes, log); err != nil {
		return err
	}
	gw := tunnel.New(o.nodePorts, bootstrap.APIServerEgressClientCN, routes, log)

	nodes := http.NewServeMux()
	// The CA bundle is public: a node fetches it before it trusts anything
	// and checks it against the SHA-256 its join token pins.
	nodes.HandleFunc("GET "+jointoken.CAPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(caPEM)
	})
	nodes.Handle("GET "+tunnelproto.Path, gw.TunnelHandler())
	nodes.Handle("GET "+tunnelproto.NodeConfigPath, tunnel.NodeConfigHandler(o.nodeConfig()))
	nodeTLS := &tls.Config{GetCertificate: cert.GetCertificate, ClientCAs: pool,
		ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12}
	egressTLS := &tls.Config{GetCertificate: cert.GetCertificate, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}

	log.Info("serving", "nodes", o.listen, "egress", o.egress, "health", o.health, "apiserver-relay", o.relay, "node-ports", o.nodePorts, "version", version.Version)
	mux := &tunnel.SNIMux{Listener: listeners[0], APIServer: o.apiserver, Names: o.apiserverNames, Log: log}
	reg := prometheus.NewRegistry()
	reg.MustRegister(gw, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// the per-node views name every node and its traffic: only for the
	// apiserver's egress identity and cluster admins, on the mTLS port
	debug := http.NewServeMux()
	debug.Handle("GET /debug/tunnels", gw.StatsHandler())
	debug.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	egressMux := tunnel.EgressMux(gw.EgressHandler(), tunnel.AdminOnly(debug, bootstrap.APIServerEgressClientCN, log))
	parts := []lifecycle.Runnable{
		&health.Server{Listener: listeners[2],
			Live: map[string]health.Check{"process": func(context.Context) error { return nil }}},
		mux,
		serveTLS(mux.Local(), tunnel.APIServerConnect(o.apiserver, nodes, log), nodeTLS),
		serveTLS(listeners[1], egressMux, egressTLS),
	}
	if relayLn != nil {
		parts = append(parts, &tunnel.Relay{Listener: relayLn, APIServer: o.apiserver, Log: log})
	}
	// (RunAll stops everything when one part returns)
	return lifecycle.RunAll(ctx, parts...)
}

// nodeConfig is what nodes are told at GET /v1/node-config.
func (o options) nodeConfig() tunnelproto.NodeConfig {
	c := tunnelproto.NodeConfig{APIServerName: tunnelproto.DefaultAPIServerName, LocalAPIServerAddress: o.nodeAPIServer}
	if len(o.apiserverNames) > 0 {
		c.APIServerName = o.apiserverNames[0]
	}
	return c
}

func serveTLS(l net.Listener, h http.Handler, cfg *tls.Config) lifecycle.Runnable {
	return lifecycle.Func(func(ctx context.Context) error {
		srv := &http.Server{Handler: h, TLSConfig: cfg, ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: stdlog.New(io.Discard, "", 0)} // TLS handshake noise from probes
		go func() {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
		if err := srv.ServeTLS(l, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
}
