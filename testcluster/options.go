package testcluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kubesplit/kubesplit/roles"
)

// DefaultTag is the image tag Run uses when neither WithTag nor the
// KUBESPLIT_TAG environment variable names one: the release this package
// belongs to (hack/versions.env; hack/verify.sh keeps the two equal).
const DefaultTag = "v0.1.0"

// Control-plane roles and the other images a cluster runs. Stop, Start,
// Restart, Logs and Exec take one of the role names or a node name.
const (
	Datastore     = roles.Datastore
	APIServer     = roles.APIServer
	Scheduler     = roles.Scheduler
	Controllers   = roles.Controllers
	TunnelGateway = roles.TunnelGateway
	// image names only: the node agent, the CLI that runs init, the
	// PostgreSQL server of the postgres backend
	Node     = "node"
	CLI      = "kubesplit"
	Postgres = "postgres"
)

// Roles are the control-plane roles in start order.
func Roles() []string { return roles.Names() }

// Backend is the datastore role's storage.
type Backend string

const (
	// BackendSQLite keeps the cluster's state in a SQLite file in the data
	// volume (kine): the default, as in k3s.
	BackendSQLite Backend = "sqlite"
	// BackendEtcd runs an embedded single-member etcd in the datastore role.
	BackendEtcd Backend = "etcd"
	// BackendPostgres starts a PostgreSQL container (image kubesplit/postgres)
	// on the control network and points kine at it.
	BackendPostgres Backend = "postgres"
)

// Option configures Run.
type Option func(*options) error

type options struct {
	nodes        int
	backend      Backend
	tag          string
	images       map[string]string // image name (role, node, kubesplit, postgres) -> reference
	manifests    []manifest
	timeout      time.Duration
	waitDNS      bool
	nodeArgs     []string
	roleArgs     map[string][]string
	logf         func(format string, args ...any)
	handleSignal bool
	box          bool
}

type manifest struct {
	name string // file name in the manifests directory
	data []byte
}

func defaultOptions() options {
	tag := os.Getenv("KUBESPLIT_TAG")
	if tag == "" {
		tag = DefaultTag
	}
	return options{
		nodes:        1,
		backend:      BackendSQLite,
		tag:          tag,
		images:       map[string]string{},
		roleArgs:     map[string][]string{},
		timeout:      3 * time.Minute,
		waitDNS:      true,
		logf:         func(string, ...any) {},
		handleSignal: true,
	}
}

// image is the reference of one of the cluster's images.
func (o *options) image(name string) string {
	if ref, ok := o.images[name]; ok {
		return ref
	}
	return "kubesplit/" + name + ":" + o.tag
}

// WithNodes sets the number of nodes started with the cluster (default 1;
// 0 gives a control plane alone).
func WithNodes(n int) Option {
	return func(o *options) error {
		if n < 0 || n > 50 {
			return fmt.Errorf("WithNodes(%d): want 0 to 50 nodes", n)
		}
		o.nodes = n
		return nil
	}
}

// WithBackend chooses the datastore's storage (default BackendSQLite).
func WithBackend(b Backend) Option {
	return func(o *options) error {
		switch b {
		case BackendSQLite, BackendEtcd, BackendPostgres:
			o.backend = b
			return nil
		}
		return fmt.Errorf("WithBackend(%q): unknown backend; use %q, %q or %q", b, BackendSQLite, BackendEtcd, BackendPostgres)
	}
}

// WithTag sets the tag of every kubesplit image (default: $KUBESPLIT_TAG,
// else DefaultTag). The images must be in the local Docker engine already
// (`make images` in the kubesplit repository, or `docker load` of a release
// archive): Run never pulls.
func WithTag(tag string) Option {
	return func(o *options) error {
		if tag == "" || strings.ContainsAny(tag, " /:@") {
			return fmt.Errorf("WithTag(%q): want a bare tag such as %s", tag, DefaultTag)
		}
		o.tag = tag
		return nil
	}
}

// WithImage replaces one image: name is a role (Datastore, ..., TunnelGateway),
// Node, CLI or Postgres; ref a full reference such as "kubesplit/apiserver:v0.2.0".
func WithImage(name, ref string) Option {
	return func(o *options) error {
		if !slices.Contains(append(Roles(), Node, CLI, Postgres), name) {
			return fmt.Errorf("WithImage(%q): unknown image; want one of %s", name, strings.Join(append(Roles(), Node, CLI, Postgres), ", "))
		}
		if ref == "" {
			return fmt.Errorf("WithImage(%q, \"\"): empty image reference", name)
		}
		o.images[name] = ref
		return nil
	}
}

