package datapath

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// Check says, in one line, what this host lacks for the socket load
// balancer, or nil: the privileges to load programs, cgroup socket-address
// programs, and the helpers the programs call (bpf_set_retval is the newest:
// Linux 5.18).
func Check() error {
	if err := features.HaveProgramType(ebpf.CGroupSockAddr); err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, os.ErrPermission) {
			return errors.New("loading eBPF programs is not permitted: the node agent needs CAP_BPF and CAP_NET_ADMIN (run the node container privileged)")
		}
		return fmt.Errorf("the kernel has no cgroup socket-address eBPF programs (needs CONFIG_CGROUP_BPF, Linux 4.17 or newer): %v", err)
	}
	for _, h := range []struct {
		fn   asm.BuiltinFunc
		name string
	}{
		{asm.FnGetSocketCookie, "bpf_get_socket_cookie"},
		{asm.FnGetNetnsCookie, "bpf_get_netns_cookie (Linux 5.7)"},
		{asm.FnSetRetval, "bpf_set_retval (Linux 5.18)"},
	} {
		if err := features.HaveProgramHelper(ebpf.CGroupSockAddr, h.fn); err != nil {
			return fmt.Errorf("the kernel lacks the eBPF helper %s for cgroup socket-address programs: %v", h.name, err)
		}
	}
	return nil
}

// explain turns a load or attach error into one line: the verifier's log
// is many lines, of which the last says what it refused.
func explain(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		last := ""
		for _, l := range ve.Log {
			if strings.TrimSpace(l) != "" {
				last = strings.TrimSpace(l)
			}
		}
		return fmt.Errorf("the kernel's verifier refused a program: %v (%s)", ve.Cause, last)
	}
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("%v: the node agent needs CAP_BPF and CAP_NET_ADMIN (run the node container privileged)", err)
	}
	return err
}

// BPFFSMagic is the filesystem type of a bpffs mount.
const BPFFSMagic = 0xcafe4a11

// EnsureBPFFS mounts a bpffs at dir unless one is there. In a node
// container the mount is the container's own (a new bpffs instance): pins
// made there outlive the agent (the supervisor restarts it in the same
// mount namespace) and vanish with the container.
func EnsureBPFFS(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && uint32(st.Type) == BPFFSMagic {
		return nil
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mounting a bpffs at %s: %w", dir, err)
	}
	return nil
}

// Cgroup2Mount is where the cgroup v2 hierarchy is mounted: /sys/fs/cgroup
// on a cgroup v2 host, /sys/fs/cgroup/unified on a v1 "hybrid" host, read
// from mountinfo.
func Cgroup2Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	best := ""
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fs := strings.Fields(post)
		f := strings.Fields(pre)
		if len(fs) == 0 || fs[0] != "cgroup2" || len(f) < 5 {
			continue
		}
		if best == "" || len(f[4]) < len(best) {
			best = f[4]
		}
	}
	if best == "" {
		return "", errors.New("no cgroup v2 hierarchy is mounted (not in /proc/self/mountinfo): socket programs attach only to cgroup v2")
	}
	return best, nil
}

// NodeCgroups are the cgroup v2 directories whose sockets the programs
// translate: "pods", the node's pods (MOUNT/CGROUPROOT/kubepods, created if
// missing: the container runtime puts the pods' processes in the same path),
// and "node", the agent's own cgroup (in a node container: the container's,
// which holds the kubelet, containerd and `docker exec` sessions; on a host:
// the agent's service), so that the node itself reaches ClusterIPs as with
// kube-proxy. It refuses a cgroupRoot of "/" (its kubepods may be shared by
// every node container on the host) and never attaches to the hierarchy's
// root: that would translate every socket of the host.
func NodeCgroups(cgroupRoot string) (map[string]string, error) {
	mnt, err := Cgroup2Mount()
	if err != nil {
		return nil, err
	}
	root := filepath.Clean("/" + cgroupRoot)
	if root == "/" {
		return nil, errors.New("the kubelet's cgroupRoot is \"/\": its kubepods cgroup is not this node's alone; give the node its own cgroupRoot")
	}
	pods := filepath.Join(mnt, root, "kubepods")
	if err := os.MkdirAll(pods, 0o755); err != nil {
		return nil, fmt.Errorf("creating the pods' cgroup %s: %w", pods, err)
	}
	cgs := map[string]string{"pods": pods}
	own, err := ownCgroup2()
	if err != nil {
		return nil, err
	}
	if own != "/" && !strings.HasPrefix(own+"/", root+"/") {
		cgs["node"] = filepath.Join(mnt, own)
	}
	return cgs, nil
}

// ownCgroup2 is this process's cgroup v2 path (the "0::" line of
// /proc/self/cgroup).
func ownCgroup2() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return filepath.Clean(p), nil
		}
	}
	return "", errors.New("this process has no cgroup v2 path in /proc/self/cgroup")
}
