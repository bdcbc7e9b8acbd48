// Package build turns the binaries of hack/build.sh into the project's
// images, one multi-platform index per image, with go-containerregistry:
// no Dockerfile, no docker build, nothing pulled. The result is written as
// one archive (see ociarchive) and, if asked, pushed to a registry.
package build

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kubesplit/kubesplit/hack/imagebuild/internal/catalog"
	"github.com/kubesplit/kubesplit/hack/imagebuild/internal/layer"
	"github.com/kubesplit/kubesplit/hack/imagebuild/internal/ociarchive"
)

// Image is one built image: its multi-platform index and, per platform,
// the image and its sizes.
type Image struct {
	catalog.Image
	Index     v1.ImageIndex
	Platforms []PlatformImage
}

// PlatformImage is an image for one platform.
type PlatformImage struct {
	Platform     v1.Platform
	Image        v1.Image
	Compressed   int64 // sum of the gzip layers
	Uncompressed int64 // sum of the layers' tar streams
}

// Run builds the configured images, writes the archive, pushes if asked,
// and prints the size table to out.
func Run(ctx context.Context, c Config, out io.Writer) error {
	if err := c.Validate(); err != nil {
		return err
	}
	imgs, _ := catalog.Select(c.Images)
	if err := c.checkInputs(imgs); err != nil {
		return err
	}
	work := c.WorkDir
	if work == "" {
		d, err := os.MkdirTemp("", "kubesplit-imagebuild-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		work = d
	}
	b := &builder{cfg: c, layers: &layer.Writer{Dir: work, Epoch: time.Unix(0, 0)}, work: work,
		shared: map[string]*sharedLayer{}, built: map[string]map[string]PlatformImage{}}
	built, err := b.buildAll(ctx, imgs)
	if err != nil {
		return err
	}
	if err := c.writeArchive(built); err != nil {
		return err
	}
	fmt.Fprintf(out, "imagebuild: wrote %s\n", c.Out)
	if c.Push != "" {
		if err := Push(ctx, c.Push, c.Tags(), built, out); err != nil {
			return err
		}
	}
	PrintSizes(out, built)
	return nil
}

// checkInputs finds every missing input before anything is built, and
// names each one with the command that makes it.
func (c *Config) checkInputs(imgs []catalog.Image) error {
	var missing []string
	for _, img := range imgs {
		for _, p := range c.platformsOf(img) {
			for _, bin := range append(slices.Clone(img.Tools), img.Binaries...) {
				f := filepath.Join(c.binDir(p), bin.Src)
				if _, err := os.Stat(f); err != nil {
					missing = append(missing, fmt.Sprintf("%s (image %s)", f, img.Name))
				}
			}
		}
	}
	var errs []error
	if len(missing) > 0 {
		cmd := fmt.Sprintf("PLATFORMS=%q", platformList(c.Platforms))
		if len(c.Images) > 0 {
			cmd += fmt.Sprintf(" IMAGES=%q", strings.Join(c.Images, " "))
		}
		errs = append(errs, fmt.Errorf("missing binaries; build them with %s hack/build.sh:\n  %s", cmd, strings.Join(missing, "\n  ")))
	}
	uses := func(base catalog.Base) bool {
		return slices.ContainsFunc(imgs, func(img catalog.Image) bool { return img.Base == base && len(c.platformsOf(img)) > 0 })
	}
	if _, err := os.Stat(c.CACerts); err != nil && uses(catalog.Static) {
		errs = append(errs, fmt.Errorf("CA certificates %s are missing (Debian: apt-get install ca-certificates, or make deps)", c.CACerts))
	}
	// each Debian base once per platform
	checked := map[string]bool{}
	for _, img := range imgs {
		if img.Base != catalog.Debian && img.Base != catalog.Postgres && img.Base != catalog.Busybox {
			continue
		}
		for _, p := range c.platformsOf(img) {
			file, flag, flavour := c.debianBase(img.Base, p)
			key := flag + " " + p.Architecture
			if checked[key] {
				continue
			}
			checked[key] = true
			if strings.TrimSpace(file) == "" {
				errs = append(errs, fmt.Errorf("the %s image needs %s (hack/node-base.sh --flavour %s makes it and prints its path)", img.Name, flag, flavour))
			} else if _, err := os.Stat(file); err != nil {
				cmd := "hack/node-base.sh"
				if flavour != "node" {
					cmd += " --flavour " + flavour
				}
				errs = append(errs, fmt.Errorf("%s base %s is missing: make it with %s --arch %s", flavour, file, cmd, p.Architecture))
			}
		}
	}
	return errors.Join(errs...)
}

type builder struct {
	cfg    Config
	layers *layer.Writer
	work   string

	mu     sync.Mutex
	shared map[string]*sharedLayer             // layers under several images: the static base, Debian bases, tools
	built  map[string]map[string]PlatformImage // platform → image name → image
}

// sharedLayer is a layer several images use, made once by the first that
// asks; the others wait for it.
type sharedLayer struct {
	done chan struct{}
	l    *layer.Layer
	err  error
}

// sharedLayer returns the layer stored under key, making it with fn if it
// is the first to ask.
func (b *builder) sharedLayer(key string, fn func() (*layer.Layer, error)) (*layer.Layer, error) {
	b.mu.Lock()
	s, ok := b.shared[key]
	if !ok {
		s = &sharedLayer{done: make(chan struct{})}
		b.shared[key] = s
	}
	b.mu.Unlock()
	if ok {
		<-s.done
		return s.l, s.err
	}
	s.l, s.err = fn()
	close(s.done)
	return s.l, s.err
}

// buildAll builds every image for its platforms, as many at once as there
// are CPUs (compressing the layers is most of the time), the images that
// preload others (the node's) after those.
func (b *builder) buildAll(ctx context.Context, imgs []catalog.Image) ([]Image, error) {
	type job struct {
		img, plat int
		p         v1.Platform
	}
	res := make([]Image, len(imgs))
	var first, preloading []job
	for i, img := range imgs {
		res[i] = Image{Image: img}
		for j, p := range b.cfg.platformsOf(img) {
			res[i].Platforms = append(res[i].Platforms, PlatformImage{})
			if len(img.Preload) > 0 {
				preloading = append(preloading, job{i, j, p})
			} else {
				first = append(first, job{i, j, p})
			}
		}
	}
	for _, wave := range [][]job{first, preloading} {
		var wg sync.WaitGroup
		sem := make(chan struct{}, runtime.NumCPU())
		errs := make([]error, len(wave))
		for k, jb := range wave {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				if errs[k] = ctx.Err(); errs[k] != nil {
					return
				}
				img := imgs[jb.img]
				pi, err := b.build(img, jb.p)
				if err != nil {
					errs[k] = fmt.Errorf("image %s for %s: %w", img.Name, jb.p, err)
					return
				}
				b.mu.Lock()
				if b.built[jb.p.String()] == nil {
					b.built[jb.p.String()] = map[string]PlatformImage{}
				}
				b.built[jb.p.String()][img.Name] = pi
				b.mu.Unlock()
				res[jb.img].Platforms[jb.plat] = pi
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
	}
	var out []Image
	for _, r := range res {
		if len(r.Platforms) == 0 {
			continue // a host-only image, and the host's platform is not built
		}
		var adds []mutate.IndexAddendum
		for _, pi := range r.Platforms {
			plat := pi.Platform
			adds = append(adds, mutate.IndexAddendum{Add: pi.Image, Descriptor: v1.Descriptor{Platform: &plat}})
		}
		r.Index = mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
		out = append(out, r)
	}
	return out, nil
}

// build makes one image for one platform: base layer, binaries layer,
// preloaded images layer.
func (b *builder) build(img catalog.Image, p v1.Platform) (PlatformImage, error) {
	var adds []mutate.Addendum
	add := func(l *layer.Layer, what string) {
		adds = append(adds, mutate.Addendum{Layer: l, MediaType: types.OCILayer,
			History: v1.History{Created: v1.Time{Time: b.cfg.Created}, CreatedBy: "kubesplit imagebuild: " + what}})
	}
	switch img.Base {
	case catalog.Static:
		l, err := b.static()
		if err != nil {
			return PlatformImage{}, err
		}
		add(l, "CA certificates, nonroot user, /var/lib/kubesplit")
	case catalog.Debian, catalog.Postgres, catalog.Busybox:
		l, err := b.debian(img.Base, p)
		if err != nil {
			return PlatformImage{}, err
		}
		add(l, debianHistory(img.Base))
	}
	if len(img.Tools) > 0 {
		l, err := b.tools(img.Tools, p)
		if err != nil {
			return PlatformImage{}, err
		}
		add(l, "tools")
	}
	entries, err := binaryEntries(b.cfg.binDir(p), img.Binaries)
	if err != nil {
		return PlatformImage{}, err
	}
	for _, f := range img.Files {
		entries = append(entries, layer.Bytes(f.Dst, f.Data, fs.FileMode(f.Mode)&fs.ModePerm))
	}
	if len(entries) > 0 {
		l, err := b.layers.FromEntries(img.Name+"-"+p.Architecture+"-bin", entries)
		if err != nil {
			return PlatformImage{}, err
		}
		add(l, "binaries")
	}
	if len(img.Preload) > 0 {
		var pre []layer.Entry
		for _, name := range img.Preload {
			f, err := b.preloadArchive(name, p)
			if err != nil {
				return PlatformImage{}, err
			}
			e := layer.File(catalog.PreloadDir+"/"+name+".tar", f, 0o644)
			// the node agent skips archives it imported before by name, size
			// and time: a rebuilt archive must not look like the last one
			e.ModTime = b.cfg.Created
			pre = append(pre, e)
		}
		l, err := b.layers.FromEntries(img.Name+"-"+p.Architecture+"-preload", pre)
		if err != nil {
			return PlatformImage{}, err
		}
		add(l, "preloaded images "+strings.Join(img.Preload, ", "))
	}

	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	base, err = mutate.ConfigFile(base, b.configFile(img, p))
	if err != nil {
		return PlatformImage{}, err
	}
	out, err := mutate.Append(base, adds...)
	if err != nil {
		return PlatformImage{}, err
	}
	pi := PlatformImage{Platform: p, Image: out}
	for _, a := range adds {
		z, u := a.Layer.(*layer.Layer).Sizes()
		pi.Compressed += z
		pi.Uncompressed += u
	}
	return pi, nil
}

func (b *builder) configFile(img catalog.Image, p v1.Platform) *v1.ConfigFile {
	cfg := v1.Config{
		Entrypoint: img.Entrypoint, Cmd: img.Cmd, User: img.User, StopSignal: img.StopSignal,
		Env: env(img.Env),
		Labels: map[string]string{
			"io.kubesplit.image":               img.Name,
			"io.kubesplit.kubernetes-version":  b.cfg.Kubernetes,
			"org.opencontainers.image.version": b.cfg.Version,
			"org.opencontainers.image.title":   Repository(img.Name),
		},
	}
	if len(img.Ports) > 0 {
		cfg.ExposedPorts = map[string]struct{}{}
		for _, port := range img.Ports {
			cfg.ExposedPorts[port] = struct{}{}
		}
	}
	if len(img.Volumes) > 0 {
		cfg.Volumes = map[string]struct{}{}
		for _, v := range img.Volumes {
			cfg.Volumes[v] = struct{}{}
		}
	}
	return &v1.ConfigFile{
		Architecture: p.Architecture, OS: p.OS, Variant: p.Variant,
		Created: v1.Time{Time: b.cfg.Created}, Config: cfg,
		RootFS: v1.RootFS{Type: "layers"},
	}
}

// env is the default PATH and then extra, whose PATH, if any, replaces it.
func env(extra []string) []string {
	out := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	for _, e := range extra {
		if strings.HasPrefix(e, "PATH=") {
			out[0] = e
		} else {
			out = append(out, e)
		}
	}
	return out
}

// static is the layer under every control-plane image; the same bytes for
// every platform, so it is stored once.
func (b *builder) static() (*layer.Layer, error) {
	return b.sharedLayer("static-base", func() (*layer.Layer, error) {
		return b.layers.FromEntries("static-base", staticBase(b.cfg.CACerts))
	})
}

// tools is the layer of shared helper binaries, one per platform and set.
func (b *builder) tools(bins []catalog.Binary, p v1.Platform) (*layer.Layer, error) {
	key := p.Architecture
	for _, t := range bins {
		key += "-" + filepath.Base(t.Src)
	}
	return b.sharedLayer("tools-"+key, func() (*layer.Layer, error) {
		entries, err := binaryEntries(b.cfg.binDir(p), bins)
		if err != nil {
			return nil, err
		}
		return b.layers.FromEntries("tools-"+key, entries)
	})
}

// debianHistory describes a Debian base in an image's history.
func debianHistory(b catalog.Base) string {
	switch b {
	case catalog.Postgres:
		return "Debian bookworm minbase with PostgreSQL 15 (hack/node-base.sh --flavour postgres)"
	case catalog.Busybox:
		return "Debian bookworm busybox-static (hack/node-base.sh --flavour busybox)"
	}
	return "Debian bookworm minbase (hack/node-base.sh)"
}

// debian is the layer of a Debian base (node, postgres or busybox) for platform p,
// read from its tarball once.
func (b *builder) debian(base catalog.Base, p v1.Platform) (*layer.Layer, error) {
	file, _, flavour := b.cfg.debianBase(base, p)
	key := flavour + "-base-" + p.Architecture
	return b.sharedLayer(key, func() (*layer.Layer, error) { return b.layers.FromTarball(key, file) })
}

// preloadArchive writes image NAME of platform p (built before, catalog
// order guarantees it) as an archive the node agent imports with
// `ctr images import`; it also loads with `docker load`.
func (b *builder) preloadArchive(name string, p v1.Platform) (string, error) {
	b.mu.Lock()
	pi, ok := b.built[p.String()][name]
	b.mu.Unlock()
	if !ok {
		return "", fmt.Errorf("preloaded image %s was not built for %s", name, p)
	}
	file := filepath.Join(b.work, "preload-"+p.Architecture, name+".tar")
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return "", err
	}
	var refs []string
	for _, t := range b.cfg.Tags() {
		refs = append(refs, Repository(name)+":"+t)
	}
	err := writeFile(file, func(w io.Writer) error {
		a := ociarchive.New(w)
		if err := a.AddImage(pi.Image, refs...); err != nil {
			return err
		}
		if err := a.AddDocker(pi.Image, refs...); err != nil {
			return err
		}
		return a.Close()
	})
	return file, err
}

// binaryEntries lists the files of bins, read from dir, as 0755 root files.
func binaryEntries(dir string, bins []catalog.Binary) ([]layer.Entry, error) {
	var entries []layer.Entry
	for _, bin := range bins {
		src := filepath.Join(dir, bin.Src)
		st, err := os.Stat(src)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			entries = append(entries, layer.File(bin.Dst, src, 0o755))
			continue
		}
		files, err := os.ReadDir(src)
		if err != nil {
			return nil, err
		}
		if len(files) == 0 {
			return nil, fmt.Errorf("%s is empty", src)
		}
		for _, f := range files {
			if f.Type().IsRegular() || f.Type()&fs.ModeSymlink != 0 {
				entries = append(entries, layer.File(bin.Dst+"/"+f.Name(), filepath.Join(src, f.Name()), 0o755))
			}
		}
	}
	return entries, nil
}

