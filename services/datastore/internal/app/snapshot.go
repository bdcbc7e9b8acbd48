package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kubesplit/kubesplit/pkg/config"
	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/services/datastore/internal/backend"
	"github.com/kubesplit/kubesplit/services/datastore/internal/snapshot"
)

const snapshotSummary = `datastore snapshot save [FILE] | list | restore NAME|FILE

  save:    copy the state to FILE (sqlite: works while the datastore runs;
           etcd: streamed from the running member at --endpoint); without
           FILE, or with a bare name, into the data directory's snapshots/;
           --keep N then removes all but the newest N dated snapshots there
  list:    the snapshots in the data directory's snapshots/
  restore: replace the state with a snapshot (a name from list, or a path);
           the datastore must be stopped, the current state is moved into a
           backup- folder, revisions move past the snapshot's and older ones
           read as compacted (watchers list again); restart the apiserver
           once the datastore is back up; --once skips a snapshot this data
           directory was already restored from (the same content), so a
           restore in a pod's init container runs once, not at each restart
  restore --online (etcd): restore into the running cluster at --endpoint
           over its API instead: the keys under --prefix become the
           snapshot's (what it lacks is deleted, what differs rewritten;
           keys on leases, Events, are left to expire), revisions move
           forward and watchers see ordinary changes; no member needs the
           file and none restarts; --once skips a snapshot the cluster was
           already restored from; --pause DEPLOYMENT=N,... (in the chart's
           Job) stops those Deployments of the pod's namespace for the
           restore and starts them with N replicas after`

func snapshotMain(args []string, stdout, stderr io.Writer) int {
	if err := snapshotCmd(args, stdout); err != nil {
		if errors.Is(err, config.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "datastore snapshot: %v\n", err)
		return 1
	}
	return 0
}

func snapshotCmd(args []string, stdout io.Writer) error {
	if len(args) == 0 || (args[0] != "save" && args[0] != "restore" && args[0] != "list") {
		if len(args) > 0 && (args[0] == "--help" || args[0] == "-h") {
			fmt.Fprintln(stdout, snapshotSummary)
			return config.ErrHelp
		}
		return errors.New("expected 'snapshot save [FILE]', 'snapshot list' or 'snapshot restore NAME|FILE'")
	}
	verb := args[0]
	fs := config.NewFlagSet("datastore snapshot " + verb)
	dataDir := fs.String("data-dir", "", "data directory written by 'kubesplit init' (required)")
	backendFlag := fs.String("backend", "sqlite", "sqlite or etcd")
	endpoint := fs.String("endpoint", "https://127.0.0.1:2379", "save and restore --online, etcd: the running member's client URL")
	name := fs.String("etcd-name", "default", "restore, etcd: the member name")
	peerURL := fs.String("etcd-advertise-peer-url", "https://127.0.0.1:2380", "restore, etcd: the member's peer URL")
	once := fs.Bool("once", false, "restore: do nothing when the data directory was already restored from this snapshot (same content)")
	online := fs.Bool("online", false, "restore, etcd: into the running cluster at --endpoint over its API, not into a stopped member's data directory")
	prefix := fs.String("prefix", snapshot.DefaultPrefix, "restore --online: the key prefix restored (the apiserver's --etcd-prefix)")
	pause := fs.String("pause", "", "restore --online: DEPLOYMENT=REPLICAS,... of the pod's namespace stopped during the restore and started with REPLICAS after")
	keep := fs.Int("keep", 0, "save, without FILE: then delete all but the newest KEEP dated snapshots (snapshot-*) in snapshots/ (0: keep all)")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, config.ErrHelp) {
			config.PrintUsage(stdout, fs, snapshotSummary)
			return err
		}
		return fmt.Errorf("%v; run 'datastore snapshot %s --help'", err, verb)
	}
	if err := config.CheckDataDir(*dataDir, true); err != nil {
		return err
	}
	d := layout.Dir(*dataDir)
	switch {
	case verb == "list" && fs.NArg() != 0:
		return fmt.Errorf("list takes no argument, got %d", fs.NArg())
	case verb == "save" && fs.NArg() > 1, verb == "restore" && fs.NArg() != 1:
		return fmt.Errorf("expected one %s argument, got %d", map[string]string{"save": "FILE", "restore": "NAME or FILE"}[verb], fs.NArg())
	}
	if verb == "list" {
		return listSnapshots(d, stdout)
	}
	kind, err := backend.ParseBackend(*backendFlag)
	if err != nil {
		return err
	}
	if kind != backend.SQLite && kind != backend.Etcd {
		return fmt.Errorf("snapshots cover sqlite and etcd; back up %s with its own tools", kind)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if verb == "save" {
		file, err := saveTarget(d, fs.Arg(0))
		if err != nil {
			return err
		}
		if kind == backend.SQLite {
			err = snapshot.SaveSQLite(ctx, d, file)
		} else {
			err = snapshot.SaveEtcd(ctx, d, *endpoint, file)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "snapshot saved to %s\n", file)
		if *keep > 0 && fs.Arg(0) == "" {
			removed, err := snapshot.Prune(d, *keep)
			for _, r := range removed {
				fmt.Fprintf(stdout, "removed %s (more than %d kept)\n", r, *keep)
			}
			return err
		}
		return nil
	}
	file, err := restoreSource(d, fs.Arg(0))
	if err != nil {
		return err
	}
	if *online || *pause != "" {
		if kind != backend.Etcd || !*online {
			return errors.New("--online and --pause restore a running etcd cluster: use them together with --backend etcd")
		}
		targets, err := parsePause(*pause)
		if err != nil {
			return err
		}
		return restoreOnline(ctx, d, *endpoint, file, *prefix, *once, targets, stdout)
	}
	lock, err := lockDataDir(d.DatastoreData())
	if err != nil {
		return err
	}
	defer lock.Close()
	sum, err := snapshot.Digest(file)
	if err != nil {
		return err
	}
	if *once && snapshot.RestoredFrom(d) == sum {
		fmt.Fprintf(stdout, "already restored from %s (%s): nothing to do\n", file, sum)
		return nil
	}
	var backup string
	if kind == backend.SQLite {
		backup, err = snapshot.RestoreSQLite(ctx, d, file)
	} else {
		backup, err = snapshot.RestoreEtcd(d, file, snapshot.EtcdMember{Name: *name, PeerURL: *peerURL})
	}
	if err != nil {
		return err
	}
	// recorded only after the restore: a crash before this line restores
	// again at the next start, when nothing was written in between
	if err := snapshot.MarkRestored(d, sum); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restored from %s", file)
	if backup != "" {
		fmt.Fprintf(stdout, "; the previous state is in %s", backup)
	}
	fmt.Fprintln(stdout, "\nrestart the apiserver once the datastore is back up")
	return nil
}

