package config

import (
	"net"
	"strings"
	"testing"
)

func TestRedactDSN(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://u:secretpw@h:5432/db?sslmode=disable": "postgres://u:xxxxx@h:5432/db?sslmode=disable",
		"postgres://h/db?password=secretpw":               "postgres://h/db?password=xxxxx",
		"mysql://u:secretpw@tcp(h:3306)/db":               "mysql://<redacted>",
		"secretpw":                                        "<redacted>",
	} {
		got := RedactDSN(in)
		if got != want || strings.Contains(got, "secretpw") {
			t.Errorf("RedactDSN(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCheckListenInUse(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = CheckListen(l.Addr().String(), "--port")
	if err == nil || !strings.Contains(err.Error(), "already in use") || !strings.Contains(err.Error(), "--port") {
		t.Fatalf("got %v", err)
	}
}

func TestParseNamesFlagAndHelp(t *testing.T) {
	t.Parallel()
	fs := NewFlagSet("role")
	fs.String("data-dir", "", "")
	err := Parse(fs, []string{"--data-dri", "x"})
	if err == nil || !strings.Contains(err.Error(), "--data-dri") || !strings.Contains(err.Error(), "role --help") {
		t.Fatalf("got %v", err)
	}
}
