// Package catalog says what each kubesplit image is made of: which binaries
// of a platform's bin directory go where, on which base, and how the image
// runs.
package catalog

import (
	_ "embed"
	"fmt"
	"slices"
)

// Base is what an image's own files sit on.
type Base int

const (
	// Scratch: nothing but the image's binaries.
	Scratch Base = iota
	// Static: CA certificates, /etc/passwd and /etc/group with the user
	// nonroot (NonRoot), /tmp, and /var/lib/kubesplit owned by nonroot
	// (mode 0700) so that a volume mounted there is writable for the role.
	Static
	// Debian: the node base, a minimal Debian root file system made by
	// hack/node-base.sh for the image's architecture.
	Debian
	// Postgres: Debian with Debian's PostgreSQL 15, made by
	// hack/node-base.sh --flavour postgres, with the user postgres as
	// 999:999 (PostgresUser).
	Postgres
	// Busybox: Debian's busybox-static alone, /bin/busybox and /bin/sh
	// (hack/node-base.sh --flavour busybox).
	Busybox
)

// NonRoot is the uid and gid the control-plane images run as.
const NonRoot = 65532

// PostgresUser is the uid and gid of the user postgres in the Postgres base.
const PostgresUser = 999

// Binary copies Src (relative to a platform's bin directory) to Dst in the
// image; when Src is a directory, every file in it goes into the directory Dst.
type Binary struct{ Src, Dst string }

// File is a file of ours that the image carries, from this program itself
// rather than from bin/.
type File struct {
	Dst  string
	Data []byte
	Mode uint32 // permission bits
}

// Image is one image of the project, built for every platform.
type Image struct {
	Name     string // kubesplit/NAME
	Base     Base
	Binaries []Binary
	// Tools are small binaries several images carry, in a layer of their
	// own that the images share.
	Tools []Binary
	// Files are written into the image, in the layer of its binaries.
	Files      []File
	Entrypoint []string
	Cmd        []string
	User       string
	Volumes    []string
	// Env is added to the image's PATH (which it may replace).
	Env []string
	// Ports are the exposed ports, e.g. "5432/tcp".
	Ports []string
	// StopSignal is what `docker stop` sends (default SIGTERM).
	StopSignal string
	// HostOnly images are built only for the platform imagebuild runs on,
	// and skipped when that platform is not among those built.
	HostOnly bool
	// Preload names images of the same platform that are stored, as image
	// archives containerd imports, in PreloadDir.
	Preload []string
}

// PreloadDir is where the node image carries image archives that the node
// agent imports into containerd at start.
const PreloadDir = "/usr/share/kubesplit/images"

func static(name string) Image {
	bin := "/usr/local/bin/" + name
	return Image{Name: name, Base: Static, Binaries: []Binary{{name, bin}}, Entrypoint: []string{bin}, User: nonRootUser}
}

// role is a control-plane role's image: its health check (compose
// healthchecks) is kubesplit-probe, as the image has no shell or curl.
func role(name string) Image {
	img := static(name)
	img.Tools = []Binary{{"kubesplit-probe", "/usr/local/bin/kubesplit-probe"}}
	return img
}

var nonRootUser = fmt.Sprintf("%d:%d", NonRoot, NonRoot)

//go:embed postgres-entrypoint.sh
var postgresEntrypoint []byte

// PostgresBin is where Debian's PostgreSQL 15 has its programs (the ones in
// /usr/bin are perl wrappers, and the image has no perl).
const PostgresBin = "/usr/lib/postgresql/15/bin"

