package addons

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
)

// AddonLabel names the addon (its manifest file's base name) on every object
// the deployer applied from that file.
const AddonLabel = "kubesplit.io/addon"

// inventoryLabel marks the ConfigMaps in kube-system that list what each
// addon applied, so objects removed from a file, or a whole removed file,
// can be deleted later (also across restarts of the controllers).
const inventoryLabel = "kubesplit.io/addon-inventory"

const fieldManager = "kubesplit-addons"

// Deployer applies every manifest file in Dir with server-side apply and
// keeps the cluster in sync with the directory: a changed file is applied
// again, objects dropped from a file are deleted, and a removed file's
// objects are deleted. Files named *.skip, hidden files and other
// extensions are ignored. Like k3s's deploy controller, but small and
// without a CRD: the inventory lives in one ConfigMap per addon.
type Deployer struct {
	Dir     string
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	Mapper  meta.ResettableRESTMapper
	Log     *slog.Logger
	// Resync re-applies unchanged files this often, undoing edits made in
	// the cluster to fields the manifests set.
	Resync time.Duration

	applied map[string]appliedState
}

type appliedState struct {
	hash string
	at   time.Time
}

// objectRef is one inventory entry.
type objectRef struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
}

// NewDeployer wires a deployer for dir from a client-go config's clients.
func NewDeployer(dir string, client kubernetes.Interface, dyn dynamic.Interface, log *slog.Logger) *Deployer {
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(client.Discovery()))
	return &Deployer{Dir: dir, Client: client, Dynamic: dyn, Mapper: mapper, Log: log, Resync: 5 * time.Minute}
}

// Run syncs every interval until ctx ends.
func (d *Deployer) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := d.Sync(ctx); err != nil && ctx.Err() == nil {
			d.Log.Warn("addon sync incomplete; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

var addonName = regexp.MustCompile(`[^a-z0-9-]+`)

// AddonName is the addon name of a manifest file: its base name without
// extension, lower-cased, with anything but [a-z0-9-] turned into "-".
func AddonName(file string) string {
	base := strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
	return strings.Trim(addonName.ReplaceAllString(strings.ToLower(base), "-"), "-")
}

func manifestFiles(dir string) (map[string]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	files := map[string]string{}
	for _, e := range entries {
		n := e.Name()
		switch {
		case e.IsDir(), strings.HasPrefix(n, "."):
		case strings.HasSuffix(n, ".yaml"), strings.HasSuffix(n, ".yml"), strings.HasSuffix(n, ".json"):
			if a := AddonName(n); a != "" {
				files[a] = filepath.Join(dir, n)
			}
		}
	}
	return files, nil
}

// Sync makes the cluster match the directory once.
func (d *Deployer) Sync(ctx context.Context) error {
	if d.applied == nil {
		d.applied = map[string]appliedState{}
	}
	files, err := manifestFiles(d.Dir)
	if err != nil {
		return err
	}
	var errs []error
	for name, path := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		sum := sha256.Sum256(b)
		hash := hex.EncodeToString(sum[:])
		if st, ok := d.applied[name]; ok && st.hash == hash && time.Since(st.at) < d.Resync {
			continue
		}
		if err := d.apply(ctx, name, path, b); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", filepath.Base(path), err))
			continue
		}
		d.applied[name] = appliedState{hash: hash, at: time.Now()}
	}
	// addons whose file is gone: delete what they applied
	invs, err := d.Client.CoreV1().ConfigMaps(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{LabelSelector: inventoryLabel})
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for i := range invs.Items {
		name := invs.Items[i].Labels[inventoryLabel]
		if _, ok := files[name]; ok {
			continue
		}
		if err := d.remove(ctx, name, &invs.Items[i]); err != nil {
			errs = append(errs, fmt.Errorf("removing addon %s: %w", name, err))
		}
		delete(d.applied, name)
	}
	return errors.Join(errs...)
}

// ParseManifests reads the objects of a YAML (multi-document) or JSON file.
func ParseManifests(b []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	var objs []*unstructured.Unstructured
	for i := 1; ; i++ {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(m) == 0 {
			continue // an empty document between "---" lines
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetKind() == "" || u.GetAPIVersion() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("document %d: apiVersion, kind and metadata.name are required", i)
		}
		if u.IsList() {
			return nil, fmt.Errorf("document %d: lists are not supported; write the items as separate documents", i)
		}
		objs = append(objs, u)
	}
	// namespaces and CRDs before what lives in them, then RBAC and accounts
	sort.SliceStable(objs, func(i, j int) bool { return applyRank(objs[i].GetKind()) < applyRank(objs[j].GetKind()) })
	return objs, nil
}

func applyRank(kind string) int {
	switch kind {
	case "Namespace":
		return 0
	case "CustomResourceDefinition":
		return 1
	case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ConfigMap", "Secret", "PriorityClass":
		return 2
	}
	return 3
}

