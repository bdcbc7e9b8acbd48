// Package roles describes each of kubesplit's five control-plane roles once:
// its image, the flags it is started with, the ports it serves, where its
// health answers, what it mounts and what it needs. Every wiring renders
// this description: the compose file (generated from it, checked in), the
// testcontainers package, `kubesplit run` and the integration tests' host
// processes, the static pods of one box, and the Helm chart. A new flag or
// port is added here and nowhere else.
//
// A Wiring says how the roles of one cluster find each other (a Docker
// network's names, or loopback) and which addresses and ports they use;
// Wiring.Role turns it into a Role.
package roles

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
)

// The control-plane roles; each is also its image name (kubesplit/NAME) and
// its binary's name.
const (
	Datastore     = "datastore"
	APIServer     = "apiserver"
	Scheduler     = "scheduler"
	Controllers   = "controllers"
	TunnelGateway = "tunnel-gateway"
)

// Names are the roles in start order.
func Names() []string {
	return []string{Datastore, APIServer, Scheduler, Controllers, TunnelGateway}
}

// Valid reports whether name is a role.
func Valid(name string) bool { return slices.Contains(Names(), name) }

// Identities and paths inside the images.
const (
	// DataDir is where the data directory is mounted in every role's container.
	DataDir = "/var/lib/kubesplit"
	// UID is the unprivileged user every role image runs as; `kubesplit init
	// --owner UID:UID` hands it the data directory.
	UID = 65532
	// Probe is the health client in every role image (the images have no shell).
	Probe = "/usr/local/bin/kubesplit-probe"
)

// Labels on the containers of a Docker-wired cluster (compose, testcluster),
// by which `kubesplit image load` and `kubesplit snapshot` find them.
const (
	// LabelRole is a role's name, or Node, Box or Init.
	LabelRole = "io.kubesplit.role"
	// LabelCluster names the cluster where compose's project label does not.
	LabelCluster = "io.kubesplit.cluster"
	// Node runs a kubelet and containerd (a node agent container); Box runs
	// the whole control plane as static pods beside them; Init is the
	// one-shot container that writes the data directory.
	Node = "node"
	Box  = "box"
	Init = "init"
)

// User is UID:UID, as Docker takes it.
func User() string { return strconv.Itoa(UID) + ":" + strconv.Itoa(UID) }

// Ports of one cluster's roles.
type Ports struct {
	Datastore, DatastorePeer, DatastoreHealth int
	APIServer, APIServerHealth                int
	Scheduler, SchedulerHealth                int
	Controllers, ControllersHealth            int
	// GatewayNodes is where nodes dial (tunnels, the CA, the apiserver
	// relay), GatewayEgress the apiserver's CONNECT egress.
	GatewayNodes, GatewayEgress, GatewayHealth int
}

// DefaultPorts are the well-known ports (upstream's where upstream has one).
func DefaultPorts() Ports {
	return Ports{
		Datastore: 2379, DatastorePeer: 2380, DatastoreHealth: 2381,
		APIServer: 6443, APIServerHealth: 6080,
		Scheduler: 10259, SchedulerHealth: 10251,
		Controllers: 10257, ControllersHealth: 10252,
		GatewayNodes: 8132, GatewayEgress: 8131, GatewayHealth: 8133,
	}
}

// list returns pointers to every port, for FreePorts-style fillers.
func (p *Ports) list() []*int {
	return []*int{&p.Datastore, &p.DatastorePeer, &p.DatastoreHealth, &p.APIServer, &p.APIServerHealth,
		&p.Scheduler, &p.SchedulerHealth, &p.Controllers, &p.ControllersHealth,
		&p.GatewayNodes, &p.GatewayEgress, &p.GatewayHealth}
}

// FreePorts picks unused loopback ports, for clusters run side by side on
// one host (tests).
func FreePorts() (Ports, error) {
	var p Ports
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for _, f := range p.list() {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return Ports{}, fmt.Errorf("finding a free port on 127.0.0.1: %w", err)
		}
		ls = append(ls, l)
		*f = l.Addr().(*net.TCPAddr).Port
	}
	return p, nil
}

