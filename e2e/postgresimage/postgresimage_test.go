// Package postgresimage checks the kubesplit/postgres image for real: it
// starts it with docker run on an internal network of its own, with a random
// password, and checks what the datastore's postgres backend relies on: the
// server answers over TCP with the password and refuses a wrong one, the
// password never shows in the logs, data outlives a restart, the restart is a
// clean (fast) shutdown even with a session open, and the server does not
// run as root.
//
// hack/test.sh builds the image first (hack/images.sh, in its nodes phase);
// the tag is $KUBESPLIT_TAG or the project version. A missing image fails the
// test: only -short skips it.
package postgresimage

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kubesplit/kubesplit/e2e/dockercluster"
)

// tag is the image tag hack/images.sh builds (as for every other image test).
func tag(*testing.T) string { return dockercluster.DefaultTag() }

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// docker runs the docker CLI with extra environment variables (which
// `-e NAME` passes on without a value on any command line) and returns its
// trimmed combined output.
func docker(ctx context.Context, env []string, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	s := strings.TrimSpace(out.String())
	if err != nil {
		return s, fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, s)
	}
	return s, nil
}

func TestPostgresImage(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the postgres image in Docker")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	must := func(env []string, args ...string) string {
		t.Helper()
		out, err := docker(ctx, env, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	image := "kubesplit/postgres:" + tag(t)
	if _, err := docker(ctx, nil, "image", "inspect", image); err != nil {
		t.Fatalf("image %s is missing: build it with IMAGES=postgres hack/images.sh (%v)", image, err)
	}
	id := randomHex(t, 6)
	label := "kubesplit.test=" + id
	network, name := "ks-pg-"+id, "ks-pg-"+id
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if ids, _ := docker(ctx, nil, "ps", "-aq", "--filter", "label="+label); ids != "" {
			if out, err := docker(ctx, nil, append([]string{"rm", "-f", "-v"}, strings.Fields(ids)...)...); err != nil {
				t.Logf("cleanup: %v: %s", err, out)
			}
		}
		if ids, _ := docker(ctx, nil, "network", "ls", "-q", "--filter", "label="+label); ids != "" {
			if out, err := docker(ctx, nil, append([]string{"network", "rm"}, strings.Fields(ids)...)...); err != nil {
				t.Logf("cleanup: %v: %s", err, out)
			}
		}
	})
	must(nil, "network", "create", "--internal", "--label", label, network)

	// quotes, a dollar and a backslash, so that no layer may interpret it;
	// the hex part is what the log check looks for too
	secret := randomHex(t, 16)
	password := secret + `'"$x\ ;`
	pwEnv := []string{"POSTGRES_PASSWORD=" + password, "PGPASSWORD=" + password}

	// no password: it refuses to start and says why
	refused, err := docker(ctx, nil, "run", "--rm", "--label", label, "--network", network, image)
	if err == nil || !strings.Contains(refused, "POSTGRES_PASSWORD is not set") {
		t.Fatalf("started without POSTGRES_PASSWORD (err %v): %s", err, refused)
	}

	must(pwEnv, "run", "-d", "--name", name, "--label", label, "--network", network, "-e", "POSTGRES_PASSWORD", image)
	logs := func() string {
		t.Helper()
		return must(nil, "logs", name)
	}
	ready := func() {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			out, err := docker(ctx, nil, "exec", name, "pg_isready", "-h", "127.0.0.1", "-p", "5432")
			if err == nil {
				return
			}
			if state, _ := docker(ctx, nil, "inspect", "-f", "{{.State.Status}}", name); state != "running" || time.Now().After(deadline) {
				t.Fatalf("not ready (container %s): %s\nlogs:\n%s", state, out, logs())
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	psql := func(env []string, host, sql string) (string, error) {
		return docker(ctx, env, "exec", "-e", "PGPASSWORD", name, "psql", "-h", host, "-U", "kubesplit", "-v", "ON_ERROR_STOP=1", "-Atc", sql)
	}
	start := time.Now()
	ready()
	t.Logf("first start: ready after %s", time.Since(start).Round(100*time.Millisecond))

	if got, err := psql(pwEnv, "127.0.0.1", "select 1"); err != nil || got != "1" {
		t.Fatalf("psql over TCP with the password: %q, %v", got, err)
	}
	// listening on every address, and a password is all a remote client needs:
	// the container's address on the test network
	ip := must(nil, "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name)
	if got, err := psql(pwEnv, ip, "select current_user || ' ' || current_database()"); err != nil || got != "kubesplit kubesplit" {
		t.Fatalf("psql to %s: %q, %v", ip, got, err)
	}
	wrong := []string{"PGPASSWORD=" + randomHex(t, 16)}
	if out, err := psql(wrong, "127.0.0.1", "select 1"); err == nil || !strings.Contains(out, "password authentication failed") {
		t.Fatalf("a wrong password was not refused (err %v): %s", err, out)
	}
	// no password at all, through the socket: refused too
	if out, err := docker(ctx, nil, "exec", name, "psql", "-w", "-U", "kubesplit", "-Atc", "select 1"); err == nil {
		t.Fatalf("psql through the socket without a password was let in: %s", out)
	}
	if got, err := psql(pwEnv, "127.0.0.1", "show max_connections; show fsync; show listen_addresses; show port"); err != nil ||
		got != "200\non\n*\n5432" {
		t.Errorf("settings: %q, %v", got, err)
	}
	if _, err := psql(pwEnv, "127.0.0.1", "create table kept (v text); insert into kept values ('before restart')"); err != nil {
		t.Fatal(err)
	}

	// not root: process 1, the server itself, as the host sees it, and every
	// process in the container
	pid := must(nil, "inspect", "-f", "{{.State.Pid}}", name)
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		t.Fatal(err)
	}
	var uid, comm string
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "Uid:"); ok {
			uid = strings.Join(strings.Fields(v), " ")
		}
		if v, ok := strings.CutPrefix(l, "Name:"); ok {
			comm = strings.TrimSpace(v)
		}
	}
	if comm != "postgres" || uid == "" || strings.Fields(uid)[0] == "0" || strings.Contains(" "+uid+" ", " 0 ") {
		t.Errorf("process 1 is %q with uids %q, want postgres, not root", comm, uid)
	}
	uids := must(nil, "exec", name, "sh", "-c", `for f in /proc/[0-9]*/status; do awk '/^Uid:/{print $2, $3}' "$f"; done`)
	for _, l := range strings.Split(uids, "\n") {
		if strings.HasPrefix(l, "0 ") || strings.HasSuffix(l, " 0") {
			t.Errorf("a process in the container runs as root: uid %q (all: %q)", l, uids)
		}
	}
	t.Logf("server process %s (host pid %s) runs as uid %s", comm, pid, uid)

	// restart with a session open: the stop signal is a fast shutdown (a
	// smart one would wait for the session, until docker kills it)
	must(pwEnv, "exec", "-d", "-e", "PGPASSWORD", name, "psql", "-h", "127.0.0.1", "-U", "kubesplit", "-c", "select pg_sleep(600)")
	time.Sleep(time.Second)
	start = time.Now()
	must(nil, "restart", "-t", "30", name)
	stopped := time.Since(start)
	ready()
	t.Logf("restart with an open session took %s; ready after %s", stopped.Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond))
	if stopped > 20*time.Second {
		t.Errorf("docker restart took %s: the server did not shut down fast", stopped)
	}
	if got, err := psql(pwEnv, "127.0.0.1", "select v from kept"); err != nil || got != "before restart" {
		t.Fatalf("after the restart: %q, %v", got, err)
	}
	l := logs()
	if n := strings.Count(l, "first start"); n != 1 {
		t.Errorf("initialised %d times:\n%s", n, l)
	}
	if !strings.Contains(l, "database system is shut down") || strings.Contains(l, "automatic recovery") ||
		strings.Contains(l, "not properly shut down") {
		t.Errorf("the restart was not a clean shutdown:\n%s", l)
	}

	// the password appears in no log: this container's, or the refused one's
	// (gone with --rm; it printed out above)
	for _, s := range []string{password, secret} {
		if strings.Contains(l, s) || strings.Contains(refused, s) {
			t.Errorf("docker logs contain the password:\n%s", l)
		}
	}
	if testing.Verbose() {
		t.Logf("docker logs:\n%s", l)
	}
}
