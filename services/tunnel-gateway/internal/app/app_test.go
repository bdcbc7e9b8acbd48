package app

import (
	"bytes"
	"strings"
	"testing"
)

// A node-local endpoint the apiserver could not advertise, or a server
// name that is not one, is refused at start with the flag and an example.
func TestNodeConfigFlagsRefused(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--node-apiserver-address", "169.254.10.1:6443"},
		{"--node-apiserver-address", "192.0.2.1"},
		{"--apiserver-server-name", "https://cp1.example"},
	} {
		var stdout, stderr bytes.Buffer
		code := Main(append([]string{"--data-dir", t.TempDir()}, args...), &stdout, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), "--node-apiserver-address") {
			t.Errorf("%v: exit %d, %q", args, code, stderr.String())
		}
	}
}
