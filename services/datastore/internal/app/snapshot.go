package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/kubesplit/kubesplit/pkg/config"
	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/services/datastore/internal/backend"
	"github.com/kubesplit/kubesplit/services/datastore/internal/snapshot"
)

const snapshotSummary = `datastore snapshot save|restore FILE

  save:    copy the state to FILE (sqlite: works while the datastore runs;
           etcd: streamed from the running member at --endpoint)
  restore: replace the state with FILE; the datastore must be stopped, the
           current state is moved into a backup- folder, and the apiserver
           should be restarted afterwards`

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
	if len(args) == 0 || (args[0] != "save" && args[0] != "restore") {
		if len(args) > 0 && (args[0] == "--help" || args[0] == "-h") {
			fmt.Fprintln(stdout, snapshotSummary)
			return config.ErrHelp
		}
		return errors.New("expected 'snapshot save FILE' or 'snapshot restore FILE'")
	}
	verb := args[0]
	fs := config.NewFlagSet("datastore snapshot " + verb)
	dataDir := fs.String("data-dir", "", "data directory written by 'kubesplit init' (required)")
	backendFlag := fs.String("backend", "sqlite", "sqlite or etcd")
	endpoint := fs.String("endpoint", "https://127.0.0.1:2379", "save, etcd: the running member's client URL")
	name := fs.String("etcd-name", "default", "restore, etcd: the member name")
	peerURL := fs.String("etcd-advertise-peer-url", "https://127.0.0.1:2380", "restore, etcd: the member's peer URL")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, config.ErrHelp) {
			config.PrintUsage(stdout, fs, snapshotSummary)
			return err
		}
		return fmt.Errorf("%v; run 'datastore snapshot %s --help'", err, verb)
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("expected one FILE argument, got %d", fs.NArg())
	}
	file := fs.Arg(0)
	kind, err := backend.ParseBackend(*backendFlag)
	if err != nil {
		return err
	}
	if kind != backend.SQLite && kind != backend.Etcd {
		return fmt.Errorf("snapshots cover sqlite and etcd; back up %s with its own tools", kind)
	}
	if err := config.CheckDataDir(*dataDir, true); err != nil {
		return err
	}
	d := layout.Dir(*dataDir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if verb == "save" {
		if kind == backend.SQLite {
			err = snapshot.SaveSQLite(ctx, d, file)
		} else {
			err = snapshot.SaveEtcd(ctx, d, *endpoint, file)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "snapshot saved to %s\n", file)
		return nil
	}
	lock, err := lockDataDir(d.DatastoreData())
	if err != nil {
		return err
	}
	defer lock.Close()
	var backup string
	if kind == backend.SQLite {
		backup, err = snapshot.RestoreSQLite(ctx, d, file)
	} else {
		backup, err = snapshot.RestoreEtcd(d, file, snapshot.EtcdMember{Name: *name, PeerURL: *peerURL})
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restored from %s", file)
	if backup != "" {
		fmt.Fprintf(stdout, "; the previous state is in %s", backup)
	}
	fmt.Fprintln(stdout, "\nrestart the apiserver once the datastore is back up")
	return nil
}
