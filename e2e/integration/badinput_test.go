package integration

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kubesplit/kubesplit/e2e/hostcluster"
	"github.com/kubesplit/kubesplit/pkg/bootstrap"
	"github.com/kubesplit/kubesplit/pkg/layout"
)

const secretPassword = "Sup3r-S3cret-pw"

// TestBadInput: each mistake gives one line that names the problem, a
// nonzero exit, and never echoes the DSN's password.
func TestBadInput(t *testing.T) {
	needLong(t)
	bin, err := hostcluster.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	good := t.TempDir()
	if _, err := bootstrap.Run(bootstrap.Options{DataDir: layout.Dir(good)}); err != nil {
		t.Fatal(err)
	}
	locked := filepath.Join(t.TempDir(), "locked")
	if err := os.Mkdir(locked, 0o700); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyAddr := busy.Addr().String()
	_, busyPort, _ := net.SplitHostPort(busyAddr)

	cases := []struct {
		name   string
		binary string
		args   []string
		// asNobody runs the binary as an unprivileged user, so a 0700 root
		// directory is really unreadable (root would bypass the permission).
		asNobody bool
		want     string
	}{
		{"unknown flag", "datastore", []string{"--data-dir", good, "--listen-adress", "x"}, false, "unknown flag: --listen-adress"},
		{"missing data dir", "datastore", []string{"--data-dir", ""}, false, "--data-dir is empty"},
		{"data dir does not exist", "apiserver", []string{"--data-dir", "/nonexistent/kubesplit"}, false, "does not exist; run 'kubesplit init"},
		{"unreadable data dir", "apiserver", []string{"--data-dir", locked}, true, "is unreadable: permission denied"},
		{"data dir not initialised", "scheduler", []string{"--data-dir", t.TempDir()}, false, "is missing; run 'kubesplit init'"},
		{"wrong flag value", "apiserver", []string{"--data-dir", good, "--secure-port", "http"}, false, "invalid argument \"http\" for \"--secure-port\""},
		{"malformed DSN", "datastore", []string{"--data-dir", good, "--backend", "postgres://admin:" + secretPassword + "@db:notaport/k"}, false, "invalid port"},
		{"unknown DSN scheme", "datastore", []string{"--data-dir", good, "--backend", "mongodb://admin:" + secretPassword + "@db/k"}, false, "unsupported scheme \"mongodb\""},
		{"datastore port in use", "datastore", []string{"--data-dir", good, "--listen-address", busyAddr, "--health-address", "127.0.0.1:0"}, false, "address " + busyAddr + " is already in use"},
		{"apiserver port in use", "apiserver", []string{"--data-dir", good, "--bind-address", "127.0.0.1", "--secure-port", busyPort}, false, "is already in use"},
		{"controllers bad CIDR", "controllers", []string{"--data-dir", good, "--cluster-cidr", "10.42.0.0"}, false, "--cluster-cidr \"10.42.0.0\" is not a CIDR"},
		{"init into a file", "kubesplit", []string{"init", "--data-dir", filepath.Join(good, "admin.kubeconfig")}, false, "cannot create data directory"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, filepath.Join(bin, tc.binary), tc.args...)
			if tc.asNobody {
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			}
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			out := strings.TrimRight(stderr.String(), "\n")
			if err == nil {
				t.Fatalf("exit 0, want failure; output: %s", out)
			}
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() <= 0 {
				t.Fatalf("want a nonzero exit code, got %v", err)
			}
			if strings.Contains(out, "\n") {
				t.Errorf("want one line, got:\n%s", out)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("output %q does not contain %q", out, tc.want)
			}
			if strings.Contains(out+stdout.String(), secretPassword) {
				t.Errorf("the DSN password leaked: %s", out)
			}
		})
	}
}

// TestDSNPasswordNeverLogged points the datastore at a PostgreSQL that is not
// there: it fails, and the password appears nowhere in its output.
func TestDSNPasswordNeverLogged(t *testing.T) {
	needLong(t)
	bin, err := hostcluster.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := bootstrap.Run(bootstrap.Options{DataDir: layout.Dir(dir)}); err != nil {
		t.Fatal(err)
	}
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := closed.Addr().String()
	closed.Close() // nothing listens there now
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "datastore"), "--data-dir", dir,
		"--backend", "postgres://kube:"+secretPassword+"@"+addr+"/kubesplit?sslmode=disable",
		"--listen-address", "127.0.0.1:0", "--health-address", "127.0.0.1:0", "--log-level", "debug")
	out, _ := cmd.CombinedOutput()
	if len(out) == 0 {
		t.Fatal("no output at all")
	}
	if bytes.Contains(out, []byte(secretPassword)) {
		t.Fatalf("password in output:\n%s", out)
	}
}
