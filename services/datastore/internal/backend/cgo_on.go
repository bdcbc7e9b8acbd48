//go:build cgo

package backend

// SQLiteDriverHasFullCheckpoints: built with cgo, kine uses mattn/go-sqlite3,
// whose FULL WAL checkpoints keep the WAL bounded under constant readers.
const SQLiteDriverHasFullCheckpoints = true
