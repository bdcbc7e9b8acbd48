package datapath

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The kernel tests load the programs into the running kernel and attach them
// to a cgroup made for the test; a client process started in that cgroup
// dials Service addresses. Frontends are in 127.100.0.0/16: loopback, so a
// connection that is not translated goes nowhere but this host (and is
// refused, as nothing listens there).

const clientEnv = "KUBESPLIT_DATAPATH_CLIENT"

func TestMain(m *testing.M) {
	if spec := os.Getenv(clientEnv); spec != "" {
		os.Exit(runClient(spec))
	}
	os.Exit(m.Run())
}

// result is what the client reports for one dial.
type result struct {
	Reply string `json:"reply,omitempty"` // what the backend answered
	Peer  string `json:"peer,omitempty"`  // getpeername (TCP) or the reply's source (UDP)
	Err   string `json:"err,omitempty"`
}

// runClient dials "PROTO ADDR COUNT" and prints one JSON result per dial.
func runClient(spec string) int {
	f := strings.Fields(spec)
	if len(f) != 3 {
		fmt.Fprintln(os.Stderr, "bad client spec", spec)
		return 2
	}
	var n int
	fmt.Sscan(f[2], &n)
	enc := json.NewEncoder(os.Stdout)
	for i := 0; i < n; i++ {
		var r result
		switch f[0] {
		case "tcp":
			r = dialTCP(f[1])
		case "udp": // unconnected: sendto/recvfrom
			r = sendUDP(f[1])
		case "udpconn": // connected UDP, as Go's and glibc's resolvers do
			r = connUDP(f[1])
		}
		_ = enc.Encode(r)
	}
	return 0
}

func dialTCP(addr string) result {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return result{Err: errName(err)}
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return result{Err: errName(err)}
	}
	return result{Reply: strings.TrimSpace(line), Peer: c.RemoteAddr().String()}
}

func sendUDP(addr string) result {
	dst, _ := netip.ParseAddrPort(addr)
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return result{Err: errName(err)}
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.WriteToUDPAddrPort([]byte("hi"), dst); err != nil {
		return result{Err: errName(err)}
	}
	buf := make([]byte, 64)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return result{Err: errName(err)}
	}
	return result{Reply: string(buf[:n]), Peer: from.String()}
}

func connUDP(addr string) result {
	c, err := net.DialTimeout("udp4", addr, 2*time.Second)
	if err != nil {
		return result{Err: errName(err)}
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("hi")); err != nil {
		return result{Err: errName(err)}
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		return result{Err: errName(err)}
	}
	return result{Reply: string(buf[:n]), Peer: c.RemoteAddr().String()}
}

func errName(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.EPERM):
		return "eperm"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	}
	return err.Error()
}

// env is one test's cgroup, bpffs and backends.
type env struct {
	t      *testing.T
	cgroup string
	pins   string
	tcp    map[string]Backend // backend name -> address
	udp    map[string]Backend
}

func newEnv(t *testing.T) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loading eBPF programs needs root")
	}
	if err := Check(); err != nil {
		t.Fatalf("this host cannot run the socket load balancer: %v", err)
	}
	mnt, err := Cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, tcp: map[string]Backend{}, udp: map[string]Backend{}}
	e.cgroup = filepath.Join(mnt, fmt.Sprintf("kubesplit-datapath-test-%d", os.Getpid()), "kubepods")
	if err := os.MkdirAll(e.cgroup, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = os.Remove(e.cgroup)
		_ = os.Remove(filepath.Dir(e.cgroup))
	})
	e.pins = t.TempDir()
	if err := EnsureBPFFS(e.pins); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(e.pins, unix.MNT_DETACH) })
	for _, name := range []string{"a", "b"} {
		e.tcp[name] = tcpBackend(t, name)
		e.udp[name] = udpBackend(t, name)
	}
	return e
}

func tcpBackend(t *testing.T, name string) Backend {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, name)
			c.Close()
		}
	}()
	return netip.MustParseAddrPort(l.Addr().String())
}

func udpBackend(t *testing.T, name string) Backend {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteToUDPAddrPort([]byte(name), from)
		}
	}()
	return netip.MustParseAddrPort(c.LocalAddr().String())
}

// dial runs the client in the test's cgroup (inside=true) or in the test's
// own cgroup, and returns its results.
func (e *env) dial(inside bool, proto, addr string, n int) []result {
	e.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %d", clientEnv, proto, addr, n))
	cmd.Stderr = os.Stderr
	if inside {
		fd, err := os.Open(e.cgroup)
		if err != nil {
			e.t.Fatal(err)
		}
		defer fd.Close()
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	}
	out, err := cmd.Output()
	if err != nil {
		e.t.Fatalf("client %s %s: %v", proto, addr, err)
	}
	var rs []result
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var r result
		if err := dec.Decode(&r); err != nil {
			e.t.Fatal(err)
		}
		rs = append(rs, r)
	}
	if len(rs) != n {
		e.t.Fatalf("client %s %s: %d results, want %d", proto, addr, len(rs), n)
	}
	return rs
}

