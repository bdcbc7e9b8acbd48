// Package localcluster wires the five role binaries as host processes on one
// data directory: what `make run` starts and what the integration tests and
// benchmarks drive.
package localcluster

import (
	"fmt"
	"io"
	"path/filepath"
	"strconv"

	"github.com/kubesplit/kubesplit/pkg/bootstrap"
	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/procs"
	"github.com/kubesplit/kubesplit/roles"
)

// Role names, also the binary names under the bin directory.
const (
	Datastore     = roles.Datastore
	APIServer     = roles.APIServer
	Scheduler     = roles.Scheduler
	Controllers   = roles.Controllers
	TunnelGateway = roles.TunnelGateway
)

// Ports of one local cluster.
type Ports = roles.Ports

// DefaultPorts are the well-known ports `make run` uses.
func DefaultPorts() Ports { return roles.DefaultPorts() }

// FreePorts picks unused loopback ports, for tests that run clusters side by side.
func FreePorts() (Ports, error) { return roles.FreePorts() }

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
	// Renewal is init's: when existing certificates are renewed, how long new ones last.
	Renewal bootstrap.Renewal
}

func (s Spec) url(port int) string { return "https://127.0.0.1:" + strconv.Itoa(port) }

// GatewayURL is the tunnel gateway's loopback URL for nodes.
func (s Spec) GatewayURL() string { return s.url(s.Ports.GatewayNodes) }

// APIServerURL is the apiserver's loopback URL.
func (s Spec) APIServerURL() string { return s.url(s.Ports.APIServer) }

// Init runs `kubesplit init` for the data directory.
func (s Spec) Init() (*bootstrap.Report, error) {
	return bootstrap.Run(bootstrap.Options{DataDir: s.DataDir, Server: s.APIServerURL(), Renewal: s.Renewal})
}

func (s Spec) out(role string) io.Writer {
	if s.Output == nil {
		return nil
	}
	return s.Output(role)
}

// Wiring is the roles' description for host processes: everything on
// loopback, on this spec's ports.
func (s Spec) Wiring() roles.Wiring {
	return roles.Wiring{DataDir: string(s.DataDir), Host: roles.LoopbackHosts, Bind: "127.0.0.1", PublicBind: "127.0.0.1",
		Ports: s.Ports, Backend: s.Backend, Extra: s.Extra}
}

// Process returns the process of one role (not started).
func (s Spec) Process(role string) (*procs.Process, error) {
	if !roles.Valid(role) {
		return nil, fmt.Errorf("unknown role %q", role)
	}
	r := s.Wiring().Role(role)
	return &procs.Process{
		Name:   role,
		Path:   filepath.Join(s.BinDir, role),
		Args:   r.Args,
		Ready:  procs.HTTPProbe(r.Ready.URL(), ""),
		Output: s.out(role),
	}, nil
}

// Roles in start order.
var Roles = roles.Names()

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
