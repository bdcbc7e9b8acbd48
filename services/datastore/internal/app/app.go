// Package app is the datastore's command line: serve (the default) and
// snapshot save/restore.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/kubesplit/kubesplit/pkg/config"
	"github.com/kubesplit/kubesplit/pkg/health"
	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/lifecycle"
	"github.com/kubesplit/kubesplit/pkg/logging"
	"github.com/kubesplit/kubesplit/pkg/version"
	"github.com/kubesplit/kubesplit/services/datastore/internal/backend"
)

const summary = "kubesplit datastore: the etcd v3 API over mutual TLS, on SQLite (default), PostgreSQL, MySQL or embedded etcd"

// Main runs the datastore command line and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "snapshot" {
		return snapshotMain(args[1:], stdout, stderr)
	}
	err := serve(args, stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, config.ErrHelp):
		return 0
	default:
		fmt.Fprintf(stderr, "datastore: %v\n", err)
		return 1
	}
}

type options struct {
	dataDir, backendFlag, listen, health, advertiseClient string
	compactInterval                                       time.Duration
	etcd                                                  backend.EtcdConfig
	logLevel                                              string
	showVersion                                           bool
}

func flags(o *options) *pflag.FlagSet {
	fs := config.NewFlagSet("datastore")
	fs.StringVar(&o.dataDir, "data-dir", "", "data directory written by 'kubesplit init' (required)")
	fs.StringVar(&o.backendFlag, "backend", "sqlite", "storage: sqlite (a file in the data dir), etcd (embedded), a postgres:// or mysql:// DSN, or env:NAME to read the DSN from environment variable NAME (keeps its password off the command line)")
	fs.StringVar(&o.listen, "listen-address", "0.0.0.0:2379", "host:port of the etcd client API (mutual TLS)")
	fs.StringVar(&o.advertiseClient, "advertise-client-url", "", "etcd backend: client URL other members and clients use (default from --listen-address)")
	fs.StringVar(&o.health, "health-address", "0.0.0.0:2381", "host:port of the plain-HTTP /healthz and /readyz endpoints")
	fs.DurationVar(&o.compactInterval, "compact-interval", 5*time.Minute, "sql backends: how often old revisions are compacted away (keeps the file bounded)")
	fs.StringVar(&o.etcd.Name, "etcd-name", "default", "etcd backend: this member's name")
	fs.StringVar(&o.etcd.PeerAddress, "etcd-peer-address", "0.0.0.0:2380", "etcd backend: host:port for peer traffic (mutual TLS)")
	fs.StringVar(&o.etcd.AdvertisePeerURL, "etcd-advertise-peer-url", "", "etcd backend: peer URL the other members use (default from --etcd-peer-address)")
	fs.StringVar(&o.etcd.InitialCluster, "etcd-initial-cluster", "", "etcd backend: NAME=PEER_URL,... of all members (default: this member alone)")
	fs.StringVar(&o.etcd.Join, "etcd-join", "", "etcd backend: client URL of a running member; this member adds itself to that cluster and joins it")
	fs.StringVar(&o.etcd.InitialClusterState, "etcd-initial-cluster-state", "new", "etcd backend: 'new' to form a cluster, 'existing' to join one (after 'member add')")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	return fs
}

