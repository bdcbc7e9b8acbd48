// Package helm renders deploy/helm/files/roles.json, the part of the Helm
// chart that comes from the role descriptions: each role's flags, ports,
// health checks, the data-directory files it reads and its requests. The
// chart's templates read it (.Files.Get | fromJson) and add only what is
// Kubernetes wiring (workload kinds, Services, volumes, PDBs). The file is
// checked in; `make verify` fails when it differs from Render's output, and
// hack/gen.sh rewrites it.
//
// JSON rather than YAML: it is YAML too, Helm reads it as it is, and the
// roles module needs no YAML library to write it.
package helm

import (
	"encoding/json"
	"slices"
	"strconv"

	"github.com/kubesplit/kubesplit/roles"
)

// Names the chart's objects share with the flags rendered here.
const (
	// EtcdPeers is the headless Service that gives each etcd member of the
	// datastore StatefulSet its DNS name (POD.EtcdPeers).
	EtcdPeers = "datastore-peers"
	// Environment variables the flags refer to; the kubelet expands $(NAME)
	// in a container's args from its env, which the templates set.
	EnvPodName        = "POD_NAME"
	EnvAdvertise      = "KUBESPLIT_ADVERTISE_ADDRESS"
	EnvInitialCluster = "KUBESPLIT_ETCD_INITIAL_CLUSTER"
	EnvDSN            = "KUBESPLIT_DATASTORE_DSN"
	// EnvAPIPort is the apiserver's --secure-port: the public Service's api
	// port. The apiserver advertises its secure port with its address as
	// the kubernetes Service's endpoint, which pods on the nodes reach
	// through the gateway's public Service; so the two ports must be one
	// (6443 by default, another when releases share an address or with a
	// NodePort). In the host cluster the apiserver Service keeps port 6443.
	EnvAPIPort = "KUBESPLIT_API_PORT"
	// With gateway.sni.host (several releases behind one SNI router): the
	// release's host name and the node-local address of the kubernetes
	// Service's endpoint, which the apiserver then advertises.
	EnvSNIHost     = "KUBESPLIT_SNI_HOST"
	EnvNodeAPIAddr = "KUBESPLIT_NODE_API_ADDRESS"
)

// SNIAPIServerPrefix makes the apiserver's name behind an SNI router:
// kubernetes.HOST, where HOST is the gateway's.
const SNIAPIServerPrefix = "kubernetes."

// Modes are the chart's datastore.mode values with the datastore --backend each renders.
var Modes = map[string]string{
	"sqlite":   "sqlite",
	"etcd":     "etcd",
	"external": "env:" + EnvDSN, // the DSN comes from a Secret, never through the command line
}

type file struct {
	Comment string          `json:"_generated"`
	Version string          `json:"version"`
	DataDir string          `json:"dataDir"`
	UID     int             `json:"uid"`
	Ports   roles.Ports     `json:"ports"`
	Roles   map[string]role `json:"roles"`
	// DatastoreClientReads are what the snapshot Jobs mount (see
	// roles.DatastoreClientReads).
	DatastoreClientReads []string `json:"datastoreClientReads"`
}

type role struct {
	Repository string `json:"repository"`
	// Args are the flags with datastore.mode sqlite; ModeArgs those of the
	// other modes where they differ.
	Args     []string            `json:"args"`
	ModeArgs map[string][]string `json:"modeArgs,omitempty"`
	// SNIArgs are the flags with gateway.sni.host set, where they differ
	// (they do not depend on the datastore mode); SNIEnv the variables
	// they refer to.
	SNIArgs []string `json:"sniArgs,omitempty"`
	SNIEnv  []string `json:"sniEnv,omitempty"`
	Ports   []port   `json:"ports"`
	// Live and Ready are the kubelet's httpGet probes of the role's
	// health port, which the chart binds on the pod's address.
	Live     check             `json:"live"`
	Ready    check             `json:"ready"`
	Reads    []string          `json:"reads"`
	Requests map[string]string `json:"requests"`
	// Env are the variables the args refer to, by mode.
	Env map[string][]string `json:"env,omitempty"`
}

type check struct {
	Port int    `json:"port"`
	Path string `json:"path"`
}

type port struct {
	Name string `json:"name"`
	Port int    `json:"port"`
}

