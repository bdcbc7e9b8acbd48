package backend

import (
	"errors"
	"strings"
	"testing"
)

func TestParseBackend(t *testing.T) {
	t.Parallel()
	const pw = "pa55w0rd-secret"
	ok := map[string]Kind{
		"":       SQLite,
		"sqlite": SQLite,
		"etcd":   Etcd,
		"postgres://u:" + pw + "@h:5432/db?sslmode=disable": Postgres,
		"postgresql://u@h/db":                               Postgres,
		"mysql://u:" + pw + "@tcp(h:3306)/db":               MySQL,
	}
	for in, want := range ok {
		got, err := ParseBackend(in)
		if err != nil || got != want {
			t.Errorf("ParseBackend(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	bad := []string{
		"postgres://u:" + pw + "@h:port/db",
		"postgres://u:" + pw + "%zz@h/db",
		"postgres:///" + pw,
		"redis://u:" + pw + "@h",
		"etcdd",
		pw,
	}
	for _, in := range bad {
		_, err := ParseBackend(in)
		if !errors.Is(err, ErrBadDSN) {
			t.Errorf("ParseBackend(%q): want ErrBadDSN, got %v", in, err)
			continue
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("error leaks the password: %v", err)
		}
	}
}
