package build

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kubesplit/kubesplit/hack/imagebuild/internal/catalog"
)

// Config is what to build, from where, and where the result goes.
type Config struct {
	BinDir     string        // holds OS-ARCH/ per platform (hack/build.sh)
	Platforms  []v1.Platform // default: the host's
	Images     []string      // default: all
	Tag        string        // default: Version
	Version    string        // the project version (label)
	Kubernetes string        // the Kubernetes version (second tag, label)
	CACerts    string        // CA bundle for the Static base
	NodeBase   string        // root-file-system tarball of the node base; "{arch}" is replaced
	// PostgresBase is the postgres image's base tarball (hack/node-base.sh
	// --flavour postgres); "{arch}" is replaced
	PostgresBase string
	// BusyboxBase is the local-path helper image's base tarball
	// (hack/node-base.sh --flavour busybox); "{arch}" is replaced
	BusyboxBase string
	Out         string // the archive
	// Docker are the platforms listed in the archive's manifest.json, which
	// `docker load` reads: the host's under the plain tags, any other under
	// TAG-ARCH. Default: the host's if it is built, else every platform.
	Docker  []v1.Platform
	Push    string // REGISTRY/PREFIX to push the indexes to, if set
	WorkDir string // layers are staged here (default: a temporary directory)
	// Created is the images' creation time (default: $SOURCE_DATE_EPOCH, or
	// 1970). Layers carry no time of their own (every entry is dated 1970),
	// so an unchanged binary gives the same layer digest in every build.
	Created time.Time
}

// Host is the platform this program runs on.
func Host() v1.Platform { return v1.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH} }

// DefaultConfig has every default that does not depend on flags.
func DefaultConfig() Config {
	c := Config{
		BinDir: "bin", Platforms: []v1.Platform{Host()}, CACerts: "/etc/ssl/certs/ca-certificates.crt",
		Out: "dist/kubesplit-images.tar", Created: time.Unix(0, 0).UTC(),
	}
	// reproducible builds: https://reproducible-builds.org/specs/source-date-epoch/
	if s, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64); err == nil {
		c.Created = time.Unix(s, 0).UTC()
	}
	return c
}

// AddFlags binds the configuration to command-line flags.
func (c *Config) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.BinDir, "bin-dir", c.BinDir, "directory with one OS-ARCH/ directory of binaries per platform (hack/build.sh)")
	fs.Var(platformsFlag{&c.Platforms}, "platforms", "platforms to build, e.g. \"linux/amd64 linux/arm64\" (default: the host's)")
	fs.Var(listFlag{&c.Images}, "images", fmt.Sprintf("images to build (default: all of %v)", catalog.Names()))
	fs.StringVar(&c.Tag, "tag", c.Tag, "image tag (default: --version); TAG-k8sKUBERNETES is tagged too")
	fs.StringVar(&c.Version, "version", c.Version, "project version, for labels (required)")
	fs.StringVar(&c.Kubernetes, "kubernetes-version", c.Kubernetes, "Kubernetes version, for the second tag and labels (required)")
	fs.StringVar(&c.CACerts, "ca-certs", c.CACerts, "CA bundle copied into the control-plane images")
	fs.StringVar(&c.NodeBase, "node-base", c.NodeBase, "node base root file system tarball, {arch} replaced by the architecture (hack/node-base.sh)")
	fs.StringVar(&c.PostgresBase, "postgres-base", c.PostgresBase, "postgres base root file system tarball, {arch} replaced by the architecture (hack/node-base.sh --flavour postgres)")
	fs.StringVar(&c.BusyboxBase, "busybox-base", c.BusyboxBase, "busybox base tarball, {arch} replaced by the architecture (hack/node-base.sh --flavour busybox)")
	fs.StringVar(&c.Out, "out", c.Out, "archive to write: OCI layout for containerd and registries, manifest.json for docker load")
	fs.Var(platformsFlag{&c.Docker}, "docker-platforms", "platforms docker load loads from the archive (default: the host's if built, else all); non-host ones are tagged TAG-ARCH")
	fs.StringVar(&c.Push, "push", c.Push, "push every image's multi-platform index to REGISTRY/PREFIX/NAME:TAG")
	fs.StringVar(&c.WorkDir, "work-dir", c.WorkDir, "where layers are staged (default: a temporary directory, removed at the end)")
}