// Wiring is the chart's layout: each role reaches the others through a
// Service named after the role, in the release's namespace; pods reach the
// apiserver through the gateway's relay at its public address, which the
// apiserver advertises.
func Wiring(backend string) roles.Wiring {
	p := roles.DefaultPorts()
	w := roles.Wiring{
		Host:           roles.NamedHosts,
		Backend:        backend,
		Advertise:      "$(" + EnvAdvertise + ")",
		RelayAPIServer: true,
		RelayListen:    "0.0.0.0",
		// the kubelet's httpGet probes reach the health ports on the pod's
		// address; exec probes would start a process in the container for
		// every check (a runc exec each: ~20 hosted pods saturated 2 cores)
		HealthBind: "0.0.0.0",
		Extra: map[string][]string{
			// the init Job renews certificates in the PKI Secret (install,
			// upgrade, and the renewal CronJob); the controllers' own
			// renewal writes files, and their Secret volume is read-only
			roles.Controllers: {"--cert-check-interval", "0", "--wait-for-apiserver-upgrade"},
			// one `helm upgrade` may change several roles and Kubernetes
			// rolls them together: a scheduler or controllers newer than the
			// apiservers waits for them instead of exiting, so the roles
			// start in the skew policy's order
			roles.Scheduler: {"--wait-for-apiserver-upgrade"},
		},
	}
	if backend == "etcd" {
		member := "$(" + EnvPodName + ")." + EtcdPeers
		w.Extra[roles.Datastore] = []string{
			"--etcd-name", "$(" + EnvPodName + ")",
			"--etcd-advertise-peer-url", "https://" + member + ":" + strconv.Itoa(p.DatastorePeer),
			"--advertise-client-url", "https://" + member + ":" + strconv.Itoa(p.Datastore),
			"--etcd-initial-cluster", "$(" + EnvInitialCluster + ")",
		}
	}
	return w
}

// Render returns roles.json for images tagged version.
func Render(version string) ([]byte, error) {
	f := file{
		Comment: "generated by hack/gen.sh from roles/ (roles/helm): edit those, not this file; make verify checks it",
		Version: version, DataDir: roles.DataDir, UID: roles.UID, Ports: roles.DefaultPorts(),
		Roles: map[string]role{}, DatastoreClientReads: roles.DatastoreClientReads(),
	}
	for _, name := range roles.Names() {
		r := Wiring(Modes["sqlite"]).Role(name)
		withAPIPort(name, r.Args)
		out := role{
			Repository: r.Repository,
			Args:       r.Args,
			Live:       check{r.Live.Port, r.Live.Path},
			Ready:      check{r.Ready.Port, r.Ready.Path},
			Reads:      r.Reads,
			Requests: map[string]string{
				"cpu":    strconv.Itoa(r.Requests.MilliCPU) + "m",
				"memory": strconv.Itoa(r.Requests.MemoryMiB) + "Mi",
			},
		}
		for _, p := range r.Serves {
			out.Ports = append(out.Ports, port{p.Name, p.Port})
		}
		for _, mode := range []string{"etcd", "external"} {
			a := Wiring(Modes[mode]).Role(name).Args
			withAPIPort(name, a)
			if !slices.Equal(a, r.Args) {
				if out.ModeArgs == nil {
					out.ModeArgs = map[string][]string{}
				}
				out.ModeArgs[mode] = a
			}
		}
		out.Env = env(name)
		sw := Wiring(Modes["sqlite"])
		sw.APIServerName = SNIAPIServerPrefix + "$(" + EnvSNIHost + ")"
		sw.NodeAPIServer = "$(" + EnvNodeAPIAddr + ")"
		a := sw.Role(name).Args
		withAPIPort(name, a)
		if !slices.Equal(a, r.Args) {
			out.SNIArgs = a
			out.SNIEnv = []string{EnvSNIHost, EnvNodeAPIAddr}
		}
		f.Roles[name] = out
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// withAPIPort makes the apiserver's --secure-port $(EnvAPIPort).
func withAPIPort(name string, args []string) {
	if name != roles.APIServer {
		return
	}
	if i := slices.Index(args, "--secure-port"); i >= 0 && i+1 < len(args) {
		args[i+1] = "$(" + EnvAPIPort + ")"
	}
}

// env lists, by datastore mode, the variables a role's args expect.
func env(name string) map[string][]string {
	switch name {
	case roles.APIServer:
		api := []string{EnvAdvertise, EnvAPIPort}
		return map[string][]string{"sqlite": api, "etcd": api, "external": api}
	case roles.Datastore:
		return map[string][]string{"etcd": {EnvPodName, EnvInitialCluster}, "external": {EnvDSN}}
	}
	return nil
}
