// Package box is what `kubesplit upgrade` and `kubesplit status` do on a
// control-plane box: the roles' static-pod manifests, their images in the
// box's containerd, their local health, and the datastore snapshot taken
// before a risky change. It works with the apiserver down (an apiserver
// upgrade), so it asks the box itself, never only the API.
package box

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"runtime"
	"strings"

	"github.com/distribution/reference"

	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/roles"
)

// Box is one control-plane box.
type Box struct {
	// Manifests is the agent's static-pod directory.
	Manifests string
	// DataDir is the cluster's data directory.
	DataDir layout.Dir
	// Ctr is containerd's CLI and Socket its address.
	Ctr, Socket string
}

// Default is the node image's layout.
func Default() Box {
	return Box{Manifests: roles.NodeDataDir + "/manifests", DataDir: layout.Dir(roles.DataDir),
		Ctr: "ctr", Socket: roles.ContainerdSocket}
}

// ctr runs containerd's CLI in the kubelet's namespace. (containerd's Go
// client would bring containerd's dependency tree into the CLI; its CLI is
// on every box, next to containerd.)
func (b Box) ctr(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, b.Ctr, append([]string{"--address", b.Socket, "--namespace", "k8s.io"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("ctr %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Normalize is an image reference as containerd names it (docker.io/..., :latest).
func Normalize(image string) (string, error) {
	ref, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return "", fmt.Errorf("image %q: %w", image, err)
	}
	return reference.TagNameOnly(ref).String(), nil
}

// ImageInfo is what an image's labels say (hack/imagebuild sets them).
type ImageInfo struct {
	Ref        string
	Role       string // io.kubesplit.image
	Version    string // org.opencontainers.image.version: the kubesplit release
	Kubernetes string // io.kubesplit.kubernetes-version
}

// ErrNoImage is an image that is not in the box's containerd.
type ErrNoImage struct{ Ref string }

func (e ErrNoImage) Error() string {
	return fmt.Sprintf("image %s is not on this box: import it first (its archive into %s, then restart the agent, or `ctr -n k8s.io images import FILE`)",
		e.Ref, roles.NodeImagesDir)
}

// Image reads an image's labels from containerd's content store:
// image → index → this platform's manifest → config.
func (b Box) Image(ctx context.Context, image string) (ImageInfo, error) {
	ref, err := Normalize(image)
	if err != nil {
		return ImageInfo{}, err
	}
	out, err := b.ctr(ctx, "images", "ls", "name=="+ref)
	if err != nil {
		return ImageInfo{}, err
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 2 {
		return ImageInfo{}, ErrNoImage{ref}
	}
	fields := strings.Fields(lines[1]) // REF TYPE DIGEST SIZE PLATFORMS LABELS
	if len(fields) < 3 {
		return ImageInfo{}, fmt.Errorf("ctr images ls: cannot read %q", lines[1])
	}
	digest := fields[2]
	for range 3 { // an index, then a manifest, then the config
		blob, err := b.ctr(ctx, "content", "get", digest)
		if err != nil {
			return ImageInfo{}, err
		}
		var doc struct {
			Manifests []struct {
				Digest   string `json:"digest"`
				Platform struct {
					OS, Architecture string
				} `json:"platform"`
			} `json:"manifests"`
			Config *struct {
				Digest string `json:"digest"`
			} `json:"config"`
		}
		if err := json.Unmarshal(blob, &doc); err != nil {
			return ImageInfo{}, fmt.Errorf("image %s: %s: %w", ref, digest, err)
		}
		switch {
		case len(doc.Manifests) > 0:
			digest = ""
			for _, m := range doc.Manifests {
				if m.Platform.OS == "linux" && m.Platform.Architecture == runtime.GOARCH {
					digest = m.Digest
				}
			}
			if digest == "" {
				return ImageInfo{}, fmt.Errorf("image %s has no linux/%s variant", ref, runtime.GOARCH)
			}
		case doc.Config != nil && doc.Config.Digest != "":
			digest = doc.Config.Digest
		default:
			var cfg struct {
				Config struct {
					Labels map[string]string `json:"Labels"`
				} `json:"config"`
			}
			if err := json.Unmarshal(blob, &cfg); err != nil {
				return ImageInfo{}, err
			}
			l := cfg.Config.Labels
			return ImageInfo{Ref: ref, Role: l["io.kubesplit.image"], Version: l["org.opencontainers.image.version"],
				Kubernetes: l["io.kubesplit.kubernetes-version"]}, nil
		}
	}
	return ImageInfo{}, fmt.Errorf("image %s: no config found", ref)
}

// Containers are the IDs of a role's containers that run now.
func (b Box) Containers(ctx context.Context, role string) ([]string, error) {
	all, err := b.roleContainers(ctx, role)
	if err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for _, id := range all {
		ids[id] = true
	}
	tasks, err := b.ctr(ctx, "tasks", "ls")
	if err != nil {
		return nil, err
	}
	var running []string
	for _, l := range strings.Split(string(tasks), "\n") {
		f := strings.Fields(l) // TASK PID STATUS
		if len(f) == 3 && ids[f[0]] && f[2] == "RUNNING" {
			running = append(running, f[0])
		}
	}
	return running, nil
}

// PodUIDs are the kubelet's pod UIDs of a role's containers, running or not
// (from each container's io.kubernetes.pod.uid label).
func (b Box) PodUIDs(ctx context.Context, role string) ([]string, error) {
	ids, err := b.roleContainers(ctx, role)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var uids []string
	for _, id := range ids {
		info, err := b.ctr(ctx, "containers", "info", id)
		if err != nil {
			continue // removed meanwhile
		}
		var c struct {
			Labels map[string]string `json:"Labels"`
		}
		if err := json.Unmarshal(info, &c); err != nil {
			return nil, fmt.Errorf("ctr containers info %s: %w", id, err)
		}
		if uid := c.Labels["io.kubernetes.pod.uid"]; uid != "" && !seen[uid] {
			seen[uid] = true
			uids = append(uids, uid)
		}
	}
	return uids, nil
}

// roleContainers are the IDs of a role's containers in containerd, running
// or not (by the labels the kubelet's CRI gives them).
func (b Box) roleContainers(ctx context.Context, role string) ([]string, error) {
	out, err := b.ctr(ctx, "containers", "ls", "-q",
		`labels."io.kubernetes.container.name"==`+role+`,labels."io.kubernetes.pod.namespace"==kube-system`)
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(out)), nil
}