// postgres is PostgreSQL for the datastore's postgres backend in test
// clusters (kine creates its database): Debian's PostgreSQL 15, started by
// postgres-entrypoint.sh as the user postgres. Host only: its base is made
// for the host's architecture alone (hack/images.sh).
func postgres() Image {
	entry := "/usr/local/bin/kubesplit-postgres-entrypoint"
	return Image{
		Name: "postgres", Base: Postgres, HostOnly: true,
		Files:      []File{{Dst: entry, Data: postgresEntrypoint, Mode: 0o755}},
		Entrypoint: []string{entry},
		User:       fmt.Sprintf("%d:%d", PostgresUser, PostgresUser),
		Volumes:    []string{"/var/lib/postgresql/data"},
		Env: []string{
			"PATH=" + PostgresBin + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"PGDATA=/var/lib/postgresql/data",
		},
		Ports: []string{"5432/tcp"},
		// fast shutdown: SIGTERM is PostgreSQL's smart shutdown, which waits
		// for every client to leave, and the datastore's connections stay
		StopSignal: "SIGINT",
	}
}

// localPathHelper is the image of the pods in which local-path-provisioner
// runs the setup and teardown scripts of its ConfigMap (/bin/sh SCRIPT).
// They are the user's to edit, so the image is a real shell with the usual
// commands rather than a program of ours that knows only today's scripts:
// Debian's busybox-static, one 2 MB static binary, nothing else. It runs as
// root: it makes and removes directories on the node, and a removed volume
// holds files of whatever users its pods ran as.
func localPathHelper() Image {
	return Image{Name: "local-path-helper", Base: Busybox, Entrypoint: []string{"/bin/sh"}}
}

// All lists every image, each after the images it preloads.
func All() []Image {
	local := func(n string) Binary { return Binary{n, "/usr/local/bin/" + n} }
	return []Image{
		role("datastore"), role("apiserver"), role("scheduler"), role("controllers"), role("tunnel-gateway"),
		// the CLI, which the compose wiring runs as its one-shot `kubesplit init`
		static("kubesplit"),
		static("coredns"),
		// the resource metrics API (kubectl top, the HorizontalPodAutoscaler)
		static("metrics-server"),
		// the local-storage addon: the provisioner only talks to the API
		static("local-path-provisioner"),
		localPathHelper(),
		// ServiceLB's forwarder: one static binary, run as nonroot
		static("servicelb"),
		// the bundled ingress controller
		static("traefik"),
		{Name: "pause", Base: Scratch, Binaries: []Binary{{"pause", "/pause"}}, Entrypoint: []string{"/pause"}, User: "65535:65535"},
		{Name: "testapp", Base: Scratch, Binaries: []Binary{{"testapp", "/testapp"}}, Entrypoint: []string{"/testapp"}, Cmd: []string{"serve"}},
		{
			Name: "node", Base: Debian,
			// kubesplit: the CLI, for a control-plane box (`kubesplit upgrade`, `status`, `token create`)
			Binaries: []Binary{local("kubesplit-node"), local("kubesplit-node-supervisor"), local("containerd"),
				local("containerd-shim-runc-v2"), local("ctr"), local("kubesplit"), {"cni", "/usr/local/bin/cni"}},
			Entrypoint: []string{"/usr/local/bin/kubesplit-node-supervisor"},
			Volumes:    []string{"/var/lib/containerd", "/var/lib/kubelet"},
			Preload:    []string{"pause", "coredns", "metrics-server", "local-path-provisioner", "local-path-helper", "servicelb", "traefik"},
		},
		postgres(),
	}
}

// Names lists every image name, in build order.
func Names() []string {
	var n []string
	for _, img := range All() {
		n = append(n, img.Name)
	}
	return n
}

// Select returns the named images and the images they preload, in build
// order. No names selects every image.
func Select(names []string) ([]Image, error) {
	all := All()
	if len(names) == 0 {
		return all, nil
	}
	want := map[string]bool{}
	for _, n := range names {
		i := slices.IndexFunc(all, func(img Image) bool { return img.Name == n })
		if i < 0 {
			return nil, fmt.Errorf("unknown image %q (images: %v)", n, Names())
		}
		want[n] = true
		for _, p := range all[i].Preload {
			want[p] = true
		}
	}
	var out []Image
	for _, img := range all {
		if want[img.Name] {
			out = append(out, img)
		}
	}
	return out, nil
}
