package datapath

import (
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// The programs are written with cilium/ebpf's asm package rather than in C
// through bpf2go: they are four short straight-line programs over a handful
// of maps, so a C toolchain and committed object files would cost more than
// they save, and the builds stay free of clang.

// Map names; the maps are pinned under the pin directory with these names.
const (
	mapServices = "ks_svc"
	mapBackends = "ks_backend"
	mapAffinity = "ks_affinity"
	mapRevNAT   = "ks_revnat"
)

// Offsets in struct bpf_sock_addr (include/uapi/linux/bpf.h).
const (
	offUserIP4  = 4
	offUserPort = 24
	offProtocol = 36
)

// Map sizes. The hash maps allocate entries on demand (BPF_F_NO_PREALLOC);
// the LRU maps are preallocated, so they are kept small: an evicted
// reverse-translation entry only makes getpeername() show a backend's
// address instead of the Service's, and an evicted affinity entry only
// makes the next connection pick a backend anew.
const (
	maxServices = 65536  // frontends (address, port, protocol)
	maxBackends = 262144 // two generations of every frontend's backends
	maxAffinity = 16384
	maxRevNAT   = 65536
)

// Layouts shared with the programs. Addresses and ports are in network byte
// order, as in struct bpf_sock_addr.
//
//	service key   {addr [4]byte, port [2]byte, proto u8, pad u8}            8 bytes
//	service value {id u32, count u32, affinity_seconds u32, flags u32}      16 bytes
//	backend key   {id u32, index u32}                                       8 bytes
//	backend value {addr [4]byte, port [2]byte, pad [2]byte}                 8 bytes
//	affinity key  {netns_cookie u64, service key}                           16 bytes
//	affinity value{backend value, last_used_ns u64}                         16 bytes
//	revnat key    {socket_cookie u64, backend value}                        16 bytes
//	revnat value  service key                                               8 bytes
type serviceKey struct {
	Addr  [4]byte
	Port  [2]byte
	Proto uint8
	_     uint8
}

type serviceValue struct {
	ID              uint32
	Count           uint32
	AffinitySeconds uint32
	Flags           uint32
}

type backendKey struct {
	ID    uint32
	Index uint32
}

type backendValue struct {
	Addr [4]byte
	Port [2]byte
	_    [2]byte
}

type affinityKey struct {
	NetnsCookie uint64
	Service     serviceKey
}

type affinityValue struct {
	Backend  backendValue
	LastUsed uint64
}

type revNATKey struct {
	SocketCookie uint64
	Backend      backendValue
}

func mapSpecs() map[string]*ebpf.MapSpec {
	return map[string]*ebpf.MapSpec{
		mapServices: {Name: mapServices, Type: ebpf.Hash, KeySize: 8, ValueSize: 16, MaxEntries: maxServices,
			Flags: unix.BPF_F_NO_PREALLOC, Pinning: ebpf.PinByName},
		mapBackends: {Name: mapBackends, Type: ebpf.Hash, KeySize: 8, ValueSize: 8, MaxEntries: maxBackends,
			Flags: unix.BPF_F_NO_PREALLOC, Pinning: ebpf.PinByName},
		mapAffinity: {Name: mapAffinity, Type: ebpf.LRUHash, KeySize: 16, ValueSize: 16, MaxEntries: maxAffinity,
			Pinning: ebpf.PinByName},
		mapRevNAT: {Name: mapRevNAT, Type: ebpf.LRUHash, KeySize: 16, ValueSize: 8, MaxEntries: maxRevNAT,
			Pinning: ebpf.PinByName},
	}
}

// Program names; the links attaching them are pinned as link_NAME.
const (
	progConnect4    = "ks_connect4"
	progSendmsg4    = "ks_sendmsg4"
	progRecvmsg4    = "ks_recvmsg4"
	progGetpeername = "ks_getpeername4"
)

var progAttach = map[string]ebpf.AttachType{
	progConnect4:    ebpf.AttachCGroupInet4Connect,
	progSendmsg4:    ebpf.AttachCGroupUDP4Sendmsg,
	progRecvmsg4:    ebpf.AttachCGroupUDP4Recvmsg,
	progGetpeername: ebpf.AttachCgroupInet4GetPeername,
}

const license = "Dual BSD/GPL"

func programSpecs() map[string]*ebpf.ProgramSpec {
	specs := map[string]*ebpf.ProgramSpec{}
	for name, attach := range progAttach {
		var insns asm.Instructions
		switch attach {
		case ebpf.AttachCGroupInet4Connect, ebpf.AttachCGroupUDP4Sendmsg:
			insns = translate()
		default:
			insns = reverse()
		}
		specs[name] = &ebpf.ProgramSpec{
			Name: name, Type: ebpf.CGroupSockAddr, AttachType: attach,
			License: license, Instructions: insns,
		}
	}
	return specs
}

// Stack slots of translate (offsets from R10).
const (
	stSvcKey   = -8  // service key; also the revnat value
	stBackKey  = -16 // backend key
	stAffKey   = -32 // affinity key (cookie at -32, service key at -24)
	stAffVal   = -48 // affinity value (backend at -48, last used at -40)
	stRevKey   = -64 // revnat key (cookie at -64, backend at -56)
	nsPerSec   = 1_000_000_000
	econnrefus = 111
)

// lookup calls bpf_map_lookup_elem(map, FP+key): R0 is the value or 0.
func lookup(m string, key int16) []asm.Instruction {
	return []asm.Instruction{
		asm.LoadMapPtr(asm.R1, 0).WithReference(m),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, int32(key)),
		asm.FnMapLookupElem.Call(),
	}
}

