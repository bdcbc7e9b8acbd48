package snapshot

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/kubesplit/kubesplit/pkg/layout"
	"github.com/kubesplit/kubesplit/pkg/pki"
)

// restoredFile records, beside the state it describes (on the datastore's
// own volume), the digest of the snapshot that state was restored from.
func restoredFile(d layout.Dir) string { return filepath.Join(d.DatastoreData(), "restored-from") }

// Digest is a snapshot file's content digest, "sha256:HEX".
func Digest(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("reading %s: %w", file, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// RestoredFrom is the digest of the snapshot the state was last restored
// from, or "" when it never was (or the record is unreadable: a restore then
// runs again, which is what an operator asking for it expects).
func RestoredFrom(d layout.Dir) string {
	b, err := os.ReadFile(restoredFile(d))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// MarkRestored records digest as the snapshot the state now comes from,
// durably (pki.WriteFile: written aside, synced, renamed, directory synced).
func MarkRestored(d layout.Dir, digest string) error {
	return pki.WriteFile(restoredFile(d), []byte(digest+"\n"), 0o600)
}
