package health

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestMaybeProbe(t *testing.T) {
	t.Parallel()
	ok := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	defer ok.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "[-]etcd failed", http.StatusInternalServerError)
	}))
	defer bad.Close()
	for _, c := range []struct {
		args    []string
		code    int
		handled bool
	}{
		{[]string{"--data-dir", "/x"}, 0, false},
		{nil, 0, false},
		{[]string{ProbeCommand, ok.URL + "/readyz"}, 0, true}, // self-signed TLS: accepted
		{[]string{ProbeCommand, bad.URL + "/readyz"}, 1, true},
		{[]string{ProbeCommand, "http://127.0.0.1:1/readyz"}, 1, true},
		{[]string{ProbeCommand}, 2, true},
	} {
		var stderr bytes.Buffer
		code, handled := MaybeProbe(c.args, &stderr)
		if code != c.code || handled != c.handled {
			t.Errorf("MaybeProbe(%q) = %d, %v; want %d, %v (%s)", c.args, code, handled, c.code, c.handled, stderr.String())
		}
	}
}
