package catalog

import (
	"bytes"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func TestSelect(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		names []string
		want  []string
		err   bool
	}{
		{names: nil, want: Names()},
		{names: []string{"apiserver", "datastore"}, want: []string{"datastore", "apiserver"}},
		// the node image preloads pause, coredns, metrics-server, the local-storage addon's, servicelb's and traefik's
		// images, which are built first
		{names: []string{"node"}, want: []string{"coredns", "metrics-server", "local-path-provisioner", "local-path-helper", "servicelb", "traefik", "pause", "node"}},
		{names: []string{"postgres"}, want: []string{"postgres"}},
		{names: []string{"etcd"}, err: true},
	} {
		imgs, err := Select(c.names)
		if (err != nil) != c.err {
			t.Errorf("Select(%v): error %v", c.names, err)
			continue
		}
		var got []string
		for _, img := range imgs {
			got = append(got, img.Name)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("Select(%v) = %v, want %v", c.names, got, c.want)
		}
	}
}

func TestEveryImageIsComplete(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, img := range All() {
		// (a Busybox image is its base)
		if seen[img.Name] || (len(img.Binaries)+len(img.Files) == 0 && img.Base != Busybox) || len(img.Entrypoint) == 0 {
			t.Errorf("image %s: duplicate, no binaries or files, or no entrypoint", img.Name)
		}
		for _, p := range img.Preload {
			if !seen[p] {
				t.Errorf("image %s preloads %s, which is not built before it", img.Name, p)
			}
		}
		dst := map[string]bool{}
		for _, b := range append(append([]Binary{}, img.Tools...), img.Binaries...) {
			if dst[b.Dst] {
				t.Errorf("image %s has %s twice", img.Name, b.Dst)
			}
			dst[b.Dst] = true
		}
		for _, f := range img.Files {
			if dst[f.Dst] || len(f.Data) == 0 {
				t.Errorf("image %s has %s twice, or empty", img.Name, f.Dst)
			}
			dst[f.Dst] = true
		}
		if img.Base == Static && img.User != "65532:65532" {
			t.Errorf("control-plane image %s runs as %q", img.Name, img.User)
		}
		seen[img.Name] = true
	}
}

func TestPostgresImage(t *testing.T) {
	t.Parallel()
	imgs, err := Select([]string{"postgres"})
	if err != nil {
		t.Fatal(err)
	}
	img := imgs[0]
	if img.Base != Postgres || !img.HostOnly || img.User != "999:999" || len(img.Binaries) != 0 || len(img.Tools) != 0 {
		t.Errorf("postgres image: %+v", img)
	}
	if !slices.Equal(img.Ports, []string{"5432/tcp"}) || !slices.Equal(img.Volumes, []string{"/var/lib/postgresql/data"}) ||
		img.StopSignal != "SIGINT" {
		t.Errorf("postgres image ports %v, volumes %v, stop signal %q", img.Ports, img.Volumes, img.StopSignal)
	}
	if len(img.Files) != 1 || img.Files[0].Dst != img.Entrypoint[0] || img.Files[0].Mode != 0o755 ||
		!bytes.HasPrefix(img.Files[0].Data, []byte("#!/bin/sh\n")) {
		t.Errorf("postgres entrypoint: %v, files %+v", img.Entrypoint, img.Files)
	}
	if !slices.Contains(img.Env, "PGDATA=/var/lib/postgresql/data") || !slices.ContainsFunc(img.Env, func(e string) bool {
		return strings.HasPrefix(e, "PATH="+PostgresBin+":")
	}) {
		t.Errorf("postgres env: %v", img.Env)
	}
}

// The entrypoint refuses to start without a password, before it looks at
// anything else (so this runs here, with no PostgreSQL).
func TestPostgresEntrypointNeedsAPassword(t *testing.T) {
	t.Parallel()
	for _, env := range [][]string{{"PATH=/usr/bin:/bin"}, {"PATH=/usr/bin:/bin", "POSTGRES_PASSWORD="}} {
		cmd := exec.Command("/bin/sh", "-s")
		cmd.Stdin = bytes.NewReader(postgresEntrypoint)
		cmd.Env = append(env, "PGDATA="+t.TempDir())
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Errorf("env %v: %v, want exit status 1", env, err)
		}
		if !strings.Contains(stderr.String(), "POSTGRES_PASSWORD is not set; refusing to start") || stdout.Len() != 0 {
			t.Errorf("env %v: stdout %q, stderr %q", env, stdout.String(), stderr.String())
		}
	}
}
