package app

import (
	"slices"
	"strings"
	"testing"

	"github.com/kubesplit/kubesplit/pkg/bootstrap"
	"github.com/kubesplit/kubesplit/pkg/layout"
)

func TestUpstreamArgsAreSecureByDefault(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := bootstrap.Run(bootstrap.Options{DataDir: layout.Dir(dir)}); err != nil {
		t.Fatal(err)
	}
	o := Options{DataDir: dir, DatastoreEndpoint: "https://127.0.0.1:2379", BindAddress: "127.0.0.1", SecurePort: 0, ServiceCIDR: "10.43.0.0/16"}
	if _, err := o.UpstreamArgs(); err == nil || !strings.Contains(err.Error(), "--secure-port") {
		t.Fatalf("port 0 accepted: %v", err)
	}
	o.SecurePort = 46443
	args, err := o.UpstreamArgs()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction,PodSecurity",
		"--authentication-config=" + layout.Dir(dir).AuthenticationConfig(),
		"--encryption-provider-config=" + layout.Dir(dir).EncryptionConfig(),
		"--etcd-certfile=" + layout.Dir(dir).DatastoreClient().Cert,
		"--enable-bootstrap-token-auth=true",
		"--profiling=false",
	} {
		if !slices.Contains(args, want) {
			t.Errorf("missing %s", want)
		}
	}
	for _, a := range args {
		if strings.HasPrefix(a, "--anonymous-auth") || strings.HasPrefix(a, "--audit-log-path") {
			t.Errorf("unexpected %s", a)
		}
	}
	o.AuditLog = true
	args, _ = o.UpstreamArgs()
	if !slices.Contains(args, "--audit-log-path="+layout.Dir(dir).AuditLog()) {
		t.Error("--audit-log does not turn the audit log on")
	}
}

func TestUpstreamArgsRejectsBadValues(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := bootstrap.Run(bootstrap.Options{DataDir: layout.Dir(dir)}); err != nil {
		t.Fatal(err)
	}
	base := Options{DataDir: dir, DatastoreEndpoint: "https://127.0.0.1:2379", BindAddress: "127.0.0.1", SecurePort: 46444, ServiceCIDR: "10.43.0.0/16"}
	for name, tc := range map[string]struct {
		mut  func(*Options)
		want string
	}{
		"plain-http datastore": {func(o *Options) { o.DatastoreEndpoint = "http://127.0.0.1:2379" }, "must be an https://"},
		"bad service CIDR":     {func(o *Options) { o.ServiceCIDR = "10.43.0.0" }, "--service-cidr"},
		"bad advertise":        {func(o *Options) { o.AdvertiseAddress = "host" }, "--advertise-address"},
		"missing egress file":  {func(o *Options) { o.EgressConfig = dir + "/nope.yaml" }, "is missing"},
	} {
		o := base
		tc.mut(&o)
		if _, err := o.UpstreamArgs(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", name, err, tc.want)
		}
	}
}
