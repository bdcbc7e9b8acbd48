package app

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubesplit/kubesplit/pkg/box"
	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/roles"
)

// datastoreBinary is the datastore's program in its image; its own snapshot
// subcommand does the work, so a snapshot is always taken and restored by
// the datastore version that runs.
const datastoreBinary = "/usr/local/bin/datastore"

// snapshotTarget is where snapshots are taken: a Docker-wired cluster's
// datastore container, a box container (driven through its own kubesplit),
// or the box this command runs on.
type snapshotTarget interface {
	describe() string
	save(ctx context.Context, name string) error
	list(ctx context.Context) (string, error)
	// restore stops what writes, restores the named snapshot and starts
	// everything again (also when the restore fails)
	restore(ctx context.Context, out io.Writer, name string) error
	// copyOut copies a snapshot to a file here; copyIn puts a file here into
	// snapshots/ under name, readable by the datastore
	copyOut(ctx context.Context, name, file string) error
	copyIn(ctx context.Context, file, name string) error
}

func snapshotCommand() *cobra.Command {
	var cluster string
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Save, list and restore datastore snapshots (Docker-wired clusters and boxes)",
		Long: `Snapshots are taken by the running datastore's own tool (sqlite: a consistent
copy while it runs; embedded etcd: streamed from the member) into the data
directory's snapshots/, where they survive the cluster's restarts. restore puts a
snapshot back: it stops the apiserver and the datastore, restores with the same
image and starts both again; every revision afterwards is past the ones clients
saw, so controllers and kubelets list again instead of missing changes.

The cluster is a compose cluster (its project name), a testcluster (its ID) or,
without --cluster on a control-plane box, the box itself; with one cluster on
the Docker host, --cluster can be left out. An external SQL datastore is backed
up with its own tools.

Exit codes: 0 done; 1 an error (nothing was changed unless the message says so).`,
		Example: `  kubesplit snapshot save                       # snapshots/snapshot-<time>.db
  kubesplit snapshot save before-upgrade.db --output ./before-upgrade.db
  kubesplit snapshot list
  kubesplit snapshot restore before-upgrade.db
  kubesplit snapshot restore ./before-upgrade.db  # a file on this machine`,
	}
	cmd.PersistentFlags().StringVar(&cluster, "cluster", "", "the cluster (compose project name or testcluster ID); needed when several run")

	var output string
	save := &cobra.Command{
		Use:   "save [NAME]",
		Short: "Save a snapshot into the data directory's snapshots/ (and --output, a copy here)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Minute)
			defer cancel()
			name := "snapshot-" + time.Now().UTC().Format("20060102T150405Z") + ".db"
			if len(args) == 1 {
				name = args[0]
			}
			if err := snapshotName(name); err != nil {
				return err
			}
			t, err := findSnapshotTarget(ctx, cluster)
			if err != nil {
				return err
			}
			if err := t.save(ctx, name); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "snapshot %s saved in %s\n", name, t.describe())
			if output != "" {
				if err := t.copyOut(ctx, name, output); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "copied to %s\n", output)
			}
			return nil
		},
	}
	save.Flags().StringVarP(&output, "output", "o", "", "also copy the snapshot to this file on this machine")

	list := &cobra.Command{
		Use:   "list",
		Short: "The snapshots in the data directory's snapshots/",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			t, err := findSnapshotTarget(ctx, cluster)
			if err != nil {
				return err
			}
			out, err := t.list(ctx)
			fmt.Fprint(cmd.OutOrStdout(), out)
			return err
		},
	}

	restore := &cobra.Command{
		Use:   "restore NAME|FILE",
		Short: "Replace the cluster's state with a snapshot (stops and starts the datastore and apiserver)",
		Long: `restore takes a name from 'kubesplit snapshot list', or a file on this machine
(a path with a slash, or a name that exists here and not in snapshots/), which is
copied into snapshots/ first. The state it replaces is kept in the datastore's
backup-<time> folder.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Minute)
			defer cancel()
			t, err := findSnapshotTarget(ctx, cluster)
			if err != nil {
				return err
			}
			name := args[0]
			local := strings.ContainsRune(name, '/')
			if !local && fileExists(name) {
				// a file here, unless the cluster has a snapshot of that name
				l, err := t.list(ctx)
				local = err == nil && !listed(l, name)
			}
			if local {
				name = "restore-" + filepath.Base(args[0])
				if err := snapshotName(name); err != nil {
					return err
				}
				if err := t.copyIn(ctx, args[0], name); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "copied %s into %s as %s\n", args[0], t.describe(), name)
			} else if err := snapshotName(name); err != nil {
				return err
			}
			if err := t.restore(ctx, cmd.OutOrStdout(), name); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s restored from %s; the datastore and apiserver run again\n", t.describe(), name)
			return nil
		},
	}
	cmd.AddCommand(save, list, restore)
	return cmd
}

// findSnapshotTarget: this box without --cluster when it is one, else the
// Docker-wired cluster named (or the only one).
func findSnapshotTarget(ctx context.Context, name string) (snapshotTarget, error) {
	if b := box.Default(); name == "" && fileExists(filepath.Join(b.Manifests, roles.Datastore+".yaml")) {
		return localBox{b}, nil
	}
	c, err := findCluster(ctx, name)
	if err != nil {
		return nil, err
	}
	if bs := c.role(roles.Box); len(bs) == 1 && len(c.role(roles.Datastore)) == 0 {
		if !bs[0].Running {
			return nil, fmt.Errorf("the box container %s is not running: start it first", bs[0].Name)
		}
		return boxContainer{bs[0]}, nil
	}
	ds, err := c.one(roles.Datastore)
	if err != nil {
		return nil, err
	}
	d := datastoreContainer{member: ds, cluster: c}
	if b := d.backend(); b != "sqlite" && b != "etcd" {
		return nil, fmt.Errorf("cluster %s keeps its state in an external SQL server: back it up with that server's tools", c.Name)
	}
	return d, nil
}

// datastoreContainer is a Docker-wired cluster's datastore container.
type datastoreContainer struct {
	member
	cluster *dockerCluster
}

func (d datastoreContainer) describe() string {
	return "cluster " + d.cluster.Name + " (" + d.Name + ":" + d.snapshots() + ")"
}

func (d datastoreContainer) dataDir() string {
	if v := d.flag("data-dir"); v != "" {
		return v
	}
	return roles.DataDir
}

func (d datastoreContainer) snapshots() string { return layout.Dir(d.dataDir()).Snapshots() }

func (d datastoreContainer) backend() string {
	if v := d.flag("backend"); v != "" {
		return v
	}
	return "sqlite"
}

// tool runs the datastore's snapshot subcommand: in the container while it
// runs, else in a new one from the same image on the same volumes.
func (d datastoreContainer) tool(ctx context.Context, args ...string) (string, error) {
	if d.Running {
		return dockerCmd(ctx, nil, append([]string{"exec", d.ID, datastoreBinary, "snapshot"}, args...)...)
	}
	run := []string{"run", "--rm", "--network", "none", "--volumes-from", d.ID, "--entrypoint", datastoreBinary}
	if d.User != "" {
		run = append(run, "--user", d.User)
	}
	return dockerCmd(ctx, nil, append(append(run, d.Image, "snapshot"), args...)...)
}

func (d datastoreContainer) save(ctx context.Context, name string) error {
	if !d.Running {
		return fmt.Errorf("the datastore container %s is not running: start the cluster first", d.Name)
	}
	args := []string{"save", "--data-dir", d.dataDir(), "--backend", d.backend()}
	if d.backend() == "etcd" {
		args = append(args, "--endpoint", "https://"+loopback(d.flag("listen-address"), "2379"))
	}
	_, err := d.tool(ctx, append(args, name)...)
	return err
}

func (d datastoreContainer) list(ctx context.Context) (string, error) {
	return d.tool(ctx, "list", "--data-dir", d.dataDir())
}

func (d datastoreContainer) copyOut(ctx context.Context, name, file string) error {
	_, err := dockerCmd(ctx, nil, "cp", d.ID+":"+path.Join(d.snapshots(), name), file)
	return err
}

func (d datastoreContainer) copyIn(ctx context.Context, file, name string) error {
	return copyIntoContainer(ctx, d.ID, d.User, d.snapshots(), file, name)
}

func (d datastoreContainer) restore(ctx context.Context, out io.Writer, name string) error {
	// nothing may write while the state is replaced: the apiservers stop
	// first, then the datastore
	apiservers := d.cluster.role(roles.APIServer)
	startAll := func() error {
		var first error
		for _, m := range append([]member{d.member}, apiservers...) {
			if m.Running {
				if _, err := dockerCmd(context.WithoutCancel(ctx), nil, "start", m.ID); err != nil && first == nil {
					first = err
				}
			}
		}
		return first
	}
	for _, m := range append(apiservers, d.member) {
		if m.Running {
			if _, err := dockerCmd(ctx, nil, "stop", m.ID); err != nil {
				_ = startAll()
				return err
			}
		}
	}
	stopped := d
	stopped.Running = false
	args := []string{"restore", "--data-dir", d.dataDir(), "--backend", d.backend()}
	if d.backend() == "etcd" {
		for _, f := range []string{"etcd-name", "etcd-advertise-peer-url"} {
			if v := d.flag(f); v != "" {
				args = append(args, "--"+f, v)
			}
		}
	}
	res, err := stopped.tool(ctx, append(args, name)...)
	// the datastore and apiservers start again either way: after a failed
	// restore the previous state is still in place
	serr := startAll()
	if err != nil {
		return fmt.Errorf("restore failed, the cluster runs on its previous state: %w", err)
	}
	// the tool's own line (its advice to restart the apiserver is done here)
	fmt.Fprintln(out, strings.SplitN(strings.TrimSpace(res), "\n", 2)[0])
	return serr
}

// boxContainer is a box in a container (testcluster's): its own kubesplit
// does the work there.
type boxContainer struct{ member }

func (b boxContainer) describe() string { return "box " + b.Name }

func (b boxContainer) kubesplit(ctx context.Context, args ...string) (string, error) {
	return dockerCmd(ctx, nil, append([]string{"exec", b.ID, "kubesplit", "snapshot"}, args...)...)
}

func (b boxContainer) save(ctx context.Context, name string) error {
	_, err := b.kubesplit(ctx, "save", name)
	return err
}

func (b boxContainer) list(ctx context.Context) (string, error) { return b.kubesplit(ctx, "list") }

func (b boxContainer) restore(ctx context.Context, out io.Writer, name string) error {
	res, err := b.kubesplit(ctx, "restore", name)
	fmt.Fprint(out, res)
	return err
}

func (b boxContainer) copyOut(ctx context.Context, name, file string) error {
	_, err := dockerCmd(ctx, nil, "cp", b.ID+":"+path.Join(layout.Dir(roles.DataDir).Snapshots(), name), file)
	return err
}

func (b boxContainer) copyIn(ctx context.Context, file, name string) error {
	return copyIntoContainer(ctx, b.ID, roles.User(), layout.Dir(roles.DataDir).Snapshots(), file, name)
}

// localBox is the control-plane box this command runs on.
type localBox struct{ b box.Box }

func (l localBox) describe() string {
	dir, _ := l.b.SnapshotDir()
	return "this box (" + dir + ")"
}

func (l localBox) save(ctx context.Context, name string) error {
	_, err := l.b.Snapshot(ctx, name)
	return err
}

func (l localBox) list(ctx context.Context) (string, error) { return l.b.ListSnapshots(ctx) }

func (l localBox) restore(ctx context.Context, out io.Writer, name string) error {
	return l.b.Restore(ctx, name, out, 3*time.Minute)
}

func (l localBox) copyOut(_ context.Context, name, file string) error {
	dir, err := l.b.SnapshotDir()
	if err != nil {
		return err
	}
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return err
	}
	return os.WriteFile(file, data, 0o600)
}

func (l localBox) copyIn(_ context.Context, file, name string) error {
	dir, err := l.b.SnapshotDir()
	if err != nil {
		return err
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	dst := filepath.Join(dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(dst, data, 0o600); err != nil {
		return err
	}
	// the datastore's tool runs as the roles' user
	return os.Chown(dst, roles.UID, roles.UID)
}

// listed reports whether the datastore's list output names a snapshot.
func listed(list, name string) bool {
	for _, line := range strings.Split(list, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == name {
			return true
		}
	}
	return false
}

// copyIntoContainer puts a local file into dir in a container, owned by
// user (UID[:GID]): docker cp of a plain file would keep this machine's
// owner, often root, whom the datastore (an unprivileged user) cannot read.
func copyIntoContainer(ctx context.Context, id, user, dir, file, name string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	uid, gid := roles.UID, roles.UID
	if u, g, ok := strings.Cut(user, ":"); user != "" {
		if n, err := strconv.Atoi(u); err == nil {
			uid, gid = n, n
		}
		if n, err := strconv.Atoi(g); ok && err == nil {
			gid = n
		}
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	base := path.Base(dir)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: base + "/", Mode: 0o700, Uid: uid, Gid: gid, ModTime: now}); err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: base + "/" + name, Mode: 0o600, Size: int64(len(data)), Uid: uid, Gid: gid, ModTime: now}); err != nil {
		return err
	}
	if _, err := tw.Write(data); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	// (without --archive docker keeps the archive's owners; with it, it
	// looks the container's user up in a passwd file the images lack)
	_, err = dockerCmd(ctx, &buf, "cp", "-", id+":"+path.Dir(dir))
	return err
}

// snapshotName refuses names that are not one plain file name.
func snapshotName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\") || strings.HasPrefix(name, ".") {
		return fmt.Errorf("snapshot name %q: give a plain file name such as before-upgrade.db", name)
	}
	return nil
}

// loopback turns a listen address into one on 127.0.0.1 with the same port.
func loopback(listen, defaultPort string) string {
	port := defaultPort
	if i := strings.LastIndexByte(listen, ':'); i >= 0 && i+1 < len(listen) {
		port = listen[i+1:]
	}
	return "127.0.0.1:" + port
}
