package integration

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/kubesplit/kubesplit/e2e/hostcluster"
	"github.com/kubesplit/kubesplit/pkg/localcluster"
)

// The controllers' addon deployer keeps the cluster in sync with the
// manifests directory: bundled CoreDNS appears, a user's file is applied,
// objects dropped from it and whole removed files are deleted, and
// --disable removes a bundled addon that was deployed.
func TestAddonDeployerSyncsTheManifestsDirectory(t *testing.T) {
	needLong(t)
	c := hostcluster.Start(t, hostcluster.Options{Roles: []string{localcluster.Datastore, localcluster.APIServer, localcluster.Controllers}})
	cs := c.Client
	exists := func(get func(ctx context.Context) error) func(ctx context.Context) (bool, error) {
		return func(ctx context.Context) (bool, error) { return get(ctx) == nil, nil }
	}
	gone := func(get func(ctx context.Context) error) func(ctx context.Context) (bool, error) {
		return func(ctx context.Context) (bool, error) { return apierrors.IsNotFound(get(ctx)), nil }
	}
	coredns := func(ctx context.Context) error {
		_, err := cs.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		return err
	}
	waitFor(t, time.Minute, "bundled CoreDNS deployed", exists(coredns))
	waitFor(t, time.Minute, "the kube-dns Service at the 10th Service IP", func(ctx context.Context) (bool, error) {
		svc, err := cs.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{})
		return err == nil && svc.Spec.ClusterIP == "10.43.0.10", nil
	})

	dir := c.Spec.DataDir.Manifests()
	file := filepath.Join(dir, "demo.yaml")
	ns := "addon-demo-" + randSuffix()
	write := func(withCM bool) {
		doc := "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: " + ns + "\n"
		if withCM {
			doc = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: " + ns + "\ndata:\n  a: b\n---\n" + doc
		}
		if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cm := func(ctx context.Context) error {
		_, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "settings", metav1.GetOptions{})
		return err
	}
	namespace := func(ctx context.Context) error {
		n, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err == nil && n.DeletionTimestamp != nil {
			return apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, ns) // terminating counts as gone
		}
		return err
	}
	write(true)
	waitFor(t, time.Minute, "the user's manifest applied (namespace before its ConfigMap)", exists(cm))
	got, _ := cs.CoreV1().ConfigMaps(ns).Get(context.Background(), "settings", metav1.GetOptions{})
	if got.Labels["kubesplit.io/addon"] != "demo" {
		t.Fatalf("applied object labels %v, want kubesplit.io/addon=demo", got.Labels)
	}
	write(false)
	waitFor(t, time.Minute, "the ConfigMap dropped from the file deleted", gone(cm))
	if err := namespace(context.Background()); err != nil {
		t.Fatalf("the namespace still in the file went away: %v", err)
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the removed file's namespace deleted", gone(namespace))

	// --disable coredns on a cluster that has it: the controllers remove it
	p := c.Proc(localcluster.Controllers)
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	p.Args = append(p.Args, "--disable", "coredns")
	c.Restart(localcluster.Controllers)
	waitFor(t, time.Minute, "CoreDNS removed after --disable coredns", gone(coredns))
	if _, err := os.Stat(filepath.Join(dir, "coredns.yaml")); !os.IsNotExist(err) {
		t.Fatalf("coredns.yaml still in the manifests directory: %v", err)
	}
}