// Wiring is how one cluster's roles are laid out.
type Wiring struct {
	// DataDir is the data directory's path as the roles see it (default DataDir).
	DataDir string
	// Host is the name or address at which the other roles reach a role: the
	// role's own name on a Docker network (NamedHosts), 127.0.0.1 when all
	// run on one host (LoopbackHosts).
	Host func(role string) string
	// Bind is the address of ports only the other roles use (the datastore,
	// the gateway's egress, the scheduler's and controllers' metrics):
	// "0.0.0.0" where each role has its own network namespace, "127.0.0.1"
	// where they share the host's.
	Bind string
	// PublicBind is the address of the ports users and nodes reach (the
	// apiserver, the gateway's node port); default "0.0.0.0".
	PublicBind string
	// HealthBind is the address of the roles' plain-HTTP health ports
	// (health alone is served there): "127.0.0.1" by default, where the
	// health check runs inside the container (kubesplit-probe); "0.0.0.0"
	// where the kubelet checks it from outside (the Helm chart's httpGet
	// probes: no process started per check). The gateway's health port
	// is public in every wiring (pods on the nodes probe it).
	HealthBind string
	Ports      Ports
	// Backend is the datastore's --backend: "sqlite", "etcd" or a DSN.
	Backend string
	// Advertise is the IP pods reach the apiserver at (the `kubernetes`
	// Service's endpoint); empty: the apiserver's default, its host's
	// primary address.
	Advertise string
	// RelayAPIServer makes the gateway relay Advertise:Ports.APIServer to the
	// apiserver: the NAT'd layout, where nodes reach the gateway alone and
	// pods reach the API through it.
	RelayAPIServer bool
	// RelayListen overrides the relay's listen host (default Advertise), for
	// a gateway that gets the advertised address only after it starts.
	RelayListen string
	// APIServerName is a TLS server name (besides "kubernetes") the gateway
	// relays to the apiserver and tells nodes to use: the cluster's own
	// name behind an SNI router shared with other clusters.
	APIServerName string
	// NodeAPIServer is the IP every node serves as the kubernetes Service's
	// endpoint (with Ports.APIServer), carrying pods' connections to the
	// gateway itself: for a gateway behind an SNI router, which cannot
	// route pods' connections (they carry no server name). The apiserver
	// must advertise it (Advertise).
	NodeAPIServer string
	// AddonImageTag is the controllers' --addon-image-tag (empty: its default).
	AddonImageTag string
	// AddonImages are the controllers' --addon-image NAME=IMAGE overrides.
	AddonImages map[string]string
	// Extra are flags appended to a role's own, unchanged.
	Extra map[string][]string
}

// NamedHosts reaches each role by its name (a Docker network alias, a
// compose service, a Kubernetes Service).
func NamedHosts(role string) string { return role }

// LoopbackHosts reaches every role on 127.0.0.1 (host processes, host-network pods).
func LoopbackHosts(string) string { return "127.0.0.1" }

// Role is one role as a wiring starts it.
type Role struct {
	Name string
	// Repository is the image without tag: kubesplit/NAME.
	Repository string
	// Args are the role's command-line flags (the image's entrypoint is the role).
	Args []string
	// Serves are the ports the role listens on for others.
	Serves []Port
	// Live and Ready are plain-HTTP endpoints on the role's health port
	// (reachable on 127.0.0.1 in every wiring) for liveness and readiness; Live answers once the process
	// works, Ready once it can serve (the apiserver: its /readyz).
	Live, Ready HTTPCheck
	// Reads are the data-directory files the role reads (paths relative to
	// DataDir, as `kubesplit init` writes them): a wiring that cannot
	// mount the whole directory (the Helm chart: a Secret) gives the role
	// exactly these.
	Reads []string
	// User is UID:UID.
	User string
	// DataDir is where the data directory is mounted.
	DataDir string
	// Requests are what the role needs at idle, for schedulers and static pods.
	Requests Resources
	// CPUShares is the role's CPU weight where the wiring runs it as a
	// plain container (Docker's --cpu-shares; 0 leaves Docker's 1024). The
	// kernel uses it when the CPU is contended: a waking container with
	// more weight runs sooner. (Static pods and the chart take the weight
	// from Requests, as the kubelet does for every pod.)
	CPUShares int
	// After are the roles to start first (the others retry their peers, so
	// this is about order on stop: the scheduler and controllers stop before
	// the apiserver and so hand their leases back).
	After []string
}

// Port is one listening port.
type Port struct {
	Name string
	Port int
	// Public: users or nodes reach it, not only the other roles.
	Public bool
}

// HTTPCheck is a plain-HTTP GET of a role's health port.
type HTTPCheck struct {
	Port int
	Path string
}

// ProbeArg is the argument of kubesplit-probe: 127.0.0.1:PORT/PATH.
func (h HTTPCheck) ProbeArg() string { return "127.0.0.1:" + strconv.Itoa(h.Port) + h.Path }

// URL is the check's http:// URL.
func (h HTTPCheck) URL() string { return "http://" + h.ProbeArg() }

// Resources are CPU (millicores) and memory (MiB) requests.
type Resources struct {
	MilliCPU, MemoryMiB int
}