// replies counts the results by reply (or error).
func replies(rs []result) map[string]int {
	m := map[string]int{}
	for _, r := range rs {
		if r.Err != "" {
			m["err:"+r.Err]++
		} else {
			m[r.Reply]++
		}
	}
	return m
}

func frontend(s string, proto uint8) Frontend {
	ap := netip.MustParseAddrPort(s)
	return Frontend{Addr: ap.Addr(), Port: ap.Port(), Proto: proto}
}

func open(t *testing.T, e *env) *Datapath {
	t.Helper()
	d, err := Open(e.pins)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	if err := d.Attach(map[string]string{"pods": e.cgroup}); err != nil {
		t.Fatal(err)
	}
	return d
}

func apply(t *testing.T, d *Datapath, tb Table) ApplyStats {
	t.Helper()
	st, err := d.Apply(tb)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestTranslate(t *testing.T) {
	e := newEnv(t)
	d := open(t, e)
	const vip, vipDNS, empty = "127.100.0.10:80", "127.100.0.53:53", "127.100.0.11:80"
	apply(t, d, Table{
		frontend(vip, TCP):    {Backends: []Backend{e.tcp["a"], e.tcp["b"]}},
		frontend(vipDNS, UDP): {Backends: []Backend{e.udp["a"], e.udp["b"]}},
		frontend(empty, TCP):  {},
		frontend(empty, UDP):  {},
	})

	t.Run("tcp spreads over the backends, getpeername shows the Service", func(t *testing.T) {
		rs := e.dial(true, "tcp", vip, 40)
		got := replies(rs)
		if got["a"] == 0 || got["b"] == 0 || got["a"]+got["b"] != 40 {
			t.Fatalf("replies %v, want both backends and nothing else", got)
		}
		for _, r := range rs {
			if r.Peer != vip {
				t.Fatalf("getpeername %s, want the Service's %s", r.Peer, vip)
			}
		}
	})
	t.Run("unconnected udp: the reply comes from the Service's address", func(t *testing.T) {
		rs := e.dial(true, "udp", vipDNS, 20)
		got := replies(rs)
		if got["a"]+got["b"] != 20 {
			t.Fatalf("replies %v", got)
		}
		for _, r := range rs {
			if r.Peer != vipDNS {
				t.Fatalf("reply from %s, want the Service's %s", r.Peer, vipDNS)
			}
		}
	})
	t.Run("connected udp", func(t *testing.T) {
		rs := e.dial(true, "udpconn", vipDNS, 10)
		if got := replies(rs); got["a"]+got["b"] != 10 {
			t.Fatalf("replies %v", got)
		}
		if rs[0].Peer != vipDNS {
			t.Fatalf("peer %s, want %s", rs[0].Peer, vipDNS)
		}
	})
	t.Run("no endpoints: refused at once", func(t *testing.T) {
		start := time.Now()
		for _, p := range []string{"tcp", "udp"} {
			if got := replies(e.dial(true, p, empty, 3)); got["err:refused"] != 3 {
				t.Fatalf("%s to a Service without endpoints: %v, want connection refused", p, got)
			}
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("refusing took %v", d)
		}
	})
	t.Run("processes outside the cgroup are not translated", func(t *testing.T) {
		if got := replies(e.dial(false, "tcp", vip, 3)); got["err:refused"] != 3 {
			t.Fatalf("from outside the pods' cgroup: %v, want refused (nothing listens on the Service address itself)", got)
		}
	})
	t.Run("other destinations pass untouched", func(t *testing.T) {
		if got := replies(e.dial(true, "tcp", e.tcp["a"].String(), 3)); got["a"] != 3 {
			t.Fatalf("direct to a backend: %v", got)
		}
	})
}

func TestUpdatesAndAffinity(t *testing.T) {
	e := newEnv(t)
	d := open(t, e)
	const vip = "127.100.0.20:80"
	f := frontend(vip, TCP)
	both := []Backend{e.tcp["a"], e.tcp["b"]}

	apply(t, d, Table{f: {Backends: both, Affinity: time.Hour}})
	got := replies(e.dial(true, "tcp", vip, 20))
	if len(got) != 1 {
		t.Fatalf("with ClientIP affinity one client saw %v, want one backend", got)
	}
	var first string
	for k := range got {
		first = k
	}

	// the affine backend goes away: the client moves to the other one
	other := map[string]string{"a": "b", "b": "a"}[first]
	st := apply(t, d, Table{f: {Backends: []Backend{e.tcp[other]}, Affinity: time.Hour}})
	if st.Changed != 1 || st.Backends != 1 {
		t.Fatalf("apply stats %+v", st)
	}
	if got := replies(e.dial(true, "tcp", vip, 10)); got[other] != 10 {
		t.Fatalf("after the affine backend was removed: %v, want all on %s", got, other)
	}
	if n := d.MapSizes()[mapBackends]; n != 1 {
		t.Fatalf("backend map holds %d entries, want 1 (the old generation deleted)", n)
	}

	// an unchanged table changes nothing
	if st := apply(t, d, Table{f: {Backends: []Backend{e.tcp[other]}, Affinity: time.Hour}}); st.Changed != 0 {
		t.Fatalf("re-applying the same table changed %d", st.Changed)
	}

	// Patch writes what it is given and leaves every other frontend
	// alone: same generation, still translated
	gen := func(fr Frontend) uint32 {
		entries, _, err := Dump(e.pins)
		if err != nil {
			t.Fatal(err)
		}
		for _, en := range entries {
			if en.Frontend == fr {
				return en.Generation
			}
		}
		t.Fatalf("%s not in the maps", fr)
		return 0
	}
	before := gen(f)
	f2 := frontend("127.100.0.21:80", TCP)
	if st, err := d.Patch(Table{f2: {Backends: both}}, nil); err != nil || st.Changed != 1 || st.Frontends != 2 || st.Backends != 3 {
		t.Fatalf("patch: %+v %v", st, err)
	}
	if gen(f) != before {
		t.Fatalf("patching %s rewrote %s", f2, f)
	}
	if got := replies(e.dial(true, "tcp", "127.100.0.21:80", 4)); got["a"]+got["b"] != 4 {
		t.Fatalf("patched frontend: %v", got)
	}
	if st, err := d.Patch(nil, []Frontend{f2, frontend("127.100.0.99:1", UDP)}); err != nil || st.Changed != 1 || st.Frontends != 1 || st.Backends != 1 {
		t.Fatalf("patch deleting one frontend (and one that is not there): %+v %v", st, err)
	}
	if got := replies(e.dial(true, "tcp", vip, 2)); got[other] != 2 {
		t.Fatalf("after another frontend was deleted: %v", got)
	}

	// removed frontend: no longer translated
	apply(t, d, Table{})
	if got := replies(e.dial(true, "tcp", vip, 2)); got["err:refused"] != 2 {
		t.Fatalf("after the Service was removed: %v", got)
	}
	sizes := d.MapSizes()
	if sizes[mapServices] != 0 || sizes[mapBackends] != 0 {
		t.Fatalf("maps after removing everything: %v", sizes)
	}
}

// TestRestart: a new Datapath over the pinned maps and links (an agent
// restart) keeps translating, and knows what the maps hold.
func TestRestart(t *testing.T) {
	e := newEnv(t)
	d := open(t, e)
	const vip = "127.100.0.30:80"
	tb := Table{frontend(vip, TCP): {Backends: []Backend{e.tcp["a"]}}}
	apply(t, d, tb)
	// a connection established before the restart
	conn, err := net.Dial("tcp", e.tcp["a"].String())
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	d.Close()

	if got := replies(e.dial(true, "tcp", vip, 2)); got["a"] != 2 {
		t.Fatalf("with no agent running: %v, want translation to go on", got)
	}
	d2 := open(t, e)
	if st := apply(t, d2, tb); st.Changed != 0 {
		t.Fatalf("the restarted datapath re-applied %d frontends; it should have read them back", st.Changed)
	}
	if got := replies(e.dial(true, "tcp", vip, 2)); got["a"] != 2 {
		t.Fatalf("after the restart: %v", got)
	}
	entries, sizes, err := Dump(e.pins)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Frontend.String() != vip+"/tcp" || len(entries[0].Backends) != 1 || sizes[mapServices] != 1 {
		t.Fatalf("dump %+v %v", entries, sizes)
	}

	d2.Close()
	if err := Remove(e.pins); err != nil {
		t.Fatal(err)
	}
	if got := replies(e.dial(true, "tcp", vip, 2)); got["err:refused"] != 2 {
		t.Fatalf("after Remove: %v, want no translation", got)
	}
}

// TestCheckUnprivileged: without the privileges, Check says so in one line.
func TestCheckUnprivileged(t *testing.T) {
	if os.Getenv("KUBESPLIT_CHECK_CHILD") == "1" {
		err := Check()
		if err == nil {
			t.Fatal("Check passed without privileges")
		}
		fmt.Println("CHECK:", err)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to start a process as another user")
	}
	// a copy the other user can execute (go test's build directory is root's alone)
	dir, err := os.MkdirTemp("", "kubesplit-check")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "datapath.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestCheckUnprivileged$", "-test.v")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "KUBESPLIT_CHECK_CHILD=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var line string
	for _, l := range strings.Split(string(out), "\n") {
		if after, ok := strings.CutPrefix(l, "CHECK: "); ok {
			line = after
		}
	}
	if !strings.Contains(line, "CAP_BPF") || strings.Contains(line, "\n") {
		t.Fatalf("unprivileged Check said %q, want one line naming CAP_BPF", line)
	}
}