func serve(args []string, stdout, stderr io.Writer) error {
	var o options
	fs := flags(&o)
	if err := config.Parse(fs, args); err != nil {
		if errors.Is(err, config.ErrHelp) {
			config.PrintUsage(stdout, fs, summary)
		}
		return err
	}
	if o.showVersion {
		fmt.Fprintln(stdout, version.Info("datastore"))
		return nil
	}
	var err error
	level, ok := logging.ParseLevel(o.logLevel)
	if !ok {
		return fmt.Errorf("--log-level %q is not one of debug, info, warn, error", o.logLevel)
	}
	if o.backendFlag, err = backendFromEnv(o.backendFlag, os.Getenv); err != nil {
		return err
	}
	kind, err := backend.ParseBackend(o.backendFlag)
	if err != nil {
		return err
	}
	if o.etcd.InitialClusterState != "new" && o.etcd.InitialClusterState != "existing" {
		return fmt.Errorf("--etcd-initial-cluster-state %q must be 'new' or 'existing'", o.etcd.InitialClusterState)
	}
	if err := config.CheckDataDir(o.dataDir, true); err != nil {
		return err
	}
	d := layout.Dir(o.dataDir)
	if err := config.RequireFiles(d.DatastoreCA().Cert, d.DatastoreServer().Cert, d.DatastoreServer().Key); err != nil {
		return err
	}
	if err := config.CheckListen(o.listen, "--listen-address"); err != nil {
		return err
	}
	if err := config.CheckListen(o.health, "--health-address"); err != nil {
		return err
	}
	if kind == backend.Etcd {
		if err := config.CheckListen(o.etcd.PeerAddress, "--etcd-peer-address"); err != nil {
			return err
		}
	}
	lock, err := lockDataDir(d.DatastoreData())
	if err != nil {
		return err
	}
	defer lock.Close()

	log := logging.New("datastore", stderr, level)
	logging.BridgeLogrus(log, level, "kine")
	ctx, stop := lifecycle.SignalContext()
	defer stop()

	attrs := []any{"version", version.Version, "backend", kind, "listen", o.listen}
	if kind == backend.Postgres || kind == backend.MySQL {
		attrs = append(attrs, "endpoint", config.RedactDSN(o.backendFlag))
	}
	log.Info("starting", attrs...)
	if kind == backend.SQLite && !backend.SQLiteDriverHasFullCheckpoints {
		log.Warn("this datastore was built without cgo: SQLite's WAL file may grow under load; build it with hack/build.sh")
	}
	srv, err := backend.Start(ctx, backend.Config{
		DataDir: d, Backend: o.backendFlag, Kind: kind, ListenAddress: o.listen,
		AdvertiseClientURL: o.advertiseClient, CompactInterval: o.compactInterval,
		Etcd: o.etcd, EtcdLogLevel: etcdLevel(level),
	})
	if err != nil {
		return err
	}
	defer srv.Close()

	client, err := backend.LocalClient(d, o.listen)
	if err != nil {
		return fmt.Errorf("health client: %w", err)
	}
	defer client.Close()
	hl, err := net.Listen("tcp", o.health)
	if err != nil {
		return fmt.Errorf("health endpoint: %w", err)
	}
	hs := &health.Server{
		Listener: hl,
		Live: map[string]health.Check{"server": func(context.Context) error {
			select {
			case <-srv.Done():
				return fmt.Errorf("stopped: %v", srv.Err())
			default:
				return nil
			}
		}},
		Ready: map[string]health.Check{"read": func(ctx context.Context) error {
			select {
			case <-srv.Ready():
			default:
				return errors.New("not ready yet")
			}
			_, err := client.Get(ctx, "/kubesplit/health")
			return err
		}},
	}
	start := time.Now()
	go func() {
		select {
		case <-srv.Ready():
			log.Info("ready", "after", time.Since(start).Round(time.Millisecond))
		case <-ctx.Done():
		}
	}()
	parts := []lifecycle.Runnable{hs}
	if kind != backend.Etcd {
		parts = append(parts, &backend.Compactor{Client: client, Interval: o.compactInterval, Log: log})
	}
	err = lifecycle.RunAll(ctx, append(parts, lifecycle.Func(func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return nil
		case <-srv.Done():
			if srv.Err() != nil {
				return fmt.Errorf("backend stopped: %w", srv.Err())
			}
			return nil
		}
	}))...)
	log.Info("stopping")
	return err
}

// etcdLevel keeps etcd one step quieter than kubesplit: its info level logs
// every raft step.
func etcdLevel(l slog.Level) string {
	switch {
	case l <= slog.LevelDebug:
		return "info"
	case l <= slog.LevelWarn:
		return "warn"
	default:
		return "error"
	}
}

// backendFromEnv resolves --backend env:NAME to the value of NAME, so that a
// DSN with a password can come from a Secret through the environment
// instead of the process's command line (which every user of the host can
// read). Anything else is returned as it is.
func backendFromEnv(flag string, getenv func(string) string) (string, error) {
	name, ok := strings.CutPrefix(flag, "env:")
	if !ok {
		return flag, nil
	}
	if name == "" {
		return "", errors.New("--backend env: names no variable; use env:NAME, e.g. env:KUBESPLIT_DATASTORE_DSN")
	}
	v := getenv(name)
	if v == "" {
		return "", fmt.Errorf("--backend env:%s: the environment variable %s is empty or unset; set it to the DSN (e.g. from a Secret)", name, name)
	}
	return v, nil
}
