// Package localcluster wires the five role binaries as host processes on one
// data directory: what `make run` starts and what the integration tests and
// benchmarks drive.
package localcluster

import (
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"

	"github.com/kubesplit/kubesplit/pkg/bootstrap"
	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/procs"
)

// Role names, also the binary names under the bin directory.
const (
	Datastore     = "datastore"
	APIServer     = "apiserver"
	Scheduler     = "scheduler"
	Controllers   = "controllers"
	TunnelGateway = "tunnel-gateway"
)

// Ports of one local cluster.
type Ports struct {
	Datastore, DatastorePeer, DatastoreHealth  int
	APIServer                                  int
	Scheduler, Controllers                     int
	GatewayNodes, GatewayEgress, GatewayHealth int
}

// DefaultPorts are the well-known ports `make run` uses.
func DefaultPorts() Ports {
	return Ports{Datastore: 2379, DatastorePeer: 2380, DatastoreHealth: 2381, APIServer: 6443,
		Scheduler: 10259, Controllers: 10257, GatewayNodes: 8132, GatewayEgress: 8131, GatewayHealth: 8133}
}

// FreePorts picks unused loopback ports, for tests that run clusters side by side.
func FreePorts() (Ports, error) {
	ps := make([]int, 9)
	ls := make([]net.Listener, 0, len(ps))
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := range ps {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return Ports{}, err
		}
		ls = append(ls, l)
		ps[i] = l.Addr().(*net.TCPAddr).Port
	}
	return Ports{Datastore: ps[0], DatastorePeer: ps[1], DatastoreHealth: ps[2], APIServer: ps[3],
		Scheduler: ps[4], Controllers: ps[5], GatewayNodes: ps[6], GatewayEgress: ps[7], GatewayHealth: ps[8]}, nil
}

// Spec describes a local cluster.
type Spec struct {
	BinDir  string
	DataDir layout.Dir
	// Backend is the datastore's --backend: "sqlite", "etcd" or a DSN.
	Backend string
	Ports   Ports
	// Output returns where a role's logs go; nil discards them.
	Output func(role string) io.Writer
	// Extra are additional arguments per role.
	Extra map[string][]string
}

func (s Spec) url(port int) string { return "https://127.0.0.1:" + strconv.Itoa(port) }

// GatewayURL is the tunnel gateway's loopback URL for nodes.
func (s Spec) GatewayURL() string { return s.url(s.Ports.GatewayNodes) }

// APIServerURL is the apiserver's loopback URL.
func (s Spec) APIServerURL() string { return s.url(s.Ports.APIServer) }

// Init runs `kubesplit init` for the data directory.
func (s Spec) Init() (*bootstrap.Report, error) {
	return bootstrap.Run(bootstrap.Options{DataDir: s.DataDir, Server: s.APIServerURL()})
}

func (s Spec) out(role string) io.Writer {
	if s.Output == nil {
		return nil
	}
	return s.Output(role)
}

// Process returns the process of one role (not started).
func (s Spec) Process(role string) (*procs.Process, error) {
	p := s.Ports
	dd := string(s.DataDir)
	hostPort := func(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }
	var args []string
	var ready procs.Probe
	switch role {
	case Datastore:
		args = []string{"--data-dir", dd, "--backend", s.Backend,
			"--listen-address", hostPort(p.Datastore), "--health-address", hostPort(p.DatastoreHealth),
			"--etcd-peer-address", hostPort(p.DatastorePeer)}
		ready = procs.HTTPProbe(fmt.Sprintf("http://%s/readyz", hostPort(p.DatastoreHealth)), "")
	case APIServer:
		args = []string{"--data-dir", dd, "--datastore-endpoint", s.url(p.Datastore),
			"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(p.APIServer),
			"--egress-gateway", s.url(p.GatewayEgress)}
		ready = procs.HTTPProbe(s.url(p.APIServer)+"/readyz", s.DataDir.ClusterCA().Cert)
	case Scheduler:
		args = []string{"--data-dir", dd, "--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(p.Scheduler)}
		ready = procs.HTTPProbe(s.url(p.Scheduler)+"/healthz", "")
	case Controllers:
		args = []string{"--data-dir", dd, "--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(p.Controllers)}
		ready = procs.HTTPProbe(s.url(p.Controllers)+"/healthz", "")
	case TunnelGateway:
		args = []string{"--data-dir", dd, "--listen-address", hostPort(p.GatewayNodes), "--apiserver-address", hostPort(p.APIServer),
			"--egress-address", hostPort(p.GatewayEgress), "--health-address", hostPort(p.GatewayHealth)}
		ready = procs.HTTPProbe(fmt.Sprintf("http://%s/healthz", hostPort(p.GatewayHealth)), "")
	default:
		return nil, fmt.Errorf("unknown role %q", role)
	}
	return &procs.Process{
		Name:   role,
		Path:   filepath.Join(s.BinDir, role),
		Args:   append(args, s.Extra[role]...),
		Ready:  ready,
		Output: s.out(role),
	}, nil
}

// Roles in start order.
var Roles = []string{Datastore, APIServer, Scheduler, Controllers, TunnelGateway}

// Group returns all five roles in start order.
func (s Spec) Group() (*procs.Group, error) {
	g := &procs.Group{}
	for _, r := range Roles {
		p, err := s.Process(r)
		if err != nil {
			return nil, err
		}
		g.Procs = append(g.Procs, p)
	}
	return g, nil
}
