// Package config holds what every role does with its command line: parse it
// into one-line errors that name the problem and the fix, and check the
// things that commonly go wrong (data directory, files, ports, DSNs) before
// any component starts and buries the cause in a stack of log lines.
package config

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
)

// Usage is returned by Parse when --help was asked for; the caller prints
// the usage and exits 0.
var ErrHelp = pflag.ErrHelp

// NewFlagSet returns a flag set that reports errors instead of exiting.
func NewFlagSet(name string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	return fs
}

// Parse parses args. An error names the bad flag and where to find the right ones.
func Parse(fs *pflag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%v; run '%s --help' to list the flags", err, fs.Name())
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q; run '%s --help' to list the flags", fs.Arg(0), fs.Name())
	}
	return nil
}

// PrintUsage writes the flag list.
func PrintUsage(w io.Writer, fs *pflag.FlagSet, summary string) {
	fmt.Fprintf(w, "%s\n\nUsage: %s [flags]\n\nFlags:\n%s", summary, fs.Name(), fs.FlagUsages())
}

// CheckDataDir makes sure dir exists and is readable (and writable when write is set).
func CheckDataDir(dir string, write bool) error {
	if dir == "" {
		return errors.New("--data-dir is empty; pass the directory that 'kubesplit init' wrote")
	}
	st, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("data directory %s does not exist; run 'kubesplit init --data-dir %s' first", dir, dir)
		}
		return fmt.Errorf("data directory %s is unreadable: %v; fix its permissions or pass another --data-dir", dir, rootCause(err))
	}
	if !st.IsDir() {
		return fmt.Errorf("data directory %s is not a directory; pass a directory to --data-dir", dir)
	}
	f, err := os.Open(dir)
	if err == nil {
		_, err = f.Readdirnames(1)
		f.Close()
		if errors.Is(err, io.EOF) {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("data directory %s is unreadable: %v; fix its permissions or pass another --data-dir", dir, rootCause(err))
	}
	if write {
		probe, err := os.CreateTemp(dir, ".write-probe-*")
		if err != nil {
			return fmt.Errorf("data directory %s is not writable: %v; fix its permissions or pass another --data-dir", dir, rootCause(err))
		}
		probe.Close()
		os.Remove(probe.Name())
	}
	return nil
}

// RequireFiles checks that every file init should have written is readable.
func RequireFiles(paths ...string) error {
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("%s is missing; run 'kubesplit init' on this data directory", p)
			}
			return fmt.Errorf("%s is unreadable: %v; fix its permissions", p, rootCause(err))
		}
		f.Close()
	}
	return nil
}

// CheckListen makes sure addr can be bound, so "port in use" is one clear line.
func CheckListen(addr, flagName string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("address %s is already in use; stop what listens there or choose another with %s", addr, flagName)
		}
		return fmt.Errorf("cannot listen on %s: %v; check %s", addr, rootCause(err), flagName)
	}
	return l.Close()
}

// RedactDSN returns the DSN with any password replaced, for logs and errors.
func RedactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		// Not a URL: show only the scheme-like prefix, never the rest.
		if i := strings.Index(dsn, "://"); i > 0 {
			return dsn[:i] + "://<redacted>"
		}
		return "<redacted>"
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	q := u.Query()
	for k := range q {
		if strings.Contains(strings.ToLower(k), "password") {
			q.Set(k, "xxxxx")
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func rootCause(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}

// SplitPassthrough splits args at the first "--": what comes before is for the
// kubesplit wrapper, what comes after goes to the upstream component as is.
func SplitPassthrough(args []string) (ours, upstream []string) {
	for i, a := range args {
		if a == "--" {
			return args[:i], args[i+1:]
		}
	}
	return args, nil
}
