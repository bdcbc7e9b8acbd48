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
