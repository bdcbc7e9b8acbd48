package agent

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// prepareHost makes the kernel settings the kubelet, kube-proxy and the pod
// network need. Inside a node container (docker, compose) it also does what
// an init system would: a writable /proc/sys, shared mount propagation, a
// machine-id, and the kubelet's cgroup root in every cgroup v1 hierarchy.
func (c *Config) prepareHost(log *slog.Logger) error {
	var st unix.Statfs_t
	if err := unix.Statfs("/proc/sys", &st); err == nil && st.Flags&unix.ST_RDONLY != 0 {
		if err := unix.Mount("", "/proc/sys", "", unix.MS_REMOUNT|unix.MS_BIND, ""); err != nil {
			// remount the bind without MS_RDONLY
			if err2 := unix.Mount("proc", "/proc/sys", "", unix.MS_REMOUNT, ""); err2 != nil {
				return fmt.Errorf("/proc/sys is read-only and cannot be remounted (the node needs CAP_SYS_ADMIN): %v", err)
			}
		}
	}
	if err := unix.Mount("", "/", "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		log.Warn("cannot make / shared; volume mounts will not propagate", "err", err)
	}
	for key, val := range map[string]string{
		"net/ipv4/ip_forward":                 "1",
		"net/ipv4/conf/all/rp_filter":         "0",
		"net/bridge/bridge-nf-call-iptables":  "1",
		"net/bridge/bridge-nf-call-ip6tables": "1",
	} {
		p := filepath.Join("/proc/sys", key)
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if err := os.WriteFile(p, []byte(val), 0o644); err != nil {
			return fmt.Errorf("setting sysctl %s: %w", strings.ReplaceAll(key, "/", "."), err)
		}
	}
	if _, err := os.Stat("/etc/machine-id"); errors.Is(err, os.ErrNotExist) {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		if err := os.WriteFile("/etc/machine-id", []byte(hex.EncodeToString(b)+"\n"), 0o444); err != nil {
			log.Warn("cannot write /etc/machine-id", "err", err)
		}
	}
	if c.CgroupRoot != "" {
		if err := makeCgroupRoot(c.CgroupRoot); err != nil {
			return fmt.Errorf("creating cgroup root %s: %w", c.CgroupRoot, err)
		}
		if n := pruneDeadCgroups(c.CgroupRoot); n > 0 {
			log.Info("removed the cgroups of containers that died with the node", "count", n)
		}
	}
	return os.MkdirAll(c.containerdState(), 0o711)
}

// pruneDeadCgroups removes the empty cgroups under ROOT/kubepods in every
// hierarchy. A node container shares the host's cgroup tree, so when it is
// killed (a power cut of the box, docker kill) its pods' cgroups stay behind
// without processes; the kubelet's cAdvisor then spends about three seconds
// on each at start (minutes for a box's few dozen containers) before the
// kubelet syncs any pod. rmdir removes a cgroup only when it holds no
// process and no child, so the cgroups of pods that outlived an agent restart
// are left alone. It runs before the kubelet starts, which recreates what it
// needs. It returns how many it removed.
func pruneDeadCgroups(root string) int {
	var tops []string
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		tops = []string{filepath.Join("/sys/fs/cgroup", root, "kubepods")}
	} else if hs, err := os.ReadDir("/sys/fs/cgroup"); err == nil {
		for _, h := range hs {
			if h.IsDir() {
				tops = append(tops, filepath.Join("/sys/fs/cgroup", h.Name(), root, "kubepods"))
			}
		}
	}
	removed := 0
	for _, top := range tops {
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() && p != top {
				dirs = append(dirs, p)
			}
			return nil
		})
		// deepest first: a parent is empty only once its children are gone
		for i := len(dirs) - 1; i >= 0; i-- {
			if base := filepath.Base(dirs[i]); filepath.Dir(dirs[i]) == top && (base == "burstable" || base == "besteffort") {
				continue // the QoS classes are the kubelet's own
			}
			if unix.Rmdir(dirs[i]) == nil {
				removed++
			}
		}
	}
	return removed
}

// makeCgroupRoot creates root in every cgroup v1 hierarchy (the kubelet
// expects it to exist); cpuset groups start empty, so they inherit the parent's.
func makeCgroupRoot(root string) error {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return os.MkdirAll(filepath.Join("/sys/fs/cgroup", root), 0o755) // pure cgroup v2
	}
	hs, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return err
	}
	for _, h := range hs {
		if !h.IsDir() || h.Name() == "unified" {
			continue // symlinks (cpu -> cpu,cpuacct) point at directories handled on their own
		}
		dir := filepath.Join("/sys/fs/cgroup", h.Name(), root)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if strings.Contains(h.Name(), "cpuset") {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				cur, _ := os.ReadFile(filepath.Join(dir, f))
				if strings.TrimSpace(string(cur)) != "" {
					continue
				}
				v, err := os.ReadFile(filepath.Join(filepath.Dir(dir), f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
