package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/certificate"

	"github.com/kubesplit/kubesplit/pkg/bootstrap"
	"github.com/kubesplit/kubesplit/pkg/box"
	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/pki"
	"github.com/kubesplit/kubesplit/pkg/staticpod"
	"github.com/kubesplit/kubesplit/roles"
)

// A control-plane box (`agent --control-plane`): this agent's own kubelet
// runs the five roles as static pods from the manifest directory, before
// any apiserver exists. The agent (not `kubesplit init` plus a second step)
// does all of it, so one command brings a fresh box up and the same command,
// run again by the supervisor after a power cut, brings it back:
//
//   - the cluster's data directory (--cluster-data-dir) is initialised when
//     empty, as `kubesplit init` does, and checked otherwise;
//   - the node's client certificate is issued from the cluster CA on the box
//     (no join token: the box holds the CA), so the kubelet starts at once and
//     registers once the apiserver it started answers, through the box's own
//     gateway on loopback, as every node reaches the API through a gateway;
//   - a manifest is written only when missing: afterwards the files are the
//     truth, changed by `kubesplit upgrade` alone, so a restart never undoes
//     an upgrade.

// configError is a problem with the box that a restart cannot fix: the
// agent prints it as one line and exits with ExitConfig, which the
// supervisor does not restart.
type configError struct{ error }

func (e configError) Unwrap() error { return e.error }

// cpLock holds the box's control-plane lock for the agent's lifetime.
var cpLock *os.File

