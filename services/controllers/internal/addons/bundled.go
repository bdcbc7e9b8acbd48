package addons

import (
	"bytes"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/template"

	"github.com/kubesplit/kubesplit/pkg/pki"
	"github.com/kubesplit/kubesplit/services/controllers/internal/helmchart"
	"github.com/kubesplit/kubesplit/services/controllers/internal/servicelb"
)

//go:embed bundled/*.yaml
var bundledFS embed.FS

// BundledParams fill the bundled addons' templates.
type BundledParams struct {
	ClusterDNS    string // the DNS Service IP the kubelets hand to pods
	ClusterDomain string
	// ImageTag is the tag of every bundled image kubesplit/NAME (they are
	// built with the roles and preloaded on nodes under the same tag).
	ImageTag string
	// Images overrides single images by NAME (--addon-image NAME=IMAGE).
	Images map[string]string
	// ClusterCA is the cluster CA certificate (PEM): the caBundle of the
	// APIServices of bundled addons, whose serving certificates it signs
	// (ServingCertAnnotation).
	ClusterCA []byte
}

// ClusterCABundle is ClusterCA as an APIService's caBundle (base64), what
// a template names as {{.ClusterCABundle}}.
func (p BundledParams) ClusterCABundle() (string, error) {
	if len(p.ClusterCA) == 0 {
		return "", errors.New("no cluster CA for an APIService's caBundle")
	}
	return base64.StdEncoding.EncodeToString(p.ClusterCA), nil
}

// Image is the image a bundled addon's template names as {{.Image "NAME"}}:
// kubesplit/NAME:ImageTag unless overridden.
func (p BundledParams) Image(name string) (string, error) {
	if img, ok := p.Images[name]; ok {
		return img, nil
	}
	if p.ImageTag == "" {
		return "", fmt.Errorf("no tag for image %s (set --addon-image-tag)", name)
	}
	return "kubesplit/" + name + ":" + p.ImageTag, nil
}

// Bundled names the addons kubesplit ships (the names --disable takes).
func Bundled() []string {
	entries, _ := bundledFS.ReadDir("bundled")
	var names []string
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	return names
}

// Controllers names the bundled addons that are controllers of this
// service rather than manifest files; --disable takes their names too.
func Controllers() []string { return []string{servicelb.Name, helmchart.Name} }

// helmCharts are the bundled addons written as a HelmChart of a chart in
// charts/: with --disable helm-controller they are left out too.
var helmCharts = []string{"traefik"}

// Known is every name --disable takes.
func Known() []string { return append(Bundled(), Controllers()...) }

// WriteBundled renders every bundled addon into dir as NAME.yaml, and
// removes the file of each disabled one (the deployer then deletes its
// objects). A NAME.yaml.skip file keeps NAME.yaml as the user left it.
func WriteBundled(dir string, p BundledParams, disabled []string) error {
	known := Known()
	for _, d := range disabled {
		if !slices.Contains(known, d) {
			return fmt.Errorf("--disable %q: no such bundled addon (bundled: %s)", d, strings.Join(known, ", "))
		}
	}
	if slices.Contains(disabled, helmchart.Name) {
		// addons deployed as HelmCharts have no one to install them
		disabled = append(slices.Clip(disabled), helmCharts...)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, name := range Bundled() {
		path := filepath.Join(dir, name+".yaml")
		if _, err := os.Stat(path + ".skip"); err == nil {
			continue
		}
		if slices.Contains(disabled, name) {
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			continue
		}
		b, err := RenderBundled(name, p)
		if err != nil {
			return err
		}
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b) {
			continue
		}
		if err := pki.WriteFile(path, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// RenderBundled returns one bundled addon's manifests.
func RenderBundled(name string, p BundledParams) ([]byte, error) {
	src, err := bundledFS.ReadFile("bundled/" + name + ".yaml")
	if err != nil {
		return nil, err
	}
	t, err := template.New(name).Option("missingkey=error").Parse(string(src))
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, p); err != nil {
		return nil, fmt.Errorf("bundled addon %s: %w", name, err)
	}
	return b.Bytes(), nil
}