// restoreOnline restores a running etcd cluster from file (see
// snapshot.RestoreEtcdOnline), stopping targets for the time it takes.
func restoreOnline(ctx context.Context, d layout.Dir, endpoint, file, prefix string, once bool, targets []pauseTarget, stdout io.Writer) error {
	sum, err := snapshot.Digest(file)
	if err != nil {
		return err
	}
	cli, err := snapshot.EtcdClient(d, endpoint)
	if err != nil {
		return err
	}
	defer cli.Close()
	if once {
		done, err := snapshot.EtcdRestoredFrom(ctx, cli)
		if err != nil {
			return fmt.Errorf("reading what the cluster was restored from at %s: %w", endpoint, err)
		}
		if done == sum {
			fmt.Fprintf(stdout, "already restored from %s (%s): nothing to do\n", file, sum)
			return nil
		}
	}
	// (the snapshot is read before anything stops: a bad file stops nothing)
	snap, err := snapshot.ReadEtcdSnapshot(file, prefix)
	if err != nil {
		return err
	}
	var api *hostAPI
	if len(targets) > 0 {
		if api, err = inClusterAPI(serviceAccountDir); err != nil {
			return err
		}
		if err := api.stop(ctx, targets, stdout); err != nil {
			return err
		}
	}
	start := time.Now()
	res, err := snapshot.RestoreEtcdOnline(ctx, cli, snap, prefix, sum)
	if err != nil {
		// the writers stay stopped: they would act on a half-restored
		// state; running the restore again resumes it and starts them
		if len(targets) > 0 {
			return fmt.Errorf("%w; %s stay stopped until a restore completes", err, targetNames(targets))
		}
		return err
	}
	fmt.Fprintf(stdout, "restored %s from %s in %v: %v\n", prefix, file, time.Since(start).Round(time.Millisecond), res)
	if api != nil {
		return api.start(ctx, targets, stdout)
	}
	return nil
}

func targetNames(targets []pauseTarget) string {
	var names []string
	for _, t := range targets {
		names = append(names, t.name)
	}
	return strings.Join(names, ", ")
}

// saveTarget is where save writes: FILE as given when it is a path, a bare
// name inside snapshots/, and a dated name there without one.
func saveTarget(d layout.Dir, arg string) (string, error) {
	if arg == "" {
		arg = "snapshot-" + time.Now().UTC().Format("20060102T150405Z") + ".db"
	}
	if strings.ContainsRune(arg, filepath.Separator) {
		return arg, nil
	}
	if err := os.MkdirAll(d.Snapshots(), 0o700); err != nil {
		return "", err
	}
	return filepath.Join(d.Snapshots(), arg), nil
}

// restoreSource finds a snapshot by path, or by name in snapshots/.
func restoreSource(d layout.Dir, arg string) (string, error) {
	if strings.ContainsRune(arg, filepath.Separator) {
		return arg, nil
	}
	in := filepath.Join(d.Snapshots(), arg)
	if _, err := os.Stat(in); err == nil {
		return in, nil
	}
	if _, err := os.Stat(arg); err == nil {
		return arg, nil
	}
	return "", fmt.Errorf("no snapshot named %q in %s (see 'datastore snapshot list')", arg, d.Snapshots())
}

func listSnapshots(d layout.Dir, stdout io.Writer) error {
	list, err := snapshot.List(d)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tSIZE\tCREATED")
	for _, s := range list {
		fmt.Fprintf(w, "%s\t%d\t%s\n", s.Name, s.Size, s.ModTime.UTC().Format(time.RFC3339))
	}
	return w.Flush()
}
