package helmchart

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart"
	"helm.sh/helm/v4/pkg/chart/loader"
	"helm.sh/helm/v4/pkg/cli"
	"helm.sh/helm/v4/pkg/kube"
	"helm.sh/helm/v4/pkg/release"
	"helm.sh/helm/v4/pkg/storage/driver"
	"helm.sh/helm/v4/pkg/strvals"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"sigs.k8s.io/yaml"
)

// defaultTimeout bounds one install, upgrade or uninstall (Helm's own default).
const defaultTimeout = 5 * time.Minute

// releaser runs Helm actions as the controllers' addons identity.
type releaser struct {
	kubeconfig   string
	manifestsDir string
	log          *slog.Logger
}

// config is an action configuration for releases kept in namespace (Helm
// keeps a release's records, as Secrets, in its target namespace).
func (r releaser) config(namespace string) (*action.Configuration, error) {
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = &r.kubeconfig
	flags.Namespace = &namespace
	cfg := action.NewConfiguration()
	cfg.SetLogger(r.log.Handler())
	if err := cfg.Init(flags, namespace, "secret"); err != nil {
		return nil, err
	}
	return cfg, nil
}

// source is a chart ready to install and what identifies it.
type source struct {
	chart chart.Charter
	// digest is of the archive's bytes (or the repo reference)
	digest string
}

// k3sStaticChart is how k3s's bundled manifests name a chart it serves
// itself; the same file name is looked up in the manifests directory.
var k3sStaticChart = regexp.MustCompile(`^https://%\{KUBERNETES_API\}%/static/charts/([^/]+\.tgz)$`)

// load finds the chart: chartContent, a .tgz in the manifests directory
// (by file name, or k3s's static-charts URL), or a chart repository.
func (r releaser) load(spec HelmChartSpec) (source, error) {
	switch {
	case spec.ChartContent != "":
		data, err := base64.StdEncoding.DecodeString(strings.TrimSpace(spec.ChartContent))
		if err != nil {
			return source{}, fmt.Errorf("chartContent is not base64: %w", err)
		}
		return archive(data, "chartContent")
	case strings.HasSuffix(spec.Chart, ".tgz") && !strings.Contains(spec.Chart, "://"),
		k3sStaticChart.MatchString(spec.Chart):
		name := filepath.Base(spec.Chart)
		if m := k3sStaticChart.FindStringSubmatch(spec.Chart); m != nil {
			name = m[1]
		}
		if r.manifestsDir == "" {
			return source{}, fmt.Errorf("chart %s: the controllers have no --manifests-dir to find it in", name)
		}
		data, err := os.ReadFile(filepath.Join(r.manifestsDir, name))
		if err != nil {
			return source{}, fmt.Errorf("chart %s: not in the manifests directory (%w)", name, err)
		}
		return archive(data, name)
	case spec.Chart == "":
		return source{}, errors.New("spec.chart or spec.chartContent is required")
	}
	// a chart repository: Helm's own download, when one is reachable
	opts := action.ChartPathOptions{RepoURL: spec.Repo, Version: spec.Version}
	settings := cli.New()
	settings.RepositoryCache = filepath.Join(os.TempDir(), "kubesplit-helm", "cache")
	settings.RepositoryConfig = filepath.Join(os.TempDir(), "kubesplit-helm", "repositories.yaml")
	path, err := opts.LocateChart(spec.Chart, settings)
	if err != nil {
		return source{}, fmt.Errorf("fetching chart %s: %w", spec.Chart, err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return source{}, err
	}
	return archive(data, spec.Chart)
}

func archive(data []byte, what string) (source, error) {
	ch, err := loader.LoadArchive(bytes.NewReader(data))
	if err != nil {
		return source{}, fmt.Errorf("loading the chart from %s: %w", what, err)
	}
	sum := sha256.Sum256(data)
	return source{chart: ch, digest: hex.EncodeToString(sum[:])}, nil
}

// values merges the chart's valuesContent, the HelmChartConfig's over it,
// then spec.set (as helm --set / --set-string would).
func values(spec HelmChartSpec, override string) (map[string]any, error) {
	vals := map[string]any{}
	for i, doc := range []string{spec.ValuesContent, override} {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var v map[string]any
		if err := yaml.Unmarshal([]byte(doc), &v); err != nil {
			what := "spec.valuesContent"
			if i == 1 {
				what = "the HelmChartConfig's valuesContent"
			}
			// the YAML error names a line and column, never the values
			return nil, fmt.Errorf("%s is not YAML: %s", what, yamlErrorWithoutContent(err))
		}
		vals = mergeMaps(vals, v)
	}
	keys := make([]string, 0, len(spec.Set))
	for k := range spec.Set {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := spec.Set[k]
		var err error
		switch {
		case v.Type == 0: // an integer
			err = strvals.ParseInto(k+"="+v.String(), vals)
		case v.StrVal == "true" || v.StrVal == "false":
			err = strvals.ParseInto(k+"="+v.StrVal, vals)
		default:
			err = strvals.ParseIntoString(k+"="+v.StrVal, vals)
		}
		if err != nil {
			return nil, fmt.Errorf("spec.set %s: not a Helm --set key", k)
		}
	}
	return vals, nil
}

func yamlErrorWithoutContent(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, ": "); i > 0 && strings.HasPrefix(msg, "error converting YAML to JSON") {
		msg = msg[i+2:]
	}
	return msg
}