// lockControlPlane makes sure one control-plane agent runs per box. The
// lock (flock) goes with the process, so a killed agent leaves none behind.
func (c *Config) lockControlPlane() error {
	path := c.path("control-plane.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		pid, _ := os.ReadFile(path)
		return configError{fmt.Errorf("a control-plane agent already runs on this box (pid %s, lock %s): stop it first; one box runs one control plane",
			strings.TrimSpace(string(pid)), path)}
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	cpLock = f
	return nil
}

// clusterDir is the box's cluster data directory.
func (c *Config) clusterDir() layout.Dir { return layout.Dir(c.ClusterDataDir) }

// controlPlaneWiring is how the roles run on a box: host network, every
// role reaching the others on loopback; only the apiserver and the gateway's
// node and health ports listen on the box's addresses.
func (c *Config) controlPlaneWiring() roles.Wiring {
	return roles.Wiring{Host: roles.LoopbackHosts, Bind: "127.0.0.1", Advertise: c.NodeIP,
		AddonImageTag: c.ControlPlaneTag}
}

func (c *Config) staticPods() staticpod.Spec {
	return staticpod.Spec{Wiring: c.controlPlaneWiring(), HostDataDir: c.ClusterDataDir,
		Image: func(role string) string { return "kubesplit/" + role + ":" + c.ControlPlaneTag }}
}

// prepareControlPlane runs before containerd: the lock, the data directory,
// the CA and the node's identity. It returns whether the box is new (no
// manifests yet).
func (c *Config) prepareControlPlane(log *slog.Logger) (fresh bool, err error) {
	if err := c.lockControlPlane(); err != nil {
		return false, err
	}
	if err := c.checkManifests(log); err != nil {
		return false, err
	}
	fresh = true
	for _, r := range roles.Names() {
		if _, err := os.Stat(staticpod.File(c.manifestDir(), r)); err == nil {
			fresh = false
		}
	}
	if fresh {
		// a new box: its ports must be free (later starts find the roles'
		// own containers on them, since pods outlive the agent)
		if err := checkPortsFree(); err != nil {
			return false, err
		}
	}
	d := c.clusterDir()
	server := "https://" + net.JoinHostPort(c.NodeIP, strconv.Itoa(roles.DefaultPorts().APIServer))
	rep, err := bootstrap.Run(bootstrap.Options{DataDir: d, Server: server,
		InternalServer: "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(roles.DefaultPorts().APIServer)),
		APIServerSANs:  []string{c.NodeIP, c.NodeName}, GatewaySANs: []string{c.NodeIP, c.NodeName}, NodeToken: true})
	if err != nil {
		return false, configError{fmt.Errorf("--cluster-data-dir %s: %w", c.ClusterDataDir, err)}
	}
	if err := bootstrap.Chown(c.ClusterDataDir, roles.UID, roles.UID); err != nil {
		return false, err
	}
	if len(rep.Created) > 0 {
		log.Info("cluster data directory initialised", "dir", c.ClusterDataDir, "created", len(rep.Created), "kept", len(rep.Kept))
	}
	caPEM, err := os.ReadFile(d.ClusterCA().Cert)
	if err != nil {
		return false, err
	}
	if err := os.WriteFile(c.caFile(), caPEM, 0o644); err != nil {
		return false, err
	}
	if err := c.issueNodeClient(d, log); err != nil {
		return false, err
	}
	return fresh, nil
}

// checkPortsFree fails on the first role port something else listens on.
func checkPortsFree() error {
	p := roles.DefaultPorts()
	for _, port := range []struct {
		n    int
		what string
	}{{p.Datastore, "datastore"}, {p.DatastorePeer, "datastore peer"}, {p.DatastoreHealth, "datastore health"},
		{p.APIServer, "apiserver"}, {p.APIServerHealth, "apiserver health"}, {p.Scheduler, "scheduler"},
		{p.SchedulerHealth, "scheduler health"}, {p.Controllers, "controllers"}, {p.ControllersHealth, "controllers health"},
		{p.GatewayNodes, "tunnel-gateway nodes"}, {p.GatewayEgress, "tunnel-gateway egress"}, {p.GatewayHealth, "tunnel-gateway health"},
		{KubeletPort, "kubelet"}} {
		l, err := net.Listen("tcp", ":"+strconv.Itoa(port.n))
		if err != nil {
			return configError{fmt.Errorf("port %d (the %s's) is in use on this box: stop what listens there (ss -ltnp 'sport = %d'); a control-plane box needs it", port.n, port.what, port.n)}
		}
		l.Close()
	}
	return nil
}

// issueNodeClient gives the box's kubelet its client certificate straight
// from the cluster CA (kubeadm does the same for its control-plane nodes),
// in the kubelet's own certificate store so that it rotates it later by CSR
// like any node's, and a kubeconfig through the box's gateway.
func (c *Config) issueNodeClient(d layout.Dir, log *slog.Logger) error {
	if _, err := os.Stat(c.kubeletClientCert()); err != nil {
		ca, err := pki.LoadKeyPair(d.ClusterCA().Cert, d.ClusterCA().Key)
		if err != nil {
			return err
		}
		kp, err := ca.Issue(pki.Spec{CommonName: "system:node:" + c.NodeName, Organization: []string{"system:nodes"}, Usage: pki.UsageClient})
		if err != nil {
			return err
		}
		keyPEM, err := pki.KeyPEM(kp.Key)
		if err != nil {
			return err
		}
		store, err := certificate.NewFileStore("kubelet-client", c.kubeletCertDir(), c.kubeletCertDir(), "", "")
		if err != nil {
			return err
		}
		if _, err := store.Update(pki.CertPEM(kp.Cert), keyPEM); err != nil {
			return err
		}
		log.Info("node client certificate issued from the cluster CA", "node", c.NodeName)
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["kubesplit"] = &clientcmdapi.Cluster{Server: c.Gateway, CertificateAuthority: c.caFile(), TLSServerName: APIServerName}
	kc.AuthInfos["node"] = &clientcmdapi.AuthInfo{ClientCertificate: c.kubeletClientCert(), ClientKey: c.kubeletClientCert()}
	kc.Contexts["node"] = &clientcmdapi.Context{Cluster: "kubesplit", AuthInfo: "node"}
	kc.CurrentContext = "node"
	return clientcmd.WriteToFile(*kc, c.kubeletKubeconfig())
}

// checkRoleImages fails when a role's image is not in containerd (after the
// images directory was imported): the kubelet would only report
// ErrImageNeverPull or a pull error, deep in a pod's status.
func (c *Config) checkRoleImages(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, c.bin("ctr"), "--address", c.containerdSocket(), "--namespace", "k8s.io",
		"images", "ls", "-q").Output()
	if err != nil {
		return fmt.Errorf("listing containerd's images: %w", err)
	}
	have := map[string]bool{}
	for _, l := range strings.Fields(string(out)) {
		have[l] = true
	}
	dir := c.manifestDir()
	for _, r := range roles.Names() {
		image := c.staticPods().Image(r)
		if p, err := staticpod.Read(staticpod.File(dir, r)); err == nil {
			image = staticpod.Image(p)
		}
		ref, err := box.Normalize(image)
		if err != nil {
			return configError{fmt.Errorf("role %s: %w", r, err)}
		}
		if !have[ref] {
			return configError{fmt.Errorf("image %s (role %s) is not on this box: put its archive (docker save) into %s and start again",
				image, r, strings.Join(c.ImagesDirs, " or "))}
		}
	}
	return nil
}

func (c *Config) manifestDir() string { return c.path("manifests") }

// checkManifests checks the role manifests there are parse and run their
// role: a corrupt one is named, with the fix, before anything starts.
func (c *Config) checkManifests(log *slog.Logger) error {
	dir := c.manifestDir()
	// an upgrade cut short between its two renames: the role's previous manifest goes back
	restored, err := staticpod.Recover(dir)
	if err != nil {
		return err
	}
	for _, path := range restored {
		log.Warn("an interrupted upgrade left a role without its manifest; the one it ran before is back", "file", path)
	}
	for _, r := range roles.Names() {
		path := staticpod.File(dir, r)
		if _, err := os.Stat(path); err != nil {
			continue
		}
		p, err := staticpod.Read(path)
		if err != nil {
			return configError{err}
		}
		if staticpod.Role(p) != r {
			return configError{fmt.Errorf("%s runs role %q, not %s: restore it from %s or delete it to have it written anew",
				path, staticpod.Role(p), r, staticpod.PreviousDir(dir))}
		}
	}
	return nil
}

// writeManifests writes every missing role manifest (checkManifests has
// checked the others).
func (c *Config) writeManifests(log *slog.Logger) error {
	dir := c.manifestDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	spec := c.staticPods()
	for _, r := range roles.Names() {
		path := staticpod.File(dir, r)
		if _, err := os.Stat(path); err == nil {
			continue
		}
		if err := staticpod.Write(path, spec.Pod(r)); err != nil {
			return err
		}
		log.Info("static pod manifest written", "role", r, "file", path)
	}
	return nil
}

// announceJoin waits for the apiserver the kubelet started and says how
// other boxes join; the token stays in its file (never in a log).
func (c *Config) announceJoin(ctx context.Context, log *slog.Logger) {
	api := roles.Wiring{}.Role(roles.APIServer).Ready
	start := time.Now()
	for ctx.Err() == nil {
		resp, err := http.Get(api.URL())
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		time.Sleep(time.Second)
	}
	if ctx.Err() != nil {
		return
	}
	gw := "https://" + net.JoinHostPort(c.NodeIP, strconv.Itoa(roles.DefaultPorts().GatewayNodes))
	log.Info("control plane ready", "after", time.Since(start).Round(time.Second),
		"join", fmt.Sprintf("kubesplit-node agent --gateway %s --token-file FILE (FILE: a copy of %s from this box)", gw, c.clusterDir().NodeToken()),
		"kubeconfig", c.clusterDir().Kubeconfig(layout.Admin))
}

// primaryIP is the box's address: the one on the default route's
// interface, else the first global IPv4 address of any interface.
func primaryIP() (string, error) {
	// a UDP "connect" sends nothing; it asks the kernel for the route
	if conn, err := net.Dial("udp4", "192.0.2.1:9"); err == nil {
		defer conn.Close()
		return conn.LocalAddr().(*net.UDPAddr).IP.String(), nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
			return n.IP.String(), nil
		}
	}
	return "", errors.New("this box has no IPv4 address: give --node-ip")
}
