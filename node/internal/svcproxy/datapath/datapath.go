// Package datapath is the node's socket-level Service load balancer: four
// cgroup programs (connect4, sendmsg4, recvmsg4, getpeername4) that rewrite
// a Service address to one of its backends when a socket connects or sends,
// and back when it receives or asks for its peer, and the maps they read.
// Translating at connect() time costs a connection one hash lookup whatever
// the number of Services, and an update is a few map writes instead of a
// rewrite of iptables chains.
//
// The programs act only on sockets of processes in the cgroup they are
// attached to (and its descendants): the node's pod cgroup, so that several
// node containers sharing a host kernel, the host itself and Docker are
// never affected. Maps and links are pinned in a bpffs directory, so a
// restarted agent takes over the state of the one before it without a gap.
package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Protocol numbers as the kernel gives them in bpf_sock_addr.protocol.
const (
	TCP = 6
	UDP = 17
)

// Frontend is an address a client dials: a Service's ClusterIP (or another
// of its addresses), port and protocol.
type Frontend struct {
	Addr  netip.Addr
	Port  uint16
	Proto uint8
}

func (f Frontend) String() string {
	p := "tcp"
	if f.Proto == UDP {
		p = "udp"
	} else if f.Proto != TCP {
		p = fmt.Sprint(f.Proto)
	}
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(f.Addr, f.Port), p)
}

// Backend is one endpoint of a frontend.
type Backend = netip.AddrPort

// Service is what a frontend translates to: its backends (none: connections
// are refused) and its ClientIP affinity timeout (zero: none).
type Service struct {
	Backends []Backend
	Affinity time.Duration
}

// Table is the whole desired state: every frontend of the node.
type Table map[Frontend]Service

// Datapath owns the programs, maps and links of one node.
type Datapath struct {
	pinDir string
	coll   *ebpf.Collection
	links  map[string]link.Link
	// what the maps hold, by frontend: the generation id its backends
	// are stored under, and the service as applied
	applied map[Frontend]appliedService
	nextID  uint32
	// generation ids in use (so that a new one is found without a walk
	// over every frontend) and the backend entries the maps hold
	usedIDs  map[uint32]bool
	backends int
}

type appliedService struct {
	id  uint32
	svc Service
}

// ApplyStats says what one Apply or Patch changed.
type ApplyStats struct {
	Frontends int // frontends in the map afterwards
	Backends  int // backend entries in the map afterwards
	Changed   int // frontends added, changed or removed
}

// Open loads the programs and the maps, taking over maps pinned in pinDir
// by an earlier run (pinDir must be on a bpffs mount). The programs are not
// attached yet: see Attach.
func Open(pinDir string) (*Datapath, error) {
	if err := os.MkdirAll(pinDir, 0o700); err != nil {
		return nil, err
	}
	spec := &ebpf.CollectionSpec{Maps: mapSpecs(), Programs: programSpecs()}
	opts := ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: pinDir}}
	coll, err := ebpf.NewCollectionWithOptions(spec, opts)
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		// maps of another layout (an older agent): start over with new ones;
		// established connections keep working, only their reverse
		// translation and affinity entries are lost
		for name := range spec.Maps {
			_ = os.Remove(filepath.Join(pinDir, name))
		}
		coll, err = ebpf.NewCollectionWithOptions(spec, opts)
	}
	if err != nil {
		return nil, explain(err)
	}
	d := &Datapath{pinDir: pinDir, coll: coll, links: map[string]link.Link{}, applied: map[Frontend]appliedService{},
		usedIDs: map[uint32]bool{}}
	if err := d.readBack(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// Attach attaches the programs to each cgroup (v2) directory of cgroups (a
// short name for pins: "pods", "node"), or replaces the programs of links
// an earlier run pinned, so that there is no moment without translation.
func (d *Datapath) Attach(cgroups map[string]string) error {
	for cgName, cgroupPath := range cgroups {
		for name, attach := range progAttach {
			key := cgName + "_" + name
			pin := filepath.Join(d.pinDir, "link_"+key)
			prog := d.coll.Programs[name]
			if l, err := link.LoadPinnedLink(pin, nil); err == nil {
				if err := l.Update(prog); err != nil {
					l.Close()
					return fmt.Errorf("updating the pinned %s link: %w", key, err)
				}
				d.links[key] = l
				continue
			}
			l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroupPath, Attach: attach, Program: prog})
			if err != nil {
				return fmt.Errorf("attaching %s to %s: %w", name, cgroupPath, explain(err))
			}
			if err := l.Pin(pin); err != nil {
				l.Close()
				return fmt.Errorf("pinning the %s link: %w", key, err)
			}
			d.links[key] = l
		}
	}
	return nil
}

