package box

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// The kubelet starts a static pod only once the pod of the same name before
// it is completely gone: stopped, its volumes unmounted and, last, its
// cgroup removed. A new manifest that arrives earlier is retried after the
// kubelet's 10-15 s back-off; one that arrives after starts at once. The
// cgroup is the one trace of that last step visible from outside the
// kubelet, so an upgrade waits for it to vanish before it writes the new
// manifest.

// cgroupRoot is where the box's cgroup hierarchy is mounted (a variable for tests).
var cgroupRoot = "/sys/fs/cgroup"

// podCgroupsLeft reports which of uids still have a pod cgroup: a
// directory named pod<UID> (cgroupfs driver) or ...pod<UID with _>.slice
// (systemd driver) anywhere in one hierarchy (cgroup v2's unified one, or
// v1's memory controller, which the kubelet always uses). With no cgroup
// hierarchy to read it reports none: nothing to wait for. (v1's controllers
// are emptied one after the other, so once in five upgrades here the new
// pod still met the kubelet's retry; waiting for every v1 controller was
// tried and was worse: one lingered 30 s.)
func podCgroupsLeft(uids []string) []string {
	if len(uids) == 0 {
		return nil
	}
	root := cgroupRoot
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err != nil { // not v2
		root = filepath.Join(cgroupRoot, "memory")
	}
	names := map[string]string{}
	for _, uid := range uids {
		names["pod"+uid] = uid
		names["pod"+strings.ReplaceAll(uid, "-", "_")+".slice"] = uid
	}
	left := map[string]bool{}
	errStop := errors.New("all found")
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		name := d.Name()
		if i := strings.LastIndex(name, "-pod"); i >= 0 && strings.HasSuffix(name, ".slice") {
			name = name[i+1:] // kubepods-burstable-pod<UID>.slice
		}
		if uid, ok := names[name]; ok {
			left[uid] = true
			if len(left) == len(uids) {
				return errStop
			}
			return filepath.SkipDir // its containers' cgroups are below
		}
		return nil
	})
	var out []string
	for _, uid := range uids {
		if left[uid] {
			out = append(out, uid)
		}
	}
	return out
}