// writeArchive writes every image's index under its tags, and the
// --docker-platforms images into manifest.json.
func (c *Config) writeArchive(imgs []Image) error {
	if err := os.MkdirAll(filepath.Dir(c.Out), 0o755); err != nil {
		return err
	}
	return writeFile(c.Out, func(w io.Writer) error {
		a := ociarchive.New(w)
		for _, img := range imgs {
			var refs []string
			for _, t := range c.Tags() {
				refs = append(refs, Repository(img.Name)+":"+t)
			}
			if err := a.AddIndex(img.Index, refs...); err != nil {
				return fmt.Errorf("image %s: %w", img.Name, err)
			}
		}
		for _, p := range c.Docker {
			for _, img := range imgs {
				for _, pi := range img.Platforms {
					if pi.Platform.Equals(p) {
						if err := a.AddDocker(pi.Image, c.dockerTags(img.Name, p)...); err != nil {
							return fmt.Errorf("image %s: %w", img.Name, err)
						}
					}
				}
			}
		}
		return a.Close()
	})
}

// writeFile writes a file through a temporary name, so that a failed
// build never leaves a truncated archive behind.
func writeFile(name string, fill func(io.Writer) error) error {
	tmp := name + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	err = fill(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return nil
}

func platformList(ps []v1.Platform) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}