// Validate fills in the defaults that depend on other fields and checks the rest.
func (c *Config) Validate() error {
	var errs []error
	if c.Version == "" {
		errs = append(errs, errors.New("--version is required"))
	}
	if c.Kubernetes == "" {
		errs = append(errs, errors.New("--kubernetes-version is required"))
	}
	if len(c.Platforms) == 0 {
		errs = append(errs, errors.New("--platforms is empty"))
	}
	for _, p := range c.Platforms {
		if p.OS != "linux" || (p.Architecture != "amd64" && p.Architecture != "arm64") {
			errs = append(errs, fmt.Errorf("platform %s is not supported (linux/amd64, linux/arm64)", p))
		}
	}
	if imgs, err := catalog.Select(c.Images); err != nil {
		errs = append(errs, err)
	} else if len(c.Images) > 0 {
		// asked for by name but not buildable here
		for _, img := range imgs {
			if len(c.platformsOf(img)) == 0 && slices.Contains(c.Images, img.Name) {
				errs = append(errs, fmt.Errorf("image %s is built for the host's platform only (%s), which is not among --platforms", img.Name, Host()))
			}
		}
	}
	if c.Tag == "" {
		c.Tag = c.Version
	}
	if len(c.Docker) == 0 {
		c.Docker = c.Platforms
		if c.builds(Host()) {
			c.Docker = []v1.Platform{Host()}
		}
	}
	for _, p := range c.Docker {
		if !c.builds(p) {
			errs = append(errs, fmt.Errorf("--docker-platforms: %s is not among --platforms", p))
		}
	}
	return errors.Join(errs...)
}

func (c *Config) builds(p v1.Platform) bool {
	for _, q := range c.Platforms {
		if q.Equals(p) {
			return true
		}
	}
	return false
}

// Tags are the tags every image gets: TAG and TAG-k8sVERSION.
func (c *Config) Tags() []string {
	return []string{c.Tag, c.Tag + "-k8s" + strings.TrimPrefix(c.Kubernetes, "v")}
}

// dockerTags are the repository tags an image of platform p is loaded
// into Docker under.
func (c *Config) dockerTags(name string, p v1.Platform) []string {
	var tags []string
	for _, t := range c.Tags() {
		if !p.Equals(Host()) {
			t += "-" + p.Architecture
		}
		tags = append(tags, Repository(name)+":"+t)
	}
	return tags
}

// Repository is an image's repository name.
func Repository(name string) string { return "kubesplit/" + name }

// binDir is where a platform's binaries are.
func (c *Config) binDir(p v1.Platform) string { return c.BinDir + "/" + p.OS + "-" + p.Architecture }

func (c *Config) nodeBase(p v1.Platform) string {
	return strings.ReplaceAll(c.NodeBase, "{arch}", p.Architecture)
}

// debianBase is the root file system tarball of a Debian base for platform
// p, and the flag and flavour of hack/node-base.sh that name and make it.
func (c *Config) debianBase(b catalog.Base, p v1.Platform) (file, flag, flavour string) {
	switch b {
	case catalog.Postgres:
		return strings.ReplaceAll(c.PostgresBase, "{arch}", p.Architecture), "--postgres-base", "postgres"
	case catalog.Busybox:
		return strings.ReplaceAll(c.BusyboxBase, "{arch}", p.Architecture), "--busybox-base", "busybox"
	}
	return c.nodeBase(p), "--node-base", "node"
}

// platformsOf are the platforms image img is built for: every configured
// one, or for a HostOnly image the host's if it is configured (else none).
func (c *Config) platformsOf(img catalog.Image) []v1.Platform {
	if !img.HostOnly {
		return c.Platforms
	}
	if c.builds(Host()) {
		return []v1.Platform{Host()}
	}
	return nil
}

type listFlag struct{ v *[]string }

func (f listFlag) String() string {
	if f.v == nil {
		return ""
	}
	return strings.Join(*f.v, " ")
}
func (f listFlag) Set(s string) error {
	*f.v = strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
	return nil
}

type platformsFlag struct{ v *[]v1.Platform }

func (f platformsFlag) String() string {
	if f.v == nil {
		return ""
	}
	var s []string
	for _, p := range *f.v {
		s = append(s, p.String())
	}
	return strings.Join(s, " ")
}

func (f platformsFlag) Set(s string) error {
	var ps []v1.Platform
	for _, field := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		p, err := v1.ParsePlatform(field)
		if err != nil {
			return err
		}
		ps = append(ps, *p)
	}
	*f.v = ps
	return nil
}
