package app

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

func run(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code := Main(args, &out, &out)
	return code, out.String()
}

func TestCertsCheckAndRotate(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	if code, out := run(t, "init", "--data-dir", dir, "--cert-validity", "48h"); code != 0 {
		t.Fatalf("init: %d %s", code, out)
	}
	code, out := run(t, "certs", "check", "--data-dir", dir)
	if code != 3 || !strings.Contains(out, "due for renewal") || !strings.Contains(out, "ok (CA, not renewed)") {
		t.Fatalf("check of two-day certificates: exit %d\n%s", code, out)
	}
	if code, out := run(t, "certs", "rotate", "--data-dir", dir, "apiserver.crt"); code != 0 || strings.Count(out, "renewed ") != 1 {
		t.Fatalf("rotate one: exit %d\n%s", code, out)
	}
	if code, out := run(t, "certs", "rotate", "--data-dir", dir, "no-such.crt"); code != 1 || !strings.Contains(out, "no such certificate") || !strings.Contains(out, "datastore-client.crt") {
		t.Fatalf("rotate unknown: exit %d\n%s", code, out)
	}
	if code, out := run(t, "certs", "rotate", "--data-dir", dir); code != 0 {
		t.Fatalf("rotate all: exit %d\n%s", code, out)
	}
	code, out = run(t, "certs", "check", "--data-dir", dir)
	if code != 0 || strings.Contains(out, "due") {
		t.Fatalf("check after rotate: exit %d\n%s", code, out)
	}
	if code, out := run(t, "certs", "check", "--data-dir", filepath.Join(dir, "nope")); code != 1 || !strings.Contains(out, "no pki directory") {
		t.Fatalf("check of a missing dir: exit %d\n%s", code, out)
	}
}
