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
	"sort"
	"strings"
	"time"

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
	// The copy is bumped before it takes the live file's place, so a failure
	// leaves the current state where it was.
	staged := dst + ".restore"
	os.Remove(staged)
	if err := copyFile(in, staged); err != nil {
		return "", err
	}
	defer os.Remove(staged)
	// past the revisions of the state being replaced too: after restoring
	// the same snapshot twice, clients have seen revisions past the bump
	live, err := sqliteRevision(ctx, dst)
	if err != nil {
		return "", fmt.Errorf("reading the current state's revision: %w", err)
	}
	if err := bumpSQLite(ctx, staged, live, revisionBump); err != nil {
		return "", fmt.Errorf("preparing %s: %w", in, err)
	}
	backup, err = moveAside(dst, dst+"-wal", dst+"-shm")
	if err != nil {
		return "", err
	}
	if err := os.Rename(staged, dst); err != nil {
		return backup, err
	}
	return backup, nil
}

// revisionBump is how far a restore moves the revision past the snapshot's:
// further than any cluster writes between a snapshot and its restore.
const revisionBump = 1_000_000

// bumpSQLite does to a kine database what etcd's restore does with
// RevisionBump and MarkCompacted: the revision moves bump past the
// snapshot's last one and past live (the replaced state's), and everything
// before it is marked compacted. Without
// it, a client that watched the cluster after the snapshot was taken (a
// kubelet, a controller) resumes its watch at a revision the restored store
// reaches only later, and misses every change until then; with it, the store
// answers "compacted" and the client lists again.
func bumpSQLite(ctx context.Context, path string, live, bump int64) error {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(30000)")
	if err != nil {
		return err
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // after Commit: nothing to undo
	var last int64
	if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(id), 0) FROM kine").Scan(&last); err != nil {
		return err
	}
	rev := max(last, live) + bump
	// kine keeps the compacted revision in prev_revision of its one
	// compact_rev_key row; the row's own id becomes the new current revision.
	if _, err := tx.ExecContext(ctx, "DELETE FROM kine WHERE name = 'compact_rev_key'"); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO kine(id, name, created, deleted, create_revision, prev_revision, lease, value, old_value)
		VALUES (?, 'compact_rev_key', 1, 0, 0, ?, 0, '', '')`, rev, rev); err != nil {
		return err
	}
	return tx.Commit()
}

// sqliteRevision is the current revision of a kine database: its highest
// row id (0 when there is no file).
func sqliteRevision(ctx context.Context, path string) (int64, error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(30000)")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var rev int64
	err = db.QueryRowContext(ctx, "SELECT COALESCE(MAX(id), 0) FROM kine").Scan(&rev)
	return rev, err
}

// Snapshot is one saved file of a data directory's snapshots/.
type Snapshot struct {
	Name    string
	Size    int64
	ModTime time.Time
}

// List returns the snapshots in a data directory's snapshots/, oldest first.
func List(d layout.Dir) ([]Snapshot, error) {
	entries, err := os.ReadDir(d.Snapshots())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Snapshot
	for _, e := range entries {
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		out = append(out, Snapshot{Name: e.Name(), Size: info.Size(), ModTime: info.ModTime()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ModTime.Before(out[j].ModTime) })
	return out, nil
}

// Prune deletes all but the newest keep dated snapshots ("snapshot-*", the
// names save gives) in snapshots/; snapshots saved under a name of one's own
// are left alone. It returns the names it removed.
func Prune(d layout.Dir, keep int) ([]string, error) {
	list, err := List(d)
	if err != nil {
		return nil, err
	}
	var dated []Snapshot
	for _, s := range list {
		if strings.HasPrefix(s.Name, "snapshot-") {
			dated = append(dated, s)
		}
	}
	var removed []string
	for len(dated) > keep {
		if err := os.Remove(filepath.Join(d.Snapshots(), dated[0].Name)); err != nil {
			return removed, err
		}
		removed = append(removed, dated[0].Name)
		dated = dated[1:]
	}
	return removed, nil
}

// SaveEtcd streams a snapshot from a running etcd member.
func SaveEtcd(ctx context.Context, d layout.Dir, endpoint, out string) error {
	if _, err := os.Stat(out); err == nil {
		return fmt.Errorf("%s already exists; choose a new file name", out)
	}
	tlsCfg, err := clientTLS(d)
	if err != nil {
		return err
	}
	_, err = clientsnapshot.SaveWithVersion(ctx, zap.NewNop(), etcdClientConfig(endpoint, tlsCfg), out)
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
	// past the revisions of the state being replaced too (see RestoreSQLite)
	tool := snapshot.NewV3(zap.NewNop())
	bump := int64(revisionBump)
	snap, err := tool.Status(in)
	if err != nil {
		return "", fmt.Errorf("%s is not an etcd snapshot: %w", in, err)
	}
	if live, err := tool.Status(filepath.Join(d.EtcdData(), "member", "snap", "db")); err == nil && live.Revision > snap.Revision {
		bump += live.Revision - snap.Revision
	}
	backup, err = moveAside(d.EtcdData())
	if err != nil {
		return "", err
	}
	err = tool.Restore(snapshot.RestoreConfig{
		SnapshotPath:        in,
		Name:                m.Name,
		OutputDataDir:       d.EtcdData(),
		PeerURLs:            []string{m.PeerURL},
		InitialCluster:      m.Name + "=" + m.PeerURL,
		InitialClusterToken: "kubesplit",
		RevisionBump:        uint64(bump),
		MarkCompacted:       true,
	})
	if err != nil {
		return backup, fmt.Errorf("restoring %s: %w", in, err)
	}
	return backup, nil
}

// moveAside moves the existing paths into a new backup folder beside the
// first (a new one each time: two restores within a second keep both).
func moveAside(paths ...string) (string, error) {
	backup := ""
	for _, p := range paths {
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if backup == "" {
			var err error
			if backup, err = newBackupDir(filepath.Dir(paths[0])); err != nil {
				return "", err
			}
		}
		if err := os.Rename(p, filepath.Join(backup, filepath.Base(p))); err != nil {
			return "", fmt.Errorf("moving %s aside: %w", p, err)
		}
	}
	return backup, nil
}

// newBackupDir makes backup-TIME in dir, or backup-TIME-N when that exists.
func newBackupDir(dir string) (string, error) {
	base := filepath.Join(dir, "backup-"+time.Now().UTC().Format("20060102T150405Z"))
	for i := 1; ; i++ {
		name := base
		if i > 1 {
			name = fmt.Sprintf("%s-%d", base, i)
		}
		err := os.Mkdir(name, 0o700)
		if err == nil {
			return name, nil
		}
		if !errors.Is(err, os.ErrExist) || i > 1000 {
			return "", err
		}
	}
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