// update calls bpf_map_update_elem(map, FP+key, FP+value, BPF_ANY).
func update(m string, key, value int16) []asm.Instruction {
	return []asm.Instruction{
		asm.LoadMapPtr(asm.R1, 0).WithReference(m),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, int32(key)),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, int32(value)),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnMapUpdateElem.Call(),
	}
}

// seq joins instruction runs.
func seq(runs ...[]asm.Instruction) asm.Instructions {
	var out asm.Instructions
	for _, r := range runs {
		out = append(out, r...)
	}
	return out
}

// translate is connect4 and sendmsg4: a destination that is a Service
// frontend becomes one of its backends (the client's affinity entry's when
// the Service has ClientIP affinity and the entry is fresh, else a random
// one); a frontend without backends fails the call with ECONNREFUSED, as
// a closed port does; anything else passes untouched. The chosen backend is
// remembered per socket so that recvmsg4 and getpeername4 can show the
// Service's address again.
//
// Registers kept across helper calls: R6 ctx, R7 service value, R8 backend count.
func translate() asm.Instructions {
	return seq([]asm.Instruction{
		asm.Mov.Reg(asm.R6, asm.R1),
		// service key from the destination
		asm.LoadMem(asm.R2, asm.R6, offUserIP4, asm.Word),
		asm.StoreMem(asm.RFP, stSvcKey, asm.R2, asm.Word),
		asm.LoadMem(asm.R2, asm.R6, offUserPort, asm.Word),
		asm.StoreMem(asm.RFP, stSvcKey+4, asm.R2, asm.Half),
		asm.LoadMem(asm.R2, asm.R6, offProtocol, asm.Word),
		asm.StoreMem(asm.RFP, stSvcKey+6, asm.R2, asm.Byte),
		asm.StoreImm(asm.RFP, stSvcKey+7, 0, asm.Byte),
	}, lookup(mapServices, stSvcKey), []asm.Instruction{
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.LoadMem(asm.R8, asm.R7, 4, asm.Word), // count
		asm.JEq.Imm(asm.R8, 0, "refuse"),
		asm.LoadMem(asm.R2, asm.R7, 8, asm.Word), // affinity seconds
		asm.JEq.Imm(asm.R2, 0, "pick"),

		// ClientIP affinity, keyed by the client's network namespace (a pod)
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.FnGetNetnsCookie.Call(),
		asm.StoreMem(asm.RFP, stAffKey, asm.R0, asm.DWord),
		asm.LoadMem(asm.R2, asm.RFP, stSvcKey, asm.DWord),
		asm.StoreMem(asm.RFP, stAffKey+8, asm.R2, asm.DWord),
	}, lookup(mapAffinity, stAffKey), []asm.Instruction{
		asm.JEq.Imm(asm.R0, 0, "pick"),
		asm.Mov.Reg(asm.R9, asm.R0),
		asm.FnKtimeGetNs.Call(),
		asm.LoadMem(asm.R2, asm.R9, 8, asm.DWord), // last used
		asm.Mov.Reg(asm.R3, asm.R0),
		asm.Sub.Reg(asm.R3, asm.R2),
		asm.LoadMem(asm.R4, asm.R7, 8, asm.Word),
		asm.Mul.Imm(asm.R4, nsPerSec),
		asm.JGT.Reg(asm.R3, asm.R4, "pick"), // expired
		asm.StoreMem(asm.R9, 8, asm.R0, asm.DWord),
		asm.LoadMem(asm.R2, asm.R9, 0, asm.DWord), // backend (addr, port, pad)
		asm.StoreMem(asm.RFP, stRevKey+8, asm.R2, asm.DWord),
		asm.Ja.Label("rewrite"),

		// a random backend of the service's current generation
		asm.FnGetPrandomU32.Call().WithSymbol("pick"),
		asm.Mod.Reg32(asm.R0, asm.R8),
		asm.LoadMem(asm.R2, asm.R7, 0, asm.Word), // id
		asm.StoreMem(asm.RFP, stBackKey, asm.R2, asm.Word),
		asm.StoreMem(asm.RFP, stBackKey+4, asm.R0, asm.Word),
	}, lookup(mapBackends, stBackKey), []asm.Instruction{
		asm.JEq.Imm(asm.R0, 0, "refuse"),
		asm.LoadMem(asm.R2, asm.R0, 0, asm.DWord),
		asm.StoreMem(asm.RFP, stRevKey+8, asm.R2, asm.DWord),
		asm.LoadMem(asm.R2, asm.R7, 8, asm.Word),
		asm.JEq.Imm(asm.R2, 0, "rewrite"),
		// remember it for the client
		asm.LoadMem(asm.R2, asm.RFP, stRevKey+8, asm.DWord),
		asm.StoreMem(asm.RFP, stAffVal, asm.R2, asm.DWord),
		asm.FnKtimeGetNs.Call(),
		asm.StoreMem(asm.RFP, stAffVal+8, asm.R0, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.FnGetNetnsCookie.Call(),
		asm.StoreMem(asm.RFP, stAffKey, asm.R0, asm.DWord),
		asm.LoadMem(asm.R2, asm.RFP, stSvcKey, asm.DWord),
		asm.StoreMem(asm.RFP, stAffKey+8, asm.R2, asm.DWord),
	}, update(mapAffinity, stAffKey, stAffVal), []asm.Instruction{

		// destination := backend; socket cookie + backend -> service
		asm.LoadMem(asm.R2, asm.RFP, stRevKey+8, asm.Word).WithSymbol("rewrite"),
		asm.StoreMem(asm.R6, offUserIP4, asm.R2, asm.Word),
		asm.LoadMem(asm.R2, asm.RFP, stRevKey+12, asm.Half),
		asm.StoreMem(asm.R6, offUserPort, asm.R2, asm.Word),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.FnGetSocketCookie.Call(),
		asm.StoreMem(asm.RFP, stRevKey, asm.R0, asm.DWord),
	}, update(mapRevNAT, stRevKey, stSvcKey), []asm.Instruction{
		asm.Mov.Imm(asm.R0, 1).WithSymbol("pass"),
		asm.Return(),

		asm.Mov.Imm(asm.R1, -econnrefus).WithSymbol("refuse"),
		asm.FnSetRetval.Call(),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	})
}

// reverse is recvmsg4 and getpeername4: a peer address that this socket
// reached through a Service is shown as the Service's address.
func reverse() asm.Instructions {
	return seq([]asm.Instruction{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.FnGetSocketCookie.Call(),
		asm.StoreMem(asm.RFP, -16, asm.R0, asm.DWord),
		asm.LoadMem(asm.R2, asm.R6, offUserIP4, asm.Word),
		asm.StoreMem(asm.RFP, -8, asm.R2, asm.Word),
		asm.LoadMem(asm.R2, asm.R6, offUserPort, asm.Word),
		asm.StoreMem(asm.RFP, -4, asm.R2, asm.Word), // port and two zero pad bytes
	}, lookup(mapRevNAT, -16), []asm.Instruction{
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R2, asm.R0, 0, asm.Word),
		asm.StoreMem(asm.R6, offUserIP4, asm.R2, asm.Word),
		asm.LoadMem(asm.R2, asm.R0, 4, asm.Half),
		asm.StoreMem(asm.R6, offUserPort, asm.R2, asm.Word),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("out"),
		asm.Return(),
	})
}