// Attached lists the attached programs' names.
func (d *Datapath) Attached() []string {
	names := make([]string, 0, len(d.links))
	for n := range d.links {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Close releases this process's handles; pinned maps and links stay, and
// with them the translation.
func (d *Datapath) Close() {
	for _, l := range d.links {
		l.Close()
	}
	if d.coll != nil {
		d.coll.Close()
	}
}

// Remove detaches the programs and deletes the maps pinned in pinDir: the
// node's sockets are no longer translated.
func Remove(pinDir string) error {
	var errs []error
	links, _ := filepath.Glob(filepath.Join(pinDir, "link_*"))
	for _, pin := range links {
		l, err := link.LoadPinnedLink(pin, nil)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, l.Unpin(), l.Close())
	}
	for name := range mapSpecs() {
		if err := os.Remove(filepath.Join(pinDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (d *Datapath) m(name string) *ebpf.Map { return d.coll.Maps[name] }

// readBack rebuilds what the maps hold (from an earlier run) so that the
// first Apply changes only what differs.
func (d *Datapath) readBack() error {
	var k serviceKey
	var v serviceValue
	it := d.m(mapServices).Iterate()
	for it.Next(&k, &v) {
		f := frontendOf(k)
		svc := Service{Affinity: time.Duration(v.AffinitySeconds) * time.Second}
		for i := uint32(0); i < v.Count; i++ {
			var b backendValue
			if err := d.m(mapBackends).Lookup(backendKey{ID: v.ID, Index: i}, &b); err != nil {
				return fmt.Errorf("reading back %s: backend %d: %w", f, i, err)
			}
			svc.Backends = append(svc.Backends, backendOf(b))
		}
		d.record(f, appliedService{id: v.ID, svc: svc})
		d.nextID = max(d.nextID, v.ID+1)
	}
	return it.Err()
}

// Apply makes the maps hold t and nothing else (the first sync, and the
// read-back state reconciled after a restart).
func (d *Datapath) Apply(t Table) (ApplyStats, error) {
	var del []Frontend
	for f := range d.applied {
		if _, ok := t[f]; !ok {
			del = append(del, f)
		}
	}
	return d.Patch(t, del)
}

// Patch sets the frontends of set and deletes those of del, leaving every
// other one as it is: an update costs what changed, not what the node holds.
// A frontend whose backends change gets them under a new generation id,
// then its map entry points at that id in one write, then the old
// generation is deleted: a connect() sees either the old set or the new
// one, never a mix or a hole.
func (d *Datapath) Patch(set Table, del []Frontend) (ApplyStats, error) {
	var st ApplyStats
	var errs []error
	for f, svc := range set {
		changed, err := d.set(f, svc)
		if changed {
			st.Changed++
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
		}
	}
	for _, f := range del {
		cur, ok := d.applied[f]
		if !ok {
			continue
		}
		st.Changed++
		if err := d.m(mapServices).Delete(keyOf(f)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
			continue
		}
		d.deleteBackends(cur.id, len(cur.svc.Backends))
		if cur.svc.Affinity > 0 {
			d.purgeAffinity(f, Service{})
		}
		d.forget(f)
	}
	st.Frontends, st.Backends = len(d.applied), d.backends
	return st, errors.Join(errs...)
}

// set writes one frontend; changed is false when the maps held it already.
func (d *Datapath) set(f Frontend, svc Service) (changed bool, err error) {
	cur, ok := d.applied[f]
	if ok && equalService(cur.svc, svc) {
		return false, nil
	}
	id := cur.id
	if !ok || !slices.Equal(cur.svc.Backends, svc.Backends) {
		id = d.newID()
		if err := d.writeBackends(id, svc.Backends); err != nil {
			d.deleteBackends(id, len(svc.Backends))
			return true, err
		}
	}
	v := serviceValue{ID: id, Count: uint32(len(svc.Backends)), AffinitySeconds: uint32(svc.Affinity / time.Second)}
	if svc.Affinity > 0 && v.AffinitySeconds == 0 {
		v.AffinitySeconds = 1
	}
	if err := d.m(mapServices).Put(keyOf(f), v); err != nil {
		if id != cur.id {
			d.deleteBackends(id, len(svc.Backends))
		}
		return true, err
	}
	if ok && id != cur.id {
		d.deleteBackends(cur.id, len(cur.svc.Backends))
	}
	if ok && cur.svc.Affinity > 0 {
		d.purgeAffinity(f, svc)
	}
	d.forget(f)
	d.record(f, appliedService{id: id, svc: svc})
	return true, nil
}

func (d *Datapath) record(f Frontend, a appliedService) {
	d.applied[f] = a
	d.usedIDs[a.id] = true
	d.backends += len(a.svc.Backends)
}

func (d *Datapath) forget(f Frontend) {
	if a, ok := d.applied[f]; ok {
		delete(d.applied, f)
		delete(d.usedIDs, a.id)
		d.backends -= len(a.svc.Backends)
	}
}

func equalService(a, b Service) bool {
	return a.Affinity == b.Affinity && slices.Equal(a.Backends, b.Backends)
}

// newID is a generation id no frontend uses now.
func (d *Datapath) newID() uint32 {
	for d.usedIDs[d.nextID] {
		d.nextID++
	}
	id := d.nextID
	d.nextID++
	return id
}

func (d *Datapath) writeBackends(id uint32, bs []Backend) error {
	if len(bs) == 0 {
		return nil
	}
	keys := make([]backendKey, len(bs))
	vals := make([]backendValue, len(bs))
	for i, b := range bs {
		keys[i] = backendKey{ID: id, Index: uint32(i)}
		vals[i] = valueOf(b)
	}
	if _, err := d.m(mapBackends).BatchUpdate(keys, vals, nil); err == nil {
		return nil
	} else if !errors.Is(err, ebpf.ErrNotSupported) {
		return err
	}
	for i := range keys {
		if err := d.m(mapBackends).Put(keys[i], vals[i]); err != nil {
			return err
		}
	}
	return nil
}

func (d *Datapath) deleteBackends(id uint32, n int) {
	for i := 0; i < n; i++ {
		_ = d.m(mapBackends).Delete(backendKey{ID: id, Index: uint32(i)})
	}
}

// purgeAffinity deletes the affinity entries of f that point at a backend
// svc no longer has, so that no client is sent to a removed endpoint.
func (d *Datapath) purgeAffinity(f Frontend, svc Service) {
	sk := keyOf(f)
	keep := map[backendValue]bool{}
	for _, b := range svc.Backends {
		keep[valueOf(b)] = true
	}
	var stale []affinityKey
	var k affinityKey
	var v affinityValue
	it := d.m(mapAffinity).Iterate()
	for it.Next(&k, &v) {
		if k.Service == sk && !keep[v.Backend] {
			stale = append(stale, k)
		}
	}
	for _, k := range stale {
		_ = d.m(mapAffinity).Delete(k)
	}
}

// Entry is one frontend as the maps hold it, for `debug services`.
type Entry struct {
	Frontend   Frontend
	Generation uint32
	Backends   []Backend
	Affinity   time.Duration
}

// Dump reads the maps back (not the agent's memory): what the programs see.
func Dump(pinDir string) ([]Entry, map[string]int, error) {
	maps := map[string]*ebpf.Map{}
	defer func() {
		for _, m := range maps {
			m.Close()
		}
	}()
	for name := range mapSpecs() {
		m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, name), &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			return nil, nil, fmt.Errorf("opening %s: %w", filepath.Join(pinDir, name), err)
		}
		maps[name] = m
	}
	var out []Entry
	var k serviceKey
	var v serviceValue
	it := maps[mapServices].Iterate()
	for it.Next(&k, &v) {
		e := Entry{Frontend: frontendOf(k), Generation: v.ID, Affinity: time.Duration(v.AffinitySeconds) * time.Second}
		for i := uint32(0); i < v.Count; i++ {
			var b backendValue
			if err := maps[mapBackends].Lookup(backendKey{ID: v.ID, Index: i}, &b); err == nil {
				e.Backends = append(e.Backends, backendOf(b))
			}
		}
		out = append(out, e)
	}
	if err := it.Err(); err != nil {
		return nil, nil, err
	}
	sort.Slice(out, func(i, j int) bool { return lessFrontend(out[i].Frontend, out[j].Frontend) })
	sizes := map[string]int{}
	for name, m := range maps {
		sizes[name] = countEntries(m)
	}
	return out, sizes, nil
}

// MapSizes counts the entries of the named maps (all when none is named),
// walking each: a syscall per entry.
func (d *Datapath) MapSizes(names ...string) map[string]int {
	sizes := map[string]int{}
	for name, m := range d.coll.Maps {
		if len(names) == 0 || slices.Contains(names, name) {
			sizes[name] = countEntries(m)
		}
	}
	return sizes
}

func countEntries(m *ebpf.Map) int {
	n := 0
	k, v := make([]byte, m.KeySize()), make([]byte, m.ValueSize())
	it := m.Iterate()
	for it.Next(k, v) {
		n++
	}
	return n
}

func lessFrontend(a, b Frontend) bool {
	if c := a.Addr.Compare(b.Addr); c != 0 {
		return c < 0
	}
	if a.Port != b.Port {
		return a.Port < b.Port
	}
	return a.Proto < b.Proto
}

func keyOf(f Frontend) serviceKey {
	return serviceKey{Addr: f.Addr.As4(), Port: [2]byte{byte(f.Port >> 8), byte(f.Port)}, Proto: f.Proto}
}

func frontendOf(k serviceKey) Frontend {
	return Frontend{Addr: netip.AddrFrom4(k.Addr), Port: uint16(k.Port[0])<<8 | uint16(k.Port[1]), Proto: k.Proto}
}

func valueOf(b Backend) backendValue {
	return backendValue{Addr: b.Addr().As4(), Port: [2]byte{byte(b.Port() >> 8), byte(b.Port())}}
}

func backendOf(v backendValue) Backend {
	return netip.AddrPortFrom(netip.AddrFrom4(v.Addr), uint16(v.Port[0])<<8|uint16(v.Port[1]))
}
