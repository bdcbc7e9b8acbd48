package box

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestPodCgroupsLeft(t *testing.T) {
	mk := func(root string, dirs ...string) {
		for _, d := range dirs {
			if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	const a, b, gone = "0282b9f2dcfd9fa598312702e6de9d4c", "b098f023-c807-481d-83f5-b49056235acc", "ce068b8c77a73ee98019fd664bb44584"
	for _, tc := range []struct {
		name  string
		setup func(root string)
	}{
		{"v1 cgroupfs (a node container's own root)", func(root string) {
			mk(root, "cpu/kubesplit-x-box/kubepods/burstable/pod"+gone, // another controller: not read
				"memory/kubesplit-x-box/kubepods/burstable/pod"+a+"/c1",
				"memory/kubesplit-x-box/kubepods/besteffort/pod"+b)
		}},
		{"v2 systemd", func(root string) {
			mk(root, "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"+a+".slice/cri-containerd-1.scope",
				"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podb098f023_c807_481d_83f5_b49056235acc.slice")
			if err := os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("cpu memory"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			tc.setup(root)
			old := cgroupRoot
			cgroupRoot = root
			defer func() { cgroupRoot = old }()
			if got := podCgroupsLeft([]string{a, gone, b}); !slices.Equal(got, []string{a, b}) {
				t.Errorf("left %v, want %v", got, []string{a, b})
			}
			if got := podCgroupsLeft([]string{gone}); len(got) != 0 {
				t.Errorf("a pod without a cgroup: left %v", got)
			}
		})
	}
	cgroupRoot = t.TempDir() + "/none"
	defer func() { cgroupRoot = "/sys/fs/cgroup" }()
	if got := podCgroupsLeft([]string{a}); len(got) != 0 {
		t.Errorf("no hierarchy: left %v, want none", got)
	}
}
