package e2eframework

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kubesplit/kubesplit/testcluster"
	"sigs.k8s.io/yaml"
)

// Config file identity: both fields are optional, but when given they
// must be these.
const (
	ConfigAPIVersion = "testcluster.kubesplit.io/v1alpha1"
	ConfigKind       = "Cluster"
)

// Config is the file CreateWithConfig reads (YAML or JSON; unknown fields
// are errors, so a typo does not go unnoticed). Every field is optional;
// what is left out keeps testcluster's default.
//
//	apiVersion: testcluster.kubesplit.io/v1alpha1
//	kind: Cluster
//	nodes: 2                  # worker nodes (default 1; 0: control plane alone)
//	backend: etcd             # sqlite (default), etcd or postgres
//	tag: v0.1.0               # tag of every kubesplit image (default $KUBESPLIT_TAG, else testcluster.DefaultTag)
//	images:                   # replace single images: role, node, kubesplit or postgres -> reference
//	  scheduler: example/my-scheduler:dev
//	manifests: [manifests/]   # YAML/JSON files or directories applied at start; relative to the config file
//	timeout: 5m               # bound on the wait for a ready cluster (default 3m)
//	waitDNS: false            # do not wait for CoreDNS (default true)
//	nodeArgs: [--max-pods=50] # node agent flags, every node
//	roleArgs:                 # flags of single roles
//	  apiserver: [--v=2]
type Config struct {
	APIVersion string              `json:"apiVersion,omitempty"`
	Kind       string              `json:"kind,omitempty"`
	Nodes      *int                `json:"nodes,omitempty"`
	Backend    string              `json:"backend,omitempty"`
	Tag        string              `json:"tag,omitempty"`
	Images     map[string]string   `json:"images,omitempty"`
	Manifests  []string            `json:"manifests,omitempty"`
	Timeout    string              `json:"timeout,omitempty"`
	WaitDNS    *bool               `json:"waitDNS,omitempty"`
	NodeArgs   []string            `json:"nodeArgs,omitempty"`
	RoleArgs   map[string][]string `json:"roleArgs,omitempty"`
}

// LoadConfig reads a config file; relative manifest paths in it are made
// relative to the file's directory.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config file: %w", err)
	}
	cfg, err := ParseConfig(b)
	if err != nil {
		return Config{}, fmt.Errorf("config file %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	for i, m := range cfg.Manifests {
		if !filepath.IsAbs(m) {
			cfg.Manifests[i] = filepath.Join(dir, m)
		}
	}
	return cfg, nil
}

// ParseConfig parses a config file's content (YAML or JSON).
func ParseConfig(data []byte) (Config, error) {
	var cfg Config
	if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
		return Config{}, err
	}
	if cfg.APIVersion != "" && cfg.APIVersion != ConfigAPIVersion {
		return Config{}, fmt.Errorf("apiVersion %q: want %s", cfg.APIVersion, ConfigAPIVersion)
	}
	if cfg.Kind != "" && cfg.Kind != ConfigKind {
		return Config{}, fmt.Errorf("kind %q: want %s", cfg.Kind, ConfigKind)
	}
	if cfg.Timeout != "" {
		if _, err := time.ParseDuration(cfg.Timeout); err != nil {
			return Config{}, fmt.Errorf("timeout: %w", err)
		}
	}
	return cfg, nil
}

// merge lays o over cfg: scalars that o sets win, lists are appended,
// images and role flags merged.
func (cfg *Config) merge(o Config) {
	if o.Nodes != nil {
		cfg.Nodes = o.Nodes
	}
	if o.Backend != "" {
		cfg.Backend = o.Backend
	}
	if o.Tag != "" {
		cfg.Tag = o.Tag
	}
	if o.Timeout != "" {
		cfg.Timeout = o.Timeout
	}
	if o.WaitDNS != nil {
		cfg.WaitDNS = o.WaitDNS
	}
	for k, v := range o.Images {
		if cfg.Images == nil {
			cfg.Images = map[string]string{}
		}
		cfg.Images[k] = v
	}
	cfg.Manifests = append(cfg.Manifests, o.Manifests...)
	cfg.NodeArgs = append(cfg.NodeArgs, o.NodeArgs...)
	for k, v := range o.RoleArgs {
		if cfg.RoleArgs == nil {
			cfg.RoleArgs = map[string][]string{}
		}
		cfg.RoleArgs[k] = append(cfg.RoleArgs[k], v...)
	}
}