func (d *Deployer) apply(ctx context.Context, name, path string, b []byte) error {
	objs, err := ParseManifests(b)
	if err != nil {
		return err
	}
	old, err := d.inventory(ctx, name)
	if err != nil {
		return err
	}
	keep := map[objectRef]bool{}
	for _, u := range objs {
		labels := u.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[AddonLabel] = name
		u.SetLabels(labels)
		ref, err := d.applyOne(ctx, u)
		if err != nil {
			return err
		}
		keep[ref] = true
	}
	var stale []objectRef
	for _, r := range old {
		if !keep[r] {
			stale = append(stale, r)
		}
	}
	refs := make([]objectRef, 0, len(keep))
	for r := range keep {
		refs = append(refs, r)
	}
	// list new and stale objects before deleting, so after a crash midway the
	// next start (which applies every file once) still finds the stale ones
	if err := d.saveInventory(ctx, name, append(refs, stale...)); err != nil {
		return err
	}
	for _, r := range stale {
		if err := d.deleteRef(ctx, r); err != nil {
			return err
		}
	}
	if len(stale) > 0 {
		if err := d.saveInventory(ctx, name, refs); err != nil {
			return err
		}
	}
	d.Log.Info("addon applied", "addon", name, "file", filepath.Base(path), "objects", len(objs), "pruned", len(stale))
	return nil
}

func (d *Deployer) mapping(gvk schema.GroupVersionKind) (*meta.RESTMapping, error) {
	m, err := d.Mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		d.Mapper.Reset() // a CRD applied a moment ago, or a new API group
		m, err = d.Mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	return m, err
}

func (d *Deployer) resource(r objectRef) (dynamic.ResourceInterface, string, error) {
	gvk := schema.FromAPIVersionAndKind(r.APIVersion, r.Kind)
	m, err := d.mapping(gvk)
	if err != nil {
		return nil, "", err
	}
	if m.Scope.Name() != meta.RESTScopeNameNamespace {
		return d.Dynamic.Resource(m.Resource), "", nil
	}
	ns := r.Namespace
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	return d.Dynamic.Resource(m.Resource).Namespace(ns), ns, nil
}

func (d *Deployer) applyOne(ctx context.Context, u *unstructured.Unstructured) (objectRef, error) {
	ref := objectRef{APIVersion: u.GetAPIVersion(), Kind: u.GetKind(), Namespace: u.GetNamespace(), Name: u.GetName()}
	ri, ns, err := d.resource(ref)
	if err != nil {
		return ref, fmt.Errorf("%s %s: %w", ref.Kind, ref.Name, err)
	}
	ref.Namespace = ns
	u.SetNamespace(ns)
	if _, err := ri.Apply(ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: fieldManager, Force: true}); err != nil {
		return ref, fmt.Errorf("applying %s %s: %w", ref.Kind, ref.Name, err)
	}
	return ref, nil
}

func (d *Deployer) deleteRef(ctx context.Context, r objectRef) error {
	ri, _, err := d.resource(r)
	if meta.IsNoMatchError(err) {
		return nil // its kind is gone (a removed CRD): so is the object
	}
	if err != nil {
		return err
	}
	bg := metav1.DeletePropagationBackground
	err = ri.Delete(ctx, r.Name, metav1.DeleteOptions{PropagationPolicy: &bg})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting %s %s: %w", r.Kind, r.Name, err)
	}
	return nil
}

func inventoryName(addon string) string { return "kubesplit-addon-" + addon }

func (d *Deployer) inventory(ctx context.Context, name string) ([]objectRef, error) {
	cm, err := d.Client.CoreV1().ConfigMaps(metav1.NamespaceSystem).Get(ctx, inventoryName(name), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return decodeInventory(cm)
}

func decodeInventory(cm *corev1.ConfigMap) ([]objectRef, error) {
	var refs []objectRef
	if err := json.Unmarshal([]byte(cm.Data["objects"]), &refs); err != nil {
		return nil, fmt.Errorf("inventory %s: %w", cm.Name, err)
	}
	return refs, nil
}

func (d *Deployer) saveInventory(ctx context.Context, name string, refs []objectRef) error {
	sort.Slice(refs, func(i, j int) bool {
		a, b := refs[i], refs[j]
		return a.Kind+"/"+a.Namespace+"/"+a.Name < b.Kind+"/"+b.Namespace+"/"+b.Name
	})
	data, err := json.Marshal(refs)
	if err != nil {
		return err
	}
	cms := d.Client.CoreV1().ConfigMaps(metav1.NamespaceSystem)
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: inventoryName(name), Namespace: metav1.NamespaceSystem,
			Labels: map[string]string{inventoryLabel: name}},
		Data: map[string]string{"objects": string(data)},
	}
	_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		_, err = cms.Create(ctx, cm, metav1.CreateOptions{})
	}
	return err
}

func (d *Deployer) remove(ctx context.Context, name string, cm *corev1.ConfigMap) error {
	refs, err := decodeInventory(cm)
	if err != nil {
		return err
	}
	// reverse apply order: workloads before the namespaces that hold them
	sort.SliceStable(refs, func(i, j int) bool {
		return applyRank(refs[i].Kind) > applyRank(refs[j].Kind)
	})
	for _, r := range refs {
		if err := d.deleteRef(ctx, r); err != nil {
			return err
		}
	}
	err = d.Client.CoreV1().ConfigMaps(metav1.NamespaceSystem).Delete(ctx, cm.Name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	d.Log.Info("addon removed", "addon", name, "objects", len(refs))
	return nil
}
