// Package snapshot saves and restores the datastore's state: a consistent
// copy of the SQLite file (VACUUM INTO, safe while the datastore runs) or an
// etcd snapshot taken through the API.
package snapshot

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	clientsnapshot "go.etcd.io/etcd/client/v3/snapshot"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
	_ "modernc.org/sqlite" // database/sql driver "sqlite"

	"github.com/kubesplit/kubesplit/pkg/layout"
)

// SaveSQLite writes a consistent copy of the live SQLite file to out.
func SaveSQLite(ctx context.Context, d layout.Dir, out string) error {
	src := d.SQLiteFile()
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("no SQLite datastore at %s: %w", src, err)
	}
	if _, err := os.Stat(out); err == nil {
		return fmt.Errorf("%s already exists; choose a new file name", out)
	}
	db, err := sql.Open("sqlite", "file:"+src+"?_pragma=busy_timeout(30000)")
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "VACUUM INTO ?", out); err != nil {
		return fmt.Errorf("copying %s: %w", src, err)
	}
	return checkSQLite(ctx, out)
}

// checkSQLite makes sure a file is a kine database.
func checkSQLite(ctx context.Context, path string) error {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return err
	}
	defer db.Close()
	var n int64
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM kine").Scan(&n); err != nil {
		return fmt.Errorf("%s is not a kubesplit SQLite snapshot: %w", path, err)
	}
	return nil
}

// RestoreSQLite replaces the SQLite file with a snapshot. The current file is
// moved aside into a backup folder, never deleted.
func RestoreSQLite(ctx context.Context, d layout.Dir, in string) (backup string, err error) {
	if err := checkSQLite(ctx, in); err != nil {
		return "", err
	}
	dst := d.SQLiteFile()
	backup, err = moveAside(dst, dst+"-wal", dst+"-shm")
	if err != nil {
		return "", err
	}
	if err := copyFile(in, dst); err != nil {
		return backup, err
	}
	return backup, nil
}

// SaveEtcd streams a snapshot from a running etcd member.
func SaveEtcd(ctx context.Context, d layout.Dir, endpoint, out string) error {
	if _, err := os.Stat(out); err == nil {
		return fmt.Errorf("%s already exists; choose a new file name", out)
	}
	info := transport.TLSInfo{CertFile: d.DatastoreClient().Cert, KeyFile: d.DatastoreClient().Key, TrustedCAFile: d.DatastoreCA().Cert}
	tlsCfg, err := info.ClientConfig()
	if err != nil {
		return err
	}
	_, err = clientsnapshot.SaveWithVersion(ctx, zap.NewNop(), clientv3.Config{
		Endpoints: []string{endpoint}, TLS: tlsCfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
	}, out)
	return err
}

// EtcdMember names the member a restored etcd data dir belongs to.
type EtcdMember struct {
	Name, PeerURL string
}

// RestoreEtcd rebuilds the etcd data directory from a snapshot as a
// one-member cluster. Revisions are bumped and marked compacted so clients
// with a watch cache never see time go backwards.
func RestoreEtcd(d layout.Dir, in string, m EtcdMember) (backup string, err error) {
	backup, err = moveAside(d.EtcdData())
	if err != nil {
		return "", err
	}
	err = snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath:        in,
		Name:                m.Name,
		OutputDataDir:       d.EtcdData(),
		PeerURLs:            []string{m.PeerURL},
		InitialCluster:      m.Name + "=" + m.PeerURL,
		InitialClusterToken: "kubesplit",
		RevisionBump:        1_000_000,
		MarkCompacted:       true,
	})
	if err != nil {
		return backup, fmt.Errorf("restoring %s: %w", in, err)
	}
	return backup, nil
}

// moveAside moves the existing paths into a new backup folder beside the first.
func moveAside(paths ...string) (string, error) {
	backup := filepath.Join(filepath.Dir(paths[0]), "backup-"+time.Now().UTC().Format("20060102T150405Z"))
	moved := false
	for _, p := range paths {
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := os.MkdirAll(backup, 0o700); err != nil {
			return "", err
		}
		if err := os.Rename(p, filepath.Join(backup, filepath.Base(p))); err != nil {
			return "", fmt.Errorf("moving %s aside: %w", p, err)
		}
		moved = true
	}
	if !moved {
		return "", nil
	}
	return backup, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	out, err := os.OpenFile(dst+".tmp", os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(dst + ".tmp")
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(dst+".tmp", dst)
}
