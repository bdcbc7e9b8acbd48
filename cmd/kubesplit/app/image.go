package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubesplit/kubesplit/roles"
)

func imageCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Put local images onto a cluster's nodes",
	}
	var cluster string
	load := &cobra.Command{
		Use:   "load IMAGE...",
		Short: "Copy images from the local Docker onto every node of a Docker-wired cluster",
		Long: `load saves each image from the local Docker, writes it into the nodes' image
directory (` + roles.NodeImagesDir + `, imported again by every node at start: the
images survive restarts and reach nodes added later) and imports it into each
running node's containerd now. Pods use them with imagePullPolicy: Never or
IfNotPresent; nothing is pulled from a registry.

The cluster is a compose cluster (its project name) or a testcluster (its ID);
with one cluster on the Docker host, --cluster can be left out.`,
		Example: `  kubesplit image load myapp:dev
  kubesplit image load --cluster kubesplit myapp:dev sidecar:dev busybox:1.37`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, images []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Minute)
			defer cancel()
			return loadImages(ctx, cmd.OutOrStdout(), cluster, images)
		},
	}
	load.Flags().StringVar(&cluster, "cluster", "", "the cluster (compose project name or testcluster ID); needed when several run")
	cmd.AddCommand(load)
	return cmd
}

func loadImages(ctx context.Context, out io.Writer, clusterName string, images []string) error {
	// every image must be there before anything is copied
	if _, err := dockerCmd(ctx, nil, append([]string{"image", "inspect", "--format", "{{.Id}}"}, images...)...); err != nil {
		return fmt.Errorf("%w (build or pull it into the local Docker first)", err)
	}
	c, err := findCluster(ctx, clusterName)
	if err != nil {
		return err
	}
	var nodes []member
	for _, m := range append(c.role(roles.Node), c.role(roles.Box)...) {
		if m.Running {
			nodes = append(nodes, m)
		}
	}
	if len(nodes) == 0 {
		return fmt.Errorf("cluster %s has no running node container", c.Name)
	}
	tmp, err := os.MkdirTemp("", "kubesplit-image-load-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// One archive per image, named after it: loading an image again replaces
	// its archive, so what a node imports at its next start is the newest
	// one (one archive of several images named after all of them outgrew
	// file name limits, and a later load of a subset left stale copies).
	archives := make([]string, len(images))
	for i, img := range images {
		archives[i] = filepath.Join(tmp, archiveName(img))
		if _, err := dockerCmd(ctx, nil, "save", "--output", archives[i], img); err != nil {
			return err
		}
	}
	var mu sync.Mutex
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			for j, a := range archives {
				if err := loadArchive(ctx, n, a); err != nil {
					errs[i] = fmt.Errorf("%s onto %s: %w", images[j], n.Name, err)
					return
				}
			}
			mu.Lock()
			fmt.Fprintf(out, "loaded %s onto %s\n", strings.Join(images, " "), n.Name)
			mu.Unlock()
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// loadArchive writes one archive into a node's image directory (replaced
// atomically) and imports it into the node's containerd.
func loadArchive(ctx context.Context, n member, archive string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	dst := roles.NodeImagesDir + "/" + filepath.Base(archive)
	// the nodes of a cluster usually share one images volume: each writes
	// its own part file, and the renames replace the archive atomically
	part := roles.NodeImagesDir + "/." + filepath.Base(archive) + "." + shortID(n.ID) + ".part"
	// the node image has a shell (its agent's supervisor needs one)
	if _, err := dockerCmd(ctx, f, "exec", "-i", n.ID, "sh", "-c",
		`mkdir -p "$1" && cat > "$2" && mv -f "$2" "$3"`, "sh", roles.NodeImagesDir, part, dst); err != nil {
		return err
	}
	_, err = dockerCmd(ctx, nil, "exec", n.ID, "ctr", "--address", roles.ContainerdSocket, "-n", "k8s.io", "images", "import", dst)
	return err
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// archiveName is an image's archive file name: the reference made safe,
// cut short with a hash of the whole when it is long.
func archiveName(image string) string {
	name := unsafeName.ReplaceAllString(image, "_")
	if len(name) > 100 {
		sum := sha256.Sum256([]byte(image))
		name = name[:80] + "-" + hex.EncodeToString(sum[:8])
	}
	return name + ".tar"
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