// WithManifests applies YAML files (or every .yaml/.yml/.json file of a
// directory) when the cluster starts, through kubesplit's addon deployer:
// they land in the data volume's manifests directory, the controllers apply
// them server-side, and Run returns once every one is applied. Later edits
// belong to the API (client-go, kubectl), not to these files.
func WithManifests(paths ...string) Option {
	return func(o *options) error {
		for _, p := range paths {
			files, err := manifestFiles(p)
			if err != nil {
				return fmt.Errorf("WithManifests: %w", err)
			}
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err != nil {
					return fmt.Errorf("WithManifests: %w", err)
				}
				if err := checkManifest(b); err != nil {
					return fmt.Errorf("WithManifests: %s: %w", f, err)
				}
				name := filepath.Base(f)
				for _, m := range o.manifests {
					if m.name == name {
						return fmt.Errorf("WithManifests: two files named %s; the addon deployer names addons by file name, so rename one", name)
					}
				}
				o.manifests = append(o.manifests, manifest{name: name, data: b})
			}
		}
		return nil
	}
}

func manifestFiles(p string) ([]string, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return []string{p}, nil
	}
	entries, err := os.ReadDir(p)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".yaml", ".yml", ".json":
			if !e.IsDir() {
				files = append(files, filepath.Join(p, e.Name()))
			}
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no .yaml, .yml or .json file", p)
	}
	return files, nil
}

// checkManifest catches what would otherwise only show as a timeout: every
// YAML document must parse and name apiVersion and kind.
func checkManifest(b []byte) error {
	docs := 0
	for i, doc := range splitYAML(string(b)) {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			return fmt.Errorf("document %d: %w", i+1, err)
		}
		if head.APIVersion == "" || head.Kind == "" {
			return fmt.Errorf("document %d: apiVersion and kind are required", i+1)
		}
		docs++
	}
	if docs == 0 {
		return errors.New("no object in the file")
	}
	return nil
}

// splitYAML splits a stream at "---" lines, dropping empty and comment-only documents.
func splitYAML(s string) []string {
	var docs []string
	var cur []string
	flush := func() {
		body := strings.TrimSpace(strings.Join(cur, "\n"))
		meaningful := false
		for _, l := range strings.Split(body, "\n") {
			if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
				meaningful = true
				break
			}
		}
		if meaningful {
			docs = append(docs, body)
		}
		cur = nil
	}
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, "---") && strings.TrimSpace(strings.TrimPrefix(line, "---")) == "" {
			flush()
			continue
		}
		cur = append(cur, line)
	}
	flush()
	return docs
}

// WithControlPlaneBox lays the cluster out as one box (an industrial PC)
// instead of a container per role: a node container named Box whose agent
// runs with --control-plane, its kubelet starting the five roles as static
// pods from the role images (copied into the box, as onto an air-gapped
// machine); the WithNodes nodes join through the box's gateway, on the edge
// network. The roles then are the mirror pods ROLE-box in kube-system, not
// members: Stop, Start, Restart, Kill and Exec take Box like any node.
// WithImage cannot replace a role's image here (the box's manifests name
// kubesplit/ROLE:TAG); WithRoleArgs does not apply.
func WithControlPlaneBox() Option {
	return func(o *options) error { o.box = true; return nil }
}

// WithTimeout bounds Run's wait for a ready cluster (default 3 minutes).
func WithTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("WithTimeout(%s): want a positive duration", d)
		}
		o.timeout = d
		return nil
	}
}

// WithoutDNSWait makes Run return before CoreDNS is available (it still
// starts): faster when a test does not resolve Service names.
func WithoutDNSWait() Option {
	return func(o *options) error { o.waitDNS = false; return nil }
}

// WithNodeArgs adds node agent flags to every node.
func WithNodeArgs(args ...string) Option {
	return func(o *options) error { o.nodeArgs = append(o.nodeArgs, args...); return nil }
}

// WithRoleArgs adds flags to one control-plane role.
func WithRoleArgs(role string, args ...string) Option {
	return func(o *options) error {
		if !slices.Contains(Roles(), role) {
			return fmt.Errorf("WithRoleArgs(%q): unknown role; want one of %s", role, strings.Join(Roles(), ", "))
		}
		o.roleArgs[role] = append(o.roleArgs[role], args...)
		return nil
	}
}

// WithLogf reports Run's progress and every container action, e.g. WithLogf(t.Logf).
func WithLogf(logf func(format string, args ...any)) Option {
	return func(o *options) error {
		if logf == nil {
			return errors.New("WithLogf(nil)")
		}
		o.logf = logf
		return nil
	}
}

// WithoutSignalHandler leaves SIGINT and SIGTERM alone. By default the first
// Run installs a handler that terminates every running cluster of the
// process and then exits, so an interrupted `go test` leaves nothing behind.
func WithoutSignalHandler() Option {
	return func(o *options) error { o.handleSignal = false; return nil }
}
