package box

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/staticpod"
	"github.com/kubesplit/kubesplit/roles"
)

// ErrNoSnapshots says the box keeps its state in an external SQL server.
var ErrNoSnapshots = errors.New("this box keeps its state in an external SQL server: back it up with that server's tools")

// datastoreTool is what running the datastore image's own snapshot tool on
// this box takes, read from the datastore's manifest.
type datastoreTool struct {
	backend, image string
	host, mount    string // the data directory on the box and in the container
	args           []string
}

func (b Box) datastoreTool() (datastoreTool, error) {
	p, err := staticpod.Read(staticpod.File(b.Manifests, roles.Datastore))
	if err != nil {
		return datastoreTool{}, err
	}
	t := datastoreTool{backend: "sqlite", args: p.Spec.Containers[0].Args}
	if i := slices.Index(t.args, "--backend"); i >= 0 && i+1 < len(t.args) {
		t.backend = t.args[i+1]
	}
	if t.backend != "sqlite" && t.backend != "etcd" {
		return datastoreTool{}, ErrNoSnapshots
	}
	if t.host, t.mount = hostDataDir(p); t.host == "" {
		return datastoreTool{}, errors.New("the datastore manifest mounts no data directory")
	}
	if t.image, err = Normalize(staticpod.Image(p)); err != nil {
		return datastoreTool{}, err
	}
	return t, nil
}

// flag is the value of one of the datastore's flags in its manifest.
func (t datastoreTool) flag(name string) string {
	if i := slices.Index(t.args, "--"+name); i >= 0 && i+1 < len(t.args) {
		return t.args[i+1]
	}
	return ""
}

// run runs `datastore snapshot ARGS` from the datastore's image, as its
// user, on the box's network, with the data directory mounted.
func (b Box) runTool(ctx context.Context, t datastoreTool, args ...string) (string, error) {
	id := "kubesplit-snapshot-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	out, err := b.ctr(ctx, append([]string{"run", "--rm", "--net-host", "--user", roles.User(),
		"--mount", "type=bind,src=" + t.host + ",dst=" + t.mount + ",options=rbind:rw",
		t.image, id, "/usr/local/bin/datastore", "snapshot"}, args...)...)
	return string(out), err
}

// Snapshot saves the datastore's state with the running datastore image's
// own tool into the data directory's snapshots/ under name, and returns
// the file's path on the box.
func (b Box) Snapshot(ctx context.Context, name string) (string, error) {
	t, err := b.datastoreTool()
	if err != nil {
		return "", err
	}
	dir := layout.Dir(t.host).Snapshots()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	if err := os.Chown(dir, roles.UID, roles.UID); err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
		return "", fmt.Errorf("%s already exists; choose a new file name", filepath.Join(dir, name))
	}
	if _, err := b.runTool(ctx, t, "save", "--data-dir", t.mount, "--backend", t.backend,
		filepath.Join(layout.Dir(t.mount).Snapshots(), name)); err != nil {
		return "", err
	}
	return filepath.Join(dir, name), nil
}

// snapshotBefore is the snapshot an upgrade of role takes; "" when the
// backend has none.
func (b Box) snapshotBefore(ctx context.Context, role string) (string, error) {
	file, err := b.Snapshot(ctx, fmt.Sprintf("before-%s-%s.db", role, time.Now().UTC().Format("20060102T150405Z")))
	if errors.Is(err, ErrNoSnapshots) {
		return "", nil
	}
	return file, err
}

// SnapshotDir is where the box keeps its snapshots.
func (b Box) SnapshotDir() (string, error) {
	t, err := b.datastoreTool()
	if err != nil {
		return "", err
	}
	return layout.Dir(t.host).Snapshots(), nil
}

// ListSnapshots is the datastore tool's own list of the box's snapshots
// (one format on every wiring).
func (b Box) ListSnapshots(ctx context.Context) (string, error) {
	t, err := b.datastoreTool()
	if err != nil {
		return "", err
	}
	return b.runTool(ctx, t, "list", "--data-dir", t.mount)
}

// Restore replaces the box's state with a snapshot (a name in snapshots/):
// it stops the apiserver and the datastore (their manifests parked, as an
// upgrade does), restores with the datastore's image, and starts both
// again, waiting until they are healthy. The datastore and apiserver come
// back on every path; after a failed restore, on the previous state.
func (b Box) Restore(ctx context.Context, name string, out io.Writer, timeout time.Duration) error {
	t, err := b.datastoreTool()
	if err != nil {
		return err
	}
	if strings.ContainsRune(name, '/') {
		return fmt.Errorf("snapshot %q: give a name from the box's snapshots/ (copy a file there first)", name)
	}
	if _, err := os.Stat(filepath.Join(layout.Dir(t.host).Snapshots(), name)); err != nil {
		return fmt.Errorf("no snapshot %s on this box: %w", name, err)
	}
	var parked []string
	defer func() {
		// start in reverse order: the datastore before the apiserver
		for _, path := range slices.Backward(parked) {
			if err := staticpod.Unpark(path); err != nil {
				fmt.Fprintf(out, "could not put %s back: %v (the agent's next start does)\n", path, err)
			}
		}
	}()
	for _, role := range []string{roles.APIServer, roles.Datastore} {
		path := staticpod.File(b.Manifests, role)
		if err := staticpod.Park(path); err != nil {
			return err
		}
		parked = append(parked, path)
		if err := b.waitStopped(ctx, role, timeout); err != nil {
			return fmt.Errorf("%s did not stop: %w", role, err)
		}
	}
	args := []string{"restore", "--data-dir", t.mount, "--backend", t.backend}
	if t.backend == "etcd" {
		for _, f := range []string{"etcd-name", "etcd-advertise-peer-url"} {
			if v := t.flag(f); v != "" {
				args = append(args, "--"+f, v)
			}
		}
	}
	res, err := b.runTool(ctx, t, append(args, filepath.Join(layout.Dir(t.mount).Snapshots(), name))...)
	if err != nil {
		return fmt.Errorf("restore failed, the box starts again on its previous state: %w", err)
	}
	// the tool's own line (its advice to restart the apiserver is done here)
	fmt.Fprintln(out, strings.SplitN(strings.TrimSpace(res), "\n", 2)[0])
	for _, path := range slices.Backward(parked) {
		if err := staticpod.Unpark(path); err != nil {
			return err
		}
	}
	parked = nil
	for _, role := range []string{roles.Datastore, roles.APIServer} {
		if err := b.waitHealthy(ctx, role, timeout); err != nil {
			return fmt.Errorf("%s not healthy after the restore: %w", role, err)
		}
	}
	return nil
}

// waitStopped waits until no container of role runs.
func (b Box) waitStopped(ctx context.Context, role string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		ids, err := b.Containers(ctx, role)
		if err == nil && len(ids) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("still running after %s (%v)", timeout, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}
