package roles

import (
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestDefaultPortsDistinct(t *testing.T) {
	p := DefaultPorts()
	seen := map[int]bool{}
	for _, f := range p.list() {
		if *f == 0 || seen[*f] {
			t.Fatalf("port %d is zero or used twice: %+v", *f, p)
		}
		seen[*f] = true
	}
}

func TestLoopbackWiringListensOnLoopbackOnly(t *testing.T) {
	ports, err := FreePorts()
	if err != nil {
		t.Fatal(err)
	}
	w := Wiring{DataDir: "/tmp/d", Host: LoopbackHosts, Bind: "127.0.0.1", PublicBind: "127.0.0.1", Ports: ports, Backend: "etcd"}
	for _, name := range Names() {
		r := w.Role(name)
		if r.Args[0] != "--data-dir" || r.Args[1] != "/tmp/d" {
			t.Errorf("%s: args start %v, want --data-dir /tmp/d", name, r.Args[:2])
		}
		joined := strings.Join(r.Args, " ")
		if strings.Contains(joined, "0.0.0.0") {
			t.Errorf("%s listens on every address in a loopback wiring: %s", name, joined)
		}
		// every port the role serves, and its health port, is in its flags
		for _, p := range append(r.Serves, Port{Name: "health", Port: r.Ready.Port}) {
			if !strings.Contains(joined, ":"+strconv.Itoa(p.Port)) && !slices.Contains(r.Args, strconv.Itoa(p.Port)) {
				t.Errorf("%s: port %s (%d) is not in its flags: %s", name, p.Name, p.Port, joined)
			}
		}
		if r.Live.Port == 0 || r.Ready.Path == "" || r.Requests.MemoryMiB == 0 {
			t.Errorf("%s: incomplete description %+v", name, r)
		}
	}
	if got := w.Role(APIServer).Args; !slices.Contains(got, "https://127.0.0.1:"+strconv.Itoa(ports.Datastore)) {
		t.Errorf("apiserver does not dial the datastore on loopback: %v", got)
	}
}

func TestNamedWiringRelaysTheAPI(t *testing.T) {
	w := Wiring{Advertise: "10.0.0.2", RelayAPIServer: true, AddonImages: map[string]string{"b": "x/b:1", "a": "x/a:1"},
		Extra: map[string][]string{Scheduler: {"--v", "2"}}}
	gw := strings.Join(w.Role(TunnelGateway).Args, " ")
	for _, want := range []string{"--apiserver-address apiserver:6443", "--apiserver-relay-address 10.0.0.2:6443"} {
		if !strings.Contains(gw, want) {
			t.Errorf("gateway flags %q lack %q", gw, want)
		}
	}
	if api := strings.Join(w.Role(APIServer).Args, " "); !strings.Contains(api, "--datastore-endpoint https://datastore:2379") ||
		!strings.Contains(api, "--advertise-address 10.0.0.2") {
		t.Errorf("apiserver flags: %s", api)
	}
	// addon images in a stable order, extra flags last
	if c := strings.Join(w.Role(Controllers).Args, " "); !strings.HasSuffix(c, "--addon-image a=x/a:1 --addon-image b=x/b:1") {
		t.Errorf("controllers flags: %s", c)
	}
	if s := w.Role(Scheduler).Args; !slices.Equal(s[len(s)-2:], []string{"--v", "2"}) {
		t.Errorf("scheduler flags: %v", s)
	}
	if got := hp("fd00::1", 6443); got != "[fd00::1]:6443" {
		t.Errorf("hp(IPv6) = %s", got)
	}
	if got := hp("${IP:-1.2.3.4}", 6443); got != "${IP:-1.2.3.4}:6443" {
		t.Errorf("hp(variable) = %s", got)
	}
}
