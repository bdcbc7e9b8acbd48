package agent

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestChooseServiceProxy(t *testing.T) {
	refused := errors.New("--service-proxy=ebpf: loading eBPF programs is not permitted: the node agent needs CAP_BPF")
	for _, c := range []struct {
		mode     string
		startErr error
		want     string
		wantErr  bool
		started  bool
		warns    bool
	}{
		{mode: ServiceProxyAuto, want: ServiceProxyEBPF, started: true},
		{mode: ServiceProxyAuto, startErr: refused, want: ServiceProxyIPTables, started: true, warns: true},
		{mode: ServiceProxyEBPF, want: ServiceProxyEBPF, started: true},
		{mode: ServiceProxyEBPF, startErr: refused, wantErr: true, started: true},
		{mode: ServiceProxyIPTables, want: ServiceProxyIPTables},
	} {
		var logs bytes.Buffer
		started := false
		got, err := chooseServiceProxy(c.mode, func() error { started = true; return c.startErr },
			slog.New(slog.NewTextHandler(&logs, nil)))
		if got != c.want || (err != nil) != c.wantErr || started != c.started {
			t.Errorf("%s, start error %v: chose %q, err %v, tried ebpf %v", c.mode, c.startErr, got, err, started)
		}
		if c.wantErr && !strings.Contains(err.Error(), "CAP_BPF") {
			t.Errorf("%s: error %v does not say why", c.mode, err)
		}
		if warned := strings.Contains(logs.String(), "CAP_BPF") && strings.Contains(logs.String(), "level=WARN"); warned != c.warns {
			t.Errorf("%s, start error %v: warning logged %v, want %v: %s", c.mode, c.startErr, warned, c.warns, logs.String())
		}
	}
}