// Role renders one role for this wiring; it panics on an unknown name
// (callers iterate Names or check Valid).
func (w Wiring) Role(name string) Role {
	w = w.withDefaults()
	p := w.Ports
	peer := func(role string, port int) string { return "https://" + hp(w.Host(role), port) }
	r := Role{Name: name, Repository: "kubesplit/" + name, User: User(), DataDir: w.DataDir,
		Args: []string{"--data-dir", w.DataDir}}
	switch name {
	case Datastore:
		r.Args = append(r.Args, "--backend", w.Backend,
			"--listen-address", hp(w.Bind, p.Datastore),
			"--etcd-peer-address", hp(w.Bind, p.DatastorePeer),
			"--health-address", hp(w.HealthBind, p.DatastoreHealth))
		r.Serves = []Port{{Name: "etcd", Port: p.Datastore}, {Name: "etcd-peer", Port: p.DatastorePeer}}
		r.Reads = append(pairs("datastore-server", "datastore-peer"), DatastoreClientReads()...)
		r.Live = HTTPCheck{p.DatastoreHealth, "/healthz"}
		r.Ready = HTTPCheck{p.DatastoreHealth, "/readyz"}
		r.Requests = Resources{MilliCPU: 100, MemoryMiB: 64}
	case APIServer:
		r.Args = append(r.Args, "--datastore-endpoint", peer(Datastore, p.Datastore),
			"--egress-gateway", peer(TunnelGateway, p.GatewayEgress),
			"--bind-address", w.PublicBind, "--secure-port", strconv.Itoa(p.APIServer),
			"--health-address", hp(w.HealthBind, p.APIServerHealth))
		if w.Advertise != "" {
			r.Args = append(r.Args, "--advertise-address", w.Advertise)
		}
		r.Serves = []Port{{Name: "https", Port: p.APIServer, Public: true}}
		r.Reads = append(pairs("apiserver", "apiserver-kubelet-client", "apiserver-egress-client", "front-proxy-client", "datastore-client"),
			"pki/ca.crt", "pki/front-proxy-ca.crt", "pki/datastore-ca.crt", "pki/sa.key", "pki/sa.pub",
			"config/encryption-config.yaml", "config/authentication-config.yaml", "config/audit-policy.yaml")
		r.Live = HTTPCheck{p.APIServerHealth, "/livez"}
		r.Ready = HTTPCheck{p.APIServerHealth, "/readyz"}
		r.Requests = Resources{MilliCPU: 250, MemoryMiB: 256}
		r.After = []string{Datastore}
	case Scheduler:
		r.Args = append(r.Args, "--bind-address", w.Bind, "--secure-port", strconv.Itoa(p.Scheduler),
			"--health-address", hp(w.HealthBind, p.SchedulerHealth))
		r.Serves = []Port{{Name: "metrics", Port: p.Scheduler}}
		r.Reads = append(pairs("scheduler-kubeconfig", "scheduler-serving"), "scheduler.kubeconfig")
		r.Live = HTTPCheck{p.SchedulerHealth, "/healthz"}
		r.Ready = r.Live
		r.Requests = Resources{MilliCPU: 50, MemoryMiB: 48}
		r.After = []string{APIServer}
	case Controllers:
		r.Args = append(r.Args, "--bind-address", w.Bind, "--secure-port", strconv.Itoa(p.Controllers),
			"--health-address", hp(w.HealthBind, p.ControllersHealth))
		if w.AddonImageTag != "" {
			r.Args = append(r.Args, "--addon-image-tag", w.AddonImageTag)
		}
		for _, n := range slices.Sorted(maps.Keys(w.AddonImages)) {
			r.Args = append(r.Args, "--addon-image", n+"="+w.AddonImages[n])
		}
		r.Serves = []Port{{Name: "metrics", Port: p.Controllers}}
		// the cluster CA's key signs nodes' certificates; sa.key signs tokens
		r.Reads = append(pairs("controllers-kubeconfig", "addons-kubeconfig", "controllers-serving", "ca"),
			"controllers.kubeconfig", "addons.kubeconfig", "pki/sa.key", "config/node-token")
		r.Live = HTTPCheck{p.ControllersHealth, "/healthz"}
		r.Ready = r.Live
		r.Requests = Resources{MilliCPU: 100, MemoryMiB: 96}
		r.After = []string{APIServer}
	case TunnelGateway:
		r.Args = append(r.Args, "--listen-address", hp(w.PublicBind, p.GatewayNodes),
			"--egress-address", hp(w.Bind, p.GatewayEgress),
			"--apiserver-address", hp(w.Host(APIServer), p.APIServer),
			// public: pods probe it (only /healthz and /readyz are served there)
			"--health-address", hp(w.PublicBind, p.GatewayHealth))
		if w.APIServerName != "" {
			r.Args = append(r.Args, "--apiserver-server-name", w.APIServerName)
		}
		if w.NodeAPIServer != "" {
			r.Args = append(r.Args, "--node-apiserver-address", hp(w.NodeAPIServer, p.APIServer))
		}
		if w.RelayAPIServer {
			host := w.RelayListen
			if host == "" {
				host = w.Advertise
			}
			r.Args = append(r.Args, "--apiserver-relay-address", hp(host, p.APIServer))
		}
		r.Reads = append(pairs("tunnel-gateway", "tunnel-gateway-kubeconfig"), "pki/ca.crt", "tunnel-gateway.kubeconfig")
		r.Serves = []Port{{Name: "nodes", Port: p.GatewayNodes, Public: true}, {Name: "egress", Port: p.GatewayEgress},
			{Name: "health", Port: p.GatewayHealth, Public: true}}
		r.Live = HTTPCheck{p.GatewayHealth, "/healthz"}
		r.Ready = HTTPCheck{p.GatewayHealth, "/readyz"}
		r.Requests = Resources{MilliCPU: 50, MemoryMiB: 32}
		// it carries every exec, log, port-forward and webhook call, and is
		// woken twice per round trip: under load (runc starting an exec
		// inside a node uses both cores) a gateway that waits for a CPU
		// delays each of them. With 8× the default weight the tunnel's
		// overhead per exec was about 1 ms lower, in every one of 6 alternated
		// nodebench pairs (README, issue 11). It uses little CPU itself, so
		// the weight costs the others nothing at idle.
		r.CPUShares = 8192
	default:
		panic(fmt.Sprintf("roles: unknown role %q", name))
	}
	r.Args = append(r.Args, w.Extra[name]...)
	return r
}