// mergeMaps is Helm's coalescing of -f files: b over a, maps merged deeply.
func mergeMaps(a, b map[string]any) map[string]any {
	out := make(map[string]any, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if bv, ok := v.(map[string]any); ok {
			if av, ok := out[k].(map[string]any); ok {
				out[k] = mergeMaps(av, bv)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// outcome is what an apply did.
type outcome struct {
	action   string // Installed, Upgraded, Reinstalled; "" when the release was already as asked
	revision int
}

// hashLabel, on a release's records, is the hash of what it was applied
// from: the release itself says whether it is up to date, so a restart or a
// sync that reads a stale cache does not apply (and add a revision) again.
const hashLabel = "kubesplit.io/applied-hash"

// apply installs the release, or upgrades it; a failed release is
// uninstalled first unless the policy is abort.
func (r releaser) apply(ctx context.Context, name string, hc *HelmChart, src source, vals map[string]any, h string) (outcome, error) {
	ns := targetNamespace(hc)
	cfg, err := r.config(ns)
	if err != nil {
		return outcome{}, err
	}
	timeout := defaultTimeout
	if hc.Spec.Timeout != nil && hc.Spec.Timeout.Duration > 0 {
		timeout = hc.Spec.Timeout.Duration
	}
	last, err := action.NewStatus(cfg).Run(name)
	installed := err == nil
	if err != nil && !errors.Is(err, driver.ErrReleaseNotFound) {
		return outcome{}, fmt.Errorf("reading release %s/%s: %w", ns, name, err)
	}
	verb := "Upgraded"
	if installed {
		acc, err := release.NewAccessor(last)
		if err != nil {
			return outcome{}, err
		}
		if acc.Status() == "deployed" && acc.Labels()[hashLabel] == h {
			return outcome{revision: acc.Version()}, nil
		}
		if st := acc.Status(); st == "failed" || strings.HasPrefix(st, "pending-") || st == "uninstalling" {
			if hc.Spec.FailurePolicy == "abort" {
				return outcome{}, fmt.Errorf("release %s/%s is %s and failurePolicy is abort: fix or delete it by hand", ns, name, st)
			}
			r.log.Info("reinstalling a release that is not deployed", "release", ns+"/"+name, "status", st)
			u := action.NewUninstall(cfg)
			u.Timeout = timeout
			u.WaitStrategy = kube.HookOnlyStrategy
			u.IgnoreNotFound = true
			if _, err := u.Run(name); err != nil {
				return outcome{}, fmt.Errorf("uninstalling the %s release %s/%s: %w", st, ns, name, err)
			}
			installed, verb = false, "Reinstalled"
		}
	}
	var rel release.Releaser
	if !installed {
		in := action.NewInstall(cfg)
		in.ReleaseName = name
		in.Namespace = ns
		in.CreateNamespace = hc.Spec.CreateNamespace
		in.Timeout = timeout
		in.WaitStrategy = kube.HookOnlyStrategy
		in.Labels = map[string]string{hashLabel: h}
		rel, err = in.RunWithContext(ctx, src.chart, vals)
		if verb != "Reinstalled" {
			verb = "Installed"
		}
	} else {
		up := action.NewUpgrade(cfg)
		up.Namespace = ns
		up.Timeout = timeout
		up.WaitStrategy = kube.HookOnlyStrategy
		up.MaxHistory = 10 // each revision is a Secret: keep the history bounded
		up.Labels = map[string]string{hashLabel: h}
		rel, err = up.RunWithContext(ctx, name, src.chart, vals)
	}
	if err != nil {
		return outcome{}, err
	}
	acc, err := release.NewAccessor(rel)
	if err != nil {
		return outcome{}, err
	}
	return outcome{action: verb, revision: acc.Version()}, nil
}

// uninstall removes the release; one that is not there is done.
func (r releaser) uninstall(name string, hc *HelmChart) error {
	cfg, err := r.config(targetNamespace(hc))
	if err != nil {
		return err
	}
	u := action.NewUninstall(cfg)
	u.IgnoreNotFound = true
	u.WaitStrategy = kube.HookOnlyStrategy
	u.Timeout = defaultTimeout
	_, err = u.Run(name)
	return err
}

func targetNamespace(hc *HelmChart) string {
	if hc.Spec.TargetNamespace != "" {
		return hc.Spec.TargetNamespace
	}
	return hc.Namespace
}

// hash identifies what an apply would do: a change of chart, values,
// target or options makes a new one.
func hash(src source, vals map[string]any, hc *HelmChart) string {
	h := sha256.New()
	h.Write([]byte(src.digest))
	h.Write(mustJSON(vals))
	h.Write([]byte(targetNamespace(hc)))
	h.Write(mustJSON(hc.Spec.Timeout))
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// scrub removes from a message every value a user gave (valuesContent,
// the HelmChartConfig's and spec.set): Helm's errors may quote rendered
// templates, and values may hold secrets, which must not reach an event,
// the status or a log.
func scrub(msg string, vals map[string]any) string {
	var leaves []string
	var walk func(v any)
	walk = func(v any) {
		switch t := v.(type) {
		case map[string]any:
			for _, x := range t {
				walk(x)
			}
		case []any:
			for _, x := range t {
				walk(x)
			}
		case string:
			if len(t) >= 4 {
				leaves = append(leaves, t)
			}
		}
	}
	walk(vals)
	// longest first, so a value inside another is not left half-replaced
	slices.SortFunc(leaves, func(a, b string) int { return len(b) - len(a) })
	for _, l := range leaves {
		msg = strings.ReplaceAll(msg, l, "[value]")
	}
	return msg
}
