package catalog

import (
	"slices"
	"testing"
)

func TestSelect(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		names []string
		want  []string
		err   bool
	}{
		{names: nil, want: Names()},
		{names: []string{"apiserver", "datastore"}, want: []string{"datastore", "apiserver"}},
		// the node image preloads pause and coredns, which are built first
		{names: []string{"node"}, want: []string{"coredns", "pause", "node"}},
		{names: []string{"etcd"}, err: true},
	} {
		imgs, err := Select(c.names)
		if (err != nil) != c.err {
			t.Errorf("Select(%v): error %v", c.names, err)
			continue
		}
		var got []string
		for _, img := range imgs {
			got = append(got, img.Name)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("Select(%v) = %v, want %v", c.names, got, c.want)
		}
	}
}

func TestEveryImageIsComplete(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, img := range All() {
		if seen[img.Name] || len(img.Binaries) == 0 || len(img.Entrypoint) == 0 {
			t.Errorf("image %s: duplicate, no binaries or no entrypoint", img.Name)
		}
		for _, p := range img.Preload {
			if !seen[p] {
				t.Errorf("image %s preloads %s, which is not built before it", img.Name, p)
			}
		}
		dst := map[string]bool{}
		for _, b := range append(append([]Binary{}, img.Tools...), img.Binaries...) {
			if dst[b.Dst] {
				t.Errorf("image %s has %s twice", img.Name, b.Dst)
			}
			dst[b.Dst] = true
		}
		if img.Base == Static && img.User != "65532:65532" {
			t.Errorf("control-plane image %s runs as %q", img.Name, img.User)
		}
		seen[img.Name] = true
	}
}
