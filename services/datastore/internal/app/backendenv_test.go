package app

import (
	"strings"
	"testing"
)

func TestBackendFromEnv(t *testing.T) {
	env := map[string]string{"DSN": "postgres://u:secret@db:5432/k"}
	getenv := func(k string) string { return env[k] }
	for _, c := range []struct{ flag, want, err string }{
		{flag: "sqlite", want: "sqlite"},
		{flag: "postgres://u:p@h/db", want: "postgres://u:p@h/db"},
		{flag: "env:DSN", want: env["DSN"]},
		{flag: "env:", err: "names no variable"},
		{flag: "env:MISSING", err: "MISSING is empty or unset"},
	} {
		got, err := backendFromEnv(c.flag, getenv)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: error %v, want one saying %q", c.flag, err, c.err)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("%s: error shows a secret: %v", c.flag, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: got %q, %v; want %q", c.flag, got, err, c.want)
		}
	}
}
