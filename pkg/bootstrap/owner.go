package bootstrap

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Chown hands every file of a data directory to uid:gid: the roles run as
// their images' unprivileged user, and init (or a box's agent) as root.
func Chown(root string, uid, gid int) error {
	return filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(p, uid, gid); err != nil {
			return fmt.Errorf("handing %s to %d:%d: %w", p, uid, gid, err)
		}
		return nil
	})
}
