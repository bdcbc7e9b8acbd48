package example

import (
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubesplit/kubesplit/testcluster/e2eframework"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/e2e-framework/pkg/envconf"
	"sigs.k8s.io/e2e-framework/pkg/envfuncs"
	"sigs.k8s.io/e2e-framework/pkg/features"
)

// TestLoadImageArchive checks the provider's LoadImageArchive (not part
// of the example proper): a gzip'd `docker save` archive of an image under a
// fresh name reaches the nodes' containerd.
func TestLoadImageArchive(t *testing.T) {
	ref := "kubesplit-e2eframework/archive:" + envconf.RandomName("t", 10)
	f := features.New("LoadImageArchive").
		WithLabel("provider", "kubesplit").
		Assess("a gzip'd docker save archive reaches the nodes", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			docker, err := testcontainers.NewDockerClientWithOpts(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer docker.Close()
			if _, err := docker.ImageTag(ctx, client.ImageTagOptions{Source: testappImage, Target: ref}); err != nil {
				t.Fatal(err)
			}
			// removes the tag only; the image stays under its own name
			untag := func() { _, _ = docker.ImageRemove(context.WithoutCancel(ctx), ref, client.ImageRemoveOptions{}) }
			defer untag()
			archive := filepath.Join(t.TempDir(), "images.tar.gz")
			if err := save(ctx, docker, ref, archive); err != nil {
				t.Fatal(err)
			}
			untag() // so that the archive is what brings it back

			p, _ := envfuncs.GetClusterFromContext(ctx, clusterName)
			kp := p.(*e2eframework.Cluster)
			if err := kp.LoadImageArchive(ctx, archive); err != nil {
				t.Fatal(err)
			}
			tc := kp.Testcluster()
			for _, n := range tc.Nodes() {
				out, err := tc.Exec(ctx, n, "ctr", "-n", "k8s.io", "images", "ls", "-q")
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(out, "docker.io/"+ref) {
					t.Errorf("%s: docker.io/%s not among\n%s", n, ref, out)
				}
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}

func save(ctx context.Context, docker *testcontainers.DockerClient, ref, path string) error {
	rc, err := docker.ImageSave(ctx, []string{ref})
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	zw := gzip.NewWriter(f)
	_, err = io.Copy(zw, rc)
	if cerr := zw.Close(); err == nil {
		err = cerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// TestKubeconfigAccessors checks GenerateKubeconfig, GetKubectlContext,
// KubernetesRestConfig and WaitForControlPlane on the running cluster.
func TestKubeconfigAccessors(t *testing.T) {
	f := features.New("kubeconfig accessors").
		WithLabel("provider", "kubesplit").
		Assess("a generated kubeconfig names the context and server of the REST config", func(ctx context.Context, t *testing.T, cfg *envconf.Config) context.Context {
			p, _ := envfuncs.GetClusterFromContext(ctx, clusterName)
			path, err := p.GenerateKubeconfig()
			if err != nil {
				t.Fatal(err)
			}
			if path != p.GetKubeconfig() || path == cfg.KubeconfigFile() {
				t.Fatalf("generated %s; GetKubeconfig %s; suite's %s", path, p.GetKubeconfig(), cfg.KubeconfigFile())
			}
			kc, err := clientcmd.LoadFromFile(path)
			if err != nil {
				t.Fatal(err)
			}
			kctx, ok := kc.Contexts[p.GetKubectlContext()]
			if !ok || kc.CurrentContext != p.GetKubectlContext() {
				t.Fatalf("context %q not current in %s", p.GetKubectlContext(), path)
			}
			if server := kc.Clusters[kctx.Cluster].Server; server != p.KubernetesRestConfig().Host {
				t.Fatalf("server %s, REST config %s", server, p.KubernetesRestConfig().Host)
			}
			t.Logf("context %s, server %s", p.GetKubectlContext(), p.KubernetesRestConfig().Host)
			if err := p.WaitForControlPlane(ctx, cfg.Client()); err != nil {
				t.Fatal(err)
			}
			return ctx
		}).
		Feature()
	testenv.Test(t, f)
}
