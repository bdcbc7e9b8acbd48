package main

import (
	"testing"

	"github.com/spf13/pflag"
	"sigs.k8s.io/metrics-server/cmd/metrics-server/app"
)

// Our command takes every flag upstream's does, with the same defaults, and
// adds --kubelet-via-apiserver.
func TestCommandKeepsUpstreamFlags(t *testing.T) {
	t.Parallel()
	ours := newCommand(make(chan struct{})).Flags()
	app.NewMetricsServerCommand(make(chan struct{})).Flags().VisitAll(func(f *pflag.Flag) {
		o := ours.Lookup(f.Name)
		if o == nil {
			t.Errorf("flag --%s of upstream's command is missing", f.Name)
		} else if o.DefValue != f.DefValue {
			t.Errorf("flag --%s: default %q, upstream's %q", f.Name, o.DefValue, f.DefValue)
		}
	})
	if f := ours.Lookup("kubelet-via-apiserver"); f == nil || f.DefValue != "false" {
		t.Errorf("--kubelet-via-apiserver: %+v, want a flag off by default", f)
	}
}

func TestCommandRefusesInsecureKubeletTLSViaAPIServer(t *testing.T) {
	t.Parallel()
	cmd := newCommand(make(chan struct{}))
	cmd.SetArgs([]string{"--kubelet-via-apiserver", "--kubelet-insecure-tls"})
	cmd.SilenceErrors = true
	if err := cmd.Execute(); err == nil {
		t.Fatal("--kubelet-via-apiserver --kubelet-insecure-tls: no error")
	}
}
