package helm

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/kubesplit/kubesplit/roles"
)

// The chart's httpGet probes come from outside the container (the kubelet
// on the pod's address): every role's probed port must be the one its
// --health-address binds, and bound beyond loopback, in every mode.
func TestProbesReachTheHealthPortFromOutside(t *testing.T) {
	b, err := Render("v0.0.0-test")
	if err != nil {
		t.Fatal(err)
	}
	var f file
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	for _, name := range roles.Names() {
		r, ok := f.Roles[name]
		if !ok {
			t.Fatalf("roles.json has no %s", name)
		}
		argSets := map[string][]string{"sqlite": r.Args}
		for mode, a := range r.ModeArgs {
			argSets[mode] = a
		}
		for mode, args := range argSets {
			i := slices.Index(args, "--health-address")
			if i < 0 || i+1 >= len(args) {
				t.Fatalf("%s (%s): no --health-address in %q", name, mode, args)
			}
			for _, c := range []check{r.Live, r.Ready} {
				if want := "0.0.0.0:" + strconv.Itoa(c.Port); args[i+1] != want {
					t.Errorf("%s (%s): probe of port %d, but --health-address %s (want %s)", name, mode, c.Port, args[i+1], want)
				}
				if c.Path == "" || c.Path[0] != '/' {
					t.Errorf("%s: probe path %q", name, c.Path)
				}
			}
		}
	}
}

// Everywhere else the health ports stay on loopback: their check runs in
// the container (compose) or on the host (static pods, host processes).
func TestHealthStaysOnLoopbackByDefault(t *testing.T) {
	for _, name := range []string{roles.Datastore, roles.APIServer, roles.Scheduler, roles.Controllers} {
		args := roles.Wiring{}.Role(name).Args
		i := slices.Index(args, "--health-address")
		if i < 0 || args[i+1][:10] != "127.0.0.1:" {
			t.Errorf("%s: --health-address not on loopback by default: %q", name, args)
		}
	}
}

// The chart's snapshot Jobs mount datastoreClientReads instead of the
// datastore's files: the client certificate and CA, never a member's keys.
func TestSnapshotJobsReadTheClientFilesOnly(t *testing.T) {
	b, err := Render("v0.0.0")
	if err != nil {
		t.Fatal(err)
	}
	var f file
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.DatastoreClientReads) == 0 {
		t.Fatal("roles.json has no datastoreClientReads")
	}
	for _, r := range f.DatastoreClientReads {
		if !slices.Contains(f.Roles["datastore"].Reads, r) {
			t.Errorf("%s: not a file the datastore reads", r)
		}
		if strings.Contains(r, "server") || strings.Contains(r, "peer") {
			t.Errorf("%s: a member's key among a client's files", r)
		}
	}
}
