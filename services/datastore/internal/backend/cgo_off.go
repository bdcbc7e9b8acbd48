//go:build !cgo

package backend

// SQLiteDriverHasFullCheckpoints: without cgo, kine falls back to the pure-Go
// modernc SQLite, which only runs PASSIVE checkpoints: the WAL file can grow
// while the apiserver keeps reading. hack/build.sh always builds with cgo.
const SQLiteDriverHasFullCheckpoints = false