// pairs are the certificate and key files of identities (pki/NAME.crt, .key).
// DatastoreClientReads are the files a client of the datastore reads: its
// client certificate and the datastore CA (the snapshot Jobs of the Helm
// chart mount these alone, not the members' server and peer keys).
func DatastoreClientReads() []string {
	return append(pairs("datastore-client"), "pki/datastore-ca.crt")
}

func pairs(names ...string) []string {
	var out []string
	for _, n := range names {
		out = append(out, "pki/"+n+".crt", "pki/"+n+".key")
	}
	return out
}

// hp is host:port; unlike net.JoinHostPort it leaves a host that is not an
// IPv6 literal alone, so a wiring may pass a template or variable
// ("${KUBESPLIT_GATEWAY_IP:-...}", "{{ .Values.x }}") as a host.
func hp(host string, port int) string {
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		return "[" + host + "]:" + strconv.Itoa(port)
	}
	return host + ":" + strconv.Itoa(port)
}

func (w Wiring) withDefaults() Wiring {
	if w.DataDir == "" {
		w.DataDir = DataDir
	}
	if w.Host == nil {
		w.Host = NamedHosts
	}
	if w.Bind == "" {
		w.Bind = "0.0.0.0"
	}
	if w.PublicBind == "" {
		w.PublicBind = "0.0.0.0"
	}
	if w.HealthBind == "" {
		w.HealthBind = "127.0.0.1"
	}
	if w.Ports == (Ports{}) {
		w.Ports = DefaultPorts()
	}
	if w.Backend == "" {
		w.Backend = "sqlite"
	}
	return w
}

// Node agents: paths in the node image and the flags that join a node.
const (
	// NodeDataDir is the agent's own state (certificates, generated configs,
	// and on a control-plane box the roles' manifests in NodeDataDir/manifests).
	NodeDataDir = "/var/lib/kubesplit-node"
	// ContainerdSocket is the agent's containerd.
	ContainerdSocket = "/run/containerd/containerd.sock"
	// NodeImagesDir holds image archives every node imports at start
	// (`make load`, testcluster's LoadImages).
	NodeImagesDir = "/var/lib/kubesplit-node/images"
	// NodeStorageDir holds the local-storage addon's volumes.
	NodeStorageDir = "/var/lib/kubesplit-storage"
)

// NodeArgs are the flags of a node agent that joins through this wiring's
// gateway with the join token in tokenFile (empty: the agent's
// $KUBESPLIT_TOKEN or --token).
func (w Wiring) NodeArgs(tokenFile string) []string {
	w = w.withDefaults()
	args := []string{"--gateway", "https://" + hp(w.Host(TunnelGateway), w.Ports.GatewayNodes)}
	if tokenFile != "" {
		args = append(args, "--token-file", tokenFile)
	}
	return args
}
