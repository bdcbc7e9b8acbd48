package build

import (
	"context"
	"fmt"
	"io"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Push uploads every image's multi-platform index to PREFIX/NAME under each
// tag (PREFIX is REGISTRY[/PATH], e.g. 127.0.0.1:5000/kubesplit).
// Credentials come from the Docker config, as `docker push` uses them;
// registries on loopback or private addresses are spoken to over plain HTTP.
func Push(ctx context.Context, prefix string, tags []string, imgs []Image, out io.Writer) error {
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)}
	for _, img := range imgs {
		for i, t := range tags {
			ref, err := name.NewTag(prefix + "/" + img.Name + ":" + t)
			if err != nil {
				return fmt.Errorf("--push %s: %w", prefix, err)
			}
			if i == 0 {
				err = remote.WriteIndex(ref, img.Index, opts...)
			} else {
				err = remote.Tag(ref, img.Index, opts...)
			}
			if err != nil {
				return fmt.Errorf("pushing %s: %w", ref, err)
			}
			fmt.Fprintf(out, "imagebuild: pushed %s\n", ref)
		}
	}
	return nil
}