// Options turns the config into testcluster options. testcluster checks
// their values (backend, tag, image names, node count) when Create runs.
func (cfg Config) Options() ([]testcluster.Option, error) {
	var opts []testcluster.Option
	if cfg.Nodes != nil {
		opts = append(opts, testcluster.WithNodes(*cfg.Nodes))
	}
	if cfg.Backend != "" {
		opts = append(opts, testcluster.WithBackend(testcluster.Backend(cfg.Backend)))
	}
	if cfg.Tag != "" {
		opts = append(opts, testcluster.WithTag(cfg.Tag))
	}
	for _, name := range sortedKeys(cfg.Images) {
		opts = append(opts, testcluster.WithImage(name, cfg.Images[name]))
	}
	if len(cfg.Manifests) > 0 {
		opts = append(opts, testcluster.WithManifests(cfg.Manifests...))
	}
	if cfg.Timeout != "" {
		d, err := time.ParseDuration(cfg.Timeout)
		if err != nil {
			return nil, fmt.Errorf("timeout: %w", err)
		}
		opts = append(opts, testcluster.WithTimeout(d))
	}
	if cfg.WaitDNS != nil && !*cfg.WaitDNS {
		opts = append(opts, testcluster.WithoutDNSWait())
	}
	if len(cfg.NodeArgs) > 0 {
		opts = append(opts, testcluster.WithNodeArgs(cfg.NodeArgs...))
	}
	for _, role := range sortedKeys(cfg.RoleArgs) {
		opts = append(opts, testcluster.WithRoleArgs(role, cfg.RoleArgs[role]...))
	}
	return opts, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// CreateFlags documents the arguments Create takes (and WithArgs adds);
// they are applied in order, so a flag after --config overrides the file:
//
//	--config FILE         a config file (see Config); CreateWithConfig passes this
//	--nodes N             worker nodes
//	--backend NAME        sqlite, etcd or postgres
//	--tag TAG             tag of every kubesplit image
//	--image NAME=REF      replace one image (repeatable)
//	--manifests PATH      apply a YAML/JSON file or directory at start (repeatable)
//	--timeout DURATION    bound on the wait for a ready cluster
//	--wait-dns=false      do not wait for CoreDNS
//	--node-arg ARG        a node agent flag (repeatable)
//	--role-arg ROLE=ARG   a flag of one role (repeatable)
const CreateFlags = "--config, --nodes, --backend, --tag, --image, --manifests, --timeout, --wait-dns, --node-arg, --role-arg"

// ParseCreateFlags parses Create's arguments into a Config.
func ParseCreateFlags(args []string) (Config, error) {
	var cfg Config
	fs := flag.NewFlagSet("kubesplit create", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Func("config", "config file", func(path string) error {
		file, err := LoadConfig(path)
		if err != nil {
			return err
		}
		cfg.merge(file)
		return nil
	})
	fs.Func("nodes", "worker nodes", func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil {
			return errors.New("want a number")
		}
		cfg.Nodes = &n
		return nil
	})
	fs.Func("backend", "datastore backend", func(s string) error { cfg.Backend = s; return nil })
	fs.Func("tag", "image tag", func(s string) error { cfg.Tag = s; return nil })
	fs.Func("image", "NAME=REF", func(s string) error {
		name, ref, ok := strings.Cut(s, "=")
		if !ok || name == "" || ref == "" {
			return errors.New("want NAME=REF")
		}
		cfg.merge(Config{Images: map[string]string{name: ref}})
		return nil
	})
	fs.Func("manifests", "file or directory", func(s string) error { cfg.Manifests = append(cfg.Manifests, s); return nil })
	fs.Func("timeout", "duration", func(s string) error {
		if _, err := time.ParseDuration(s); err != nil {
			return errors.New("want a duration such as 5m")
		}
		cfg.Timeout = s
		return nil
	})
	fs.BoolFunc("wait-dns", "wait for CoreDNS", func(s string) error {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return errors.New("want true or false")
		}
		cfg.WaitDNS = &b
		return nil
	})
	fs.Func("node-arg", "node agent flag", func(s string) error { cfg.NodeArgs = append(cfg.NodeArgs, s); return nil })
	fs.Func("role-arg", "ROLE=ARG", func(s string) error {
		role, arg, ok := strings.Cut(s, "=")
		if !ok || !slices.Contains(testcluster.Roles(), role) || arg == "" {
			return fmt.Errorf("want ROLE=ARG with ROLE one of %s, e.g. apiserver=--v=2", strings.Join(testcluster.Roles(), ", "))
		}
		cfg.merge(Config{RoleArgs: map[string][]string{role: {arg}}})
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return Config{}, fmt.Errorf("create arguments %q: %w (kubesplit takes %s)", args, err, CreateFlags)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("create arguments: unexpected %q (kubesplit takes %s)", fs.Args(), CreateFlags)
	}
	return cfg, nil
}
