package seccompbpf

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Seccomp return values, spelled out independently of the package.
const (
	retKillProcess = 0x80000000
	retKillThread  = 0x00000000
	retTrap        = 0x00030000
	retErrno       = 0x00050000
	retTrace       = 0x7ff00000
	retLog         = 0x7ffc0000
	retAllow       = 0x7fff0000
)

// capabilities is the list vmdriver/container/spec.go gives sandboxes
// (Docker's default set minus NET_RAW and MKNOD).
var capabilities = []string{
	"CAP_CHOWN",
	"CAP_DAC_OVERRIDE",
	"CAP_FOWNER",
	"CAP_FSETID",
	"CAP_KILL",
	"CAP_SETGID",
	"CAP_SETUID",
	"CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT",
	"CAP_AUDIT_WRITE",
	"CAP_SETFCAP",
}

// syscallNumbers is the native syscall table (nil on a GOARCH without one).
var syscallNumbers = func() map[string]uint32 {
	if native == nil {
		return nil
	}
	return native.numbers
}()

// arches are the architectures with a syscall table; the tests that need no
// kernel check each of them on every host.
var arches = []*arch{archAMD64, archARM64}

// requireNative skips a test that compiles for, or runs on, the native
// architecture when this GOARCH has no syscall table.
func requireNative(tb testing.TB) {
	tb.Helper()
	if !Supported() {
		tb.Skipf("seccompbpf has syscall tables for amd64 and arm64 only; this test needs the native one and GOARCH is %s", runtime.GOARCH)
	}
}

// sandboxSpec has the capabilities the container driver gives sandboxes, which
// decide some of the default profile's rules.
var sandboxSpec = &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{
	Bounding:  capabilities,
	Effective: capabilities,
	Permitted: capabilities,
}}}

// seccompArch is the profile's Architectures list for a GOARCH.
func seccompArch(goarch string) []specs.Arch {
	switch goarch {
	case "amd64":
		return []specs.Arch{specs.ArchX86_64}
	case "arm64":
		return []specs.Arch{specs.ArchAARCH64}
	}
	return nil
}

// defaultProfile builds the profile the container driver uses, the way it
// does: moby's default profile for this host.
func defaultProfile(tb testing.TB) *specs.LinuxSeccomp {
	tb.Helper()
	sc, err := seccomp.GetDefaultProfile(sandboxSpec)
	if err != nil {
		tb.Fatal(err)
	}
	sc.Architectures = seccompArch(runtime.GOARCH)
	return sc
}

// profileFor builds the default profile that defaultProfile builds on a host
// of GOARCH goarch, on any host. moby keeps or drops a rule by comparing its
// includes/excludes arches with runtime.GOARCH, so those conditions are
// decided here for goarch and removed first; everything else (capabilities,
// kernel version) is still moby's doing. TestProfileForMatchesMoby checks that
// for the native architecture this is exactly defaultProfile.
func profileFor(tb testing.TB, goarch string) *specs.LinuxSeccomp {
	tb.Helper()
	cfg := seccomp.DefaultProfile()
	kept := cfg.Syscalls[:0]
	for _, call := range cfg.Syscalls {
		if call.Includes != nil && len(call.Includes.Arches) > 0 {
			if !slices.Contains(call.Includes.Arches, goarch) {
				continue
			}
			call.Includes.Arches = nil
		}
		if call.Excludes != nil && len(call.Excludes.Arches) > 0 {
			if slices.Contains(call.Excludes.Arches, goarch) {
				continue
			}
			call.Excludes.Arches = nil
		}
		kept = append(kept, call)
	}
	cfg.Syscalls = kept
	cfg.ArchMap = nil // Architectures is set below, as defaultProfile sets it
	b, err := json.Marshal(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	sc, err := seccomp.LoadProfile(string(b), sandboxSpec)
	if err != nil {
		tb.Fatal(err)
	}
	sc.Architectures = seccompArch(goarch)
	return sc
}

// auditOf is the AUDIT_ARCH_* value of an architecture, spelled out
// independently of the package.
func auditOf(tb testing.TB, goarch string) uint32 {
	tb.Helper()
	switch goarch {
	case "amd64":
		return 0xc000003e
	case "arm64":
		return 0xc00000b7
	}
	tb.Fatalf("no audit architecture known for %s", goarch)
	return 0
}

func nativeAudit(tb testing.TB) uint32 {
	tb.Helper()
	requireNative(tb)
	return auditOf(tb, runtime.GOARCH)
}

// data is the part of struct seccomp_data the filters look at.
type data struct {
	nr   uint32
	arch uint32
	args [6]uint64
}

// ---- reference interpreter ----

func refAction(act specs.LinuxSeccompAction, errnoRet *uint) uint32 {
	errno := uint32(1) // EPERM
	if errnoRet != nil {
		errno = uint32(*errnoRet)
	}
	switch act {
	case specs.ActAllow:
		return retAllow
	case specs.ActErrno:
		return retErrno | errno
	case specs.ActTrace:
		return retTrace | errno
	case specs.ActKill, specs.ActKillThread:
		return retKillThread
	case specs.ActKillProcess:
		return retKillProcess
	case specs.ActTrap:
		return retTrap
	case specs.ActLog:
		return retLog
	}
	panic("reference: unexpected action " + string(act))
}

func refArg(a specs.LinuxSeccompArg, v uint64) bool {
	switch a.Op {
	case specs.OpEqualTo:
		return v == a.Value
	case specs.OpNotEqual:
		return v != a.Value
	case specs.OpLessThan:
		return v < a.Value
	case specs.OpLessEqual:
		return v <= a.Value
	case specs.OpGreaterEqual:
		return v >= a.Value
	case specs.OpGreaterThan:
		return v > a.Value
	case specs.OpMaskedEqual:
		return v&a.Value == a.ValueTwo
	}
	panic("reference: unexpected operator " + string(a.Op))
}

// refRuleMatches: all arguments must hold, except that when an index repeats
// (runc's fallback) any one of them is enough.
func refRuleMatches(args []specs.LinuxSeccompArg, d data) bool {
	repeated := false
	for i := range args {
		for j := range i {
			if args[i].Index == args[j].Index {
				repeated = true
			}
		}
	}
	if repeated {
		for _, a := range args {
			if refArg(a, d.args[a.Index]) {
				return true
			}
		}
		return false
	}
	for _, a := range args {
		if !refArg(a, d.args[a.Index]) {
			return false
		}
	}
	return true
}

func refNames(r specs.LinuxSyscall, numbers map[string]uint32, nr uint32) bool {
	for _, n := range r.Names {
		if num, ok := numbers[n]; ok && num == nr {
			return true
		}
	}
	return false
}

// reference evaluates the profile on d by walking its definition, for the
// native architecture.
func reference(tb testing.TB, p *specs.LinuxSeccomp, d data) uint32 {
	requireNative(tb)
	return referenceOn(tb, p, native, d)
}

// referenceOn is reference for architecture a; only a's name and syscall table
// are used, the rest is spelled out here.
func referenceOn(tb testing.TB, p *specs.LinuxSeccomp, a *arch, d data) uint32 {
	if d.arch != auditOf(tb, a.name) {
		return retKillProcess
	}
	x32 := a.name == "amd64" // x86_64's entry also serves x32 numbers
	if x32 && d.nr == 0xffffffff {
		return refAction(p.DefaultAction, p.DefaultErrnoRet)
	}
	if x32 && d.nr >= 0x40000000 {
		return retKillProcess
	}
	def := refAction(p.DefaultAction, p.DefaultErrnoRet)
	// Numbers above every syscall the profile names: ENOSYS (runc's stub),
	// unless the default allows or already is ENOSYS.
	enosys := retErrno | uint32(unix.ENOSYS)
	if def != retAllow && def != enosys {
		highest, any := uint32(0), false
		for _, r := range p.Syscalls {
			for _, n := range r.Names {
				if num, ok := a.numbers[n]; ok && (!any || num > highest) {
					highest, any = num, true
				}
			}
		}
		if any && d.nr > highest {
			return enosys
		}
	}
	// An unconditional rule for the syscall decides (the compiler refuses
	// profiles where another rule disagrees with it).
	for _, r := range p.Syscalls {
		act := refAction(r.Action, r.ErrnoRet)
		if act != def && len(r.Args) == 0 && refNames(r, a.numbers, d.nr) {
			return act
		}
	}
	// Otherwise the first conditional rule that matches, in profile order.
	for _, r := range p.Syscalls {
		act := refAction(r.Action, r.ErrnoRet)
		if act != def && len(r.Args) > 0 && refNames(r, a.numbers, d.nr) && refRuleMatches(r.Args, d) {
			return act
		}
	}
	return def
}

// ---- BPF evaluation with x/net/bpf ----

type vm struct {
	v *bpf.VM
}

func newVM(tb testing.TB, prog []unix.SockFilter) *vm {
	tb.Helper()
	raw := make([]bpf.RawInstruction, len(prog))
	for i, in := range prog {
		raw[i] = bpf.RawInstruction{Op: in.Code, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	insts, ok := bpf.Disassemble(raw)
	if !ok {
		tb.Fatalf("program has instructions x/net/bpf cannot decode: %v", insts)
	}
	v, err := bpf.NewVM(insts)
	if err != nil {
		tb.Fatalf("x/net/bpf rejects the program: %v", err)
	}
	return &vm{v}
}

// run evaluates the filter on d. x/net/bpf loads words in network order, so
// every 32-bit word the filter loads is stored big-endian at its offset; the
// filter then sees the values a little-endian kernel would show it.
func (v *vm) run(tb testing.TB, d data) uint32 {
	tb.Helper()
	var b [64]byte
	binary.BigEndian.PutUint32(b[0:], d.nr)
	binary.BigEndian.PutUint32(b[4:], d.arch)
	binary.BigEndian.PutUint32(b[8:], 0xdeadbeef) // instruction_pointer, low
	binary.BigEndian.PutUint32(b[12:], 0x7fff)    // instruction_pointer, high
	for i, a := range d.args {
		binary.BigEndian.PutUint32(b[16+8*i:], uint32(a))
		binary.BigEndian.PutUint32(b[20+8*i:], uint32(a>>32))
	}
	r, err := v.v.Run(b[:])
	if err != nil {
		tb.Fatalf("vm: %v", err)
	}
	return uint32(r)
}

func mustCompile(tb testing.TB, p *specs.LinuxSeccomp) ([]unix.SockFilter, stats) {
	tb.Helper()
	requireNative(tb)
	return compileFor(tb, p, native)
}

// compileFor compiles p for architecture a, on any host.
func compileFor(tb testing.TB, p *specs.LinuxSeccomp, a *arch) ([]unix.SockFilter, stats) {
	tb.Helper()
	prog, st, err := compile(p, a)
	if err != nil {
		tb.Fatal(err)
	}
	if len(prog) > maxInsns {
		tb.Fatalf("%d instructions", len(prog))
	}
	return prog, st
}

func syscallName(nr uint32) string {
	var names []string
	for n, num := range syscallNumbers {
		if num == nr {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return fmt.Sprintf("#%d", nr)
	}
	return strings.Join(names, "/")
}

// ---- the default profile ----

// argPatterns are argument vectors for the exhaustive default-profile check:
// values the profile's rules single out (personality, clone flags, socket
// domains), their neighbours and high-word variants.
func argPatterns() [][6]uint64 {
	ns := uint64(unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWUSER |
		unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP)
	vals := []uint64{
		0, 1, 7, 8, 9, 0x20000, 0x20008, 0x1ffff, 0x20009,
		0xfffffffe, 0xffffffff, 0x1_0000_0000, 0x1_0000_0008, 0x1_ffff_ffff, 0xffffffff_ffffffff,
		0xffffffff_00000000, 0x8000_0000_0000_0008,
		unix.CLONE_NEWUSER, unix.CLONE_NEWNS, unix.CLONE_NEWNET, unix.CLONE_NEWPID, unix.CLONE_NEWCGROUP,
		unix.CLONE_NEWUTS, unix.CLONE_NEWIPC, ns,
		uint64(unix.SIGCHLD), unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_THREAD,
		1<<32 | uint64(unix.SIGCHLD), 1<<40 | unix.CLONE_NEWUSER, ^ns, ^ns & 0xffffffff,
		unix.AF_INET6, unix.AF_NETLINK, unix.AF_PACKET, unix.AF_VSOCK, unix.AF_ALG, unix.AF_XDP, unix.AF_MCTP,
		unix.AF_MCTP + 1, 1<<32 | unix.AF_INET, 1<<63 | unix.AF_UNIX,
	}
	for i := uint64(0); i <= 50; i++ {
		vals = append(vals, i)
	}
	var out [][6]uint64
	for _, v := range vals {
		out = append(out, [6]uint64{v}, [6]uint64{0, v}, [6]uint64{v, v, v, v, v, v})
	}
	return out
}

// TestDefaultProfileMatchesReference runs the default profile of each
// architecture, compiled for it, against the reference on every syscall number
// below 1024 with many argument vectors. It needs no kernel, so both
// architectures are checked on any host.
func TestDefaultProfileMatchesReference(t *testing.T) {
	for _, a := range arches {
		t.Run(a.name, func(t *testing.T) {
			p := profileFor(t, a.name)
			prog, st := compileFor(t, p, a)
			t.Logf("default profile: %d instructions, %d intervals, tree depth %d, %d argument blocks, %d relaxation jumps",
				st.insns, st.intervals, st.depth, st.blocks, st.trampolines)
			v := newVM(t, prog)
			audit := auditOf(t, a.name)
			patterns := argPatterns()
			counts := map[uint32]int{}
			for nr := uint32(0); nr < 1024; nr++ {
				for _, args := range patterns {
					d := data{nr: nr, arch: audit, args: args}
					got, want := v.run(t, d), referenceOn(t, p, a, d)
					if got != want {
						t.Fatalf("syscall %d args %#x: filter returns %#x, reference %#x", nr, args, got, want)
					}
					counts[got]++
				}
			}
			if counts[retAllow] == 0 || counts[retErrno|1] == 0 || counts[retErrno|uint32(unix.ENOSYS)] == 0 {
				t.Fatalf("outcomes %v: expected allow, EPERM and ENOSYS", counts)
			}
		})
	}
}

// TestProfileForMatchesMoby: profileFor, which the golden and reference tests
// use to get another architecture's profile, gives exactly moby's own profile
// for the native architecture.
func TestProfileForMatchesMoby(t *testing.T) {
	requireNative(t)
	got, want := profileFor(t, runtime.GOARCH), defaultProfile(t)
	gb, _ := json.MarshalIndent(got, "", " ")
	wb, _ := json.MarshalIndent(want, "", " ")
	if string(gb) != string(wb) {
		t.Fatalf("profileFor(%s) differs from moby's default profile:\n%s", runtime.GOARCH, lineDiff(string(wb), string(gb)))
	}
	if len(got.Syscalls) == 0 {
		t.Fatal("empty profile")
	}
}

// TestREADMEFilterFigures: the README states the size of the default filter on
// amd64 (the architecture its measurements were made on) and the most compares a
// syscall costs; they must be what the compiler produces, so they cannot drift.
func TestREADMEFilterFigures(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatalf("read the README: %v", err)
	}
	m := regexp.MustCompile(`(\d+) BPF instructions, a balanced search: at most (\d+) compares per syscall`).FindSubmatch(readme)
	if m == nil {
		t.Fatal(`README.md no longer says "N BPF instructions, a balanced search: at most M compares per syscall"; keep the figures and this test together`)
	}
	_, st := compileFor(t, profileFor(t, "amd64"), archAMD64)
	if got := fmt.Sprint(st.insns); string(m[1]) != got {
		t.Errorf("README.md says %s BPF instructions; the default amd64 filter has %s", m[1], got)
	}
	if got := fmt.Sprint(st.depth); string(m[2]) != got {
		t.Errorf("README.md says at most %s compares per syscall; the search tree's depth is %s", m[2], got)
	}
}

// TestDefaultProfileSpotChecks pins outcomes that matter, without the
// reference, so the reference and the compiler cannot agree on a mistake.
func TestDefaultProfileSpotChecks(t *testing.T) {
	prog, _ := mustCompile(t, defaultProfile(t))
	v := newVM(t, prog)
	audit := nativeAudit(t)
	eperm, enosys := uint32(retErrno|1), uint32(retErrno|uint32(unix.ENOSYS))
	for _, c := range []struct {
		name string
		nr   uint32
		args [6]uint64
		want uint32
	}{
		{"getpid", unix.SYS_GETPID, [6]uint64{}, retAllow},
		{"read", unix.SYS_READ, [6]uint64{0xffffffff_ffffffff}, retAllow},
		{"clone3", unix.SYS_CLONE3, [6]uint64{}, enosys},
		{"unshare", unix.SYS_UNSHARE, [6]uint64{unix.CLONE_NEWUSER}, eperm},
		{"mount", unix.SYS_MOUNT, [6]uint64{}, eperm},
		{"bpf", unix.SYS_BPF, [6]uint64{}, eperm},
		{"personality 0xffffffff", unix.SYS_PERSONALITY, [6]uint64{0xffffffff}, retAllow},
		{"personality 0x20008", unix.SYS_PERSONALITY, [6]uint64{0x20008}, retAllow},
		{"personality 0", unix.SYS_PERSONALITY, [6]uint64{0}, retAllow},
		{"personality 1", unix.SYS_PERSONALITY, [6]uint64{1}, eperm},
		{"personality 0x1_0000_0000", unix.SYS_PERSONALITY, [6]uint64{0x1_0000_0000}, eperm},
		{"personality 0x1_ffff_ffff", unix.SYS_PERSONALITY, [6]uint64{0x1_ffff_ffff}, eperm},
		{"personality 0xffffffff_00000008", unix.SYS_PERSONALITY, [6]uint64{0xffffffff_00000008}, eperm},
		{"clone SIGCHLD", unix.SYS_CLONE, [6]uint64{uint64(unix.SIGCHLD)}, retAllow},
		{"clone thread", unix.SYS_CLONE, [6]uint64{unix.CLONE_VM | unix.CLONE_THREAD | unix.CLONE_SIGHAND}, retAllow},
		{"clone NEWUSER", unix.SYS_CLONE, [6]uint64{unix.CLONE_NEWUSER | uint64(unix.SIGCHLD)}, eperm},
		{"clone NEWNS", unix.SYS_CLONE, [6]uint64{unix.CLONE_NEWNS}, eperm},
		{"clone NEWNET high bits", unix.SYS_CLONE, [6]uint64{1<<40 | unix.CLONE_NEWNET}, eperm},
		{"clone high bits only", unix.SYS_CLONE, [6]uint64{1 << 40}, retAllow},
		{"socket AF_UNIX", unix.SYS_SOCKET, [6]uint64{unix.AF_UNIX}, retAllow},
		{"socket AF_INET", unix.SYS_SOCKET, [6]uint64{unix.AF_INET}, retAllow},
		{"socket AF_INET6", unix.SYS_SOCKET, [6]uint64{unix.AF_INET6}, retAllow},
		{"socket AF_NETLINK", unix.SYS_SOCKET, [6]uint64{unix.AF_NETLINK}, retAllow},
		// The profile allows domains below the first gap with one LT rule.
		{"socket AF_UNSPEC", unix.SYS_SOCKET, [6]uint64{0}, retAllow},
		{"socket AF_VSOCK", unix.SYS_SOCKET, [6]uint64{unix.AF_VSOCK}, eperm},
		{"socket AF_ALG", unix.SYS_SOCKET, [6]uint64{unix.AF_ALG}, eperm},
		{"socket AF_INET high bit", unix.SYS_SOCKET, [6]uint64{1<<32 | unix.AF_INET}, eperm},
		// Newer than every syscall the profile names: ENOSYS, as with runc.
		{"unknown syscall 1000", 1000, [6]uint64{}, enosys},
		// -1 is how a tracer skips a call: never a kill.
		{"syscall -1", 0xffffffff, [6]uint64{}, map[bool]uint32{true: eperm, false: enosys}[runtime.GOARCH == "amd64"]},
	} {
		if got := v.run(t, data{nr: c.nr, arch: audit, args: c.args}); got != c.want {
			t.Errorf("%s: got %#x, want %#x", c.name, got, c.want)
		}
	}
}

func TestForeignArchAndX32(t *testing.T) {
	prog, _ := mustCompile(t, defaultProfile(t))
	v := newVM(t, prog)
	audit := nativeAudit(t)
	foreign := []uint32{
		0x40000003, // AUDIT_ARCH_I386
		0x40000028, // AUDIT_ARCH_ARM
		0xc000003e, // AUDIT_ARCH_X86_64
		0xc00000b7, // AUDIT_ARCH_AARCH64
		0xc00000f3, // AUDIT_ARCH_RISCV64
		0, 0xffffffff,
	}
	for _, arch := range foreign {
		if arch == audit {
			continue
		}
		for _, nr := range []uint32{0, 1, unix.SYS_GETPID, 39, 172, 0x40000027, 0xffffffff} {
			if got := v.run(t, data{nr: nr, arch: arch}); got != retKillProcess {
				t.Errorf("arch %#x nr %d: got %#x, want KILL_PROCESS", arch, nr, got)
			}
		}
	}
	if runtime.GOARCH != "amd64" {
		return
	}
	for _, nr := range []uint32{0x40000000, 0x40000000 | unix.SYS_GETPID, 0x40000000 | 512, 0x400001ff, 0x7fffffff, 0x80000000, 0xfffffffe} {
		if got := v.run(t, data{nr: nr, arch: audit}); got != retKillProcess {
			t.Errorf("x32 nr %#x: got %#x, want KILL_PROCESS", nr, got)
		}
	}
	if got := v.run(t, data{nr: 0xffffffff, arch: audit}); got != retErrno|1 {
		t.Errorf("nr -1 (a tracer skipping a call): got %#x, want the default action", got)
	}
	if got := v.run(t, data{nr: 0x3fffffff, arch: audit}); got != retErrno|uint32(unix.ENOSYS) {
		t.Errorf("nr 0x3fffffff: got %#x, want ENOSYS", got)
	}
}

// TestWithoutX32 compiles for an architecture without the x32 ABI (as arm64
// is), using this build's table, so that path runs on amd64 hosts too.
func TestWithoutX32(t *testing.T) {
	requireNative(t)
	a := *native
	a.x32 = false
	p := defaultProfile(t)
	prog, _, err := compile(p, &a)
	if err != nil {
		t.Fatal(err)
	}
	v := newVM(t, prog)
	for _, nr := range []uint32{0x40000000, 0x40000000 | unix.SYS_GETPID, 0xffffffff} {
		if got := v.run(t, data{nr: nr, arch: a.audit}); got != retErrno|uint32(unix.ENOSYS) {
			t.Errorf("nr %#x: got %#x, want ENOSYS (above every syscall the profile names)", nr, got)
		}
	}
	if got := v.run(t, data{nr: unix.SYS_GETPID, arch: a.audit}); got != retAllow {
		t.Errorf("getpid: got %#x", got)
	}
}

// ---- randomized synthetic profiles ----

var allOps = []specs.LinuxSeccompOperator{
	specs.OpEqualTo, specs.OpNotEqual, specs.OpLessThan, specs.OpLessEqual,
	specs.OpGreaterEqual, specs.OpGreaterThan, specs.OpMaskedEqual,
}

func randValue(r *rand.Rand) uint64 {
	switch r.IntN(10) {
	case 0:
		return 0
	case 1:
		return uint64(r.IntN(16))
	case 2:
		return 0xffffffff
	case 3:
		return 1 << 32
	case 4:
		return ^uint64(0)
	case 5:
		return uint64(r.Uint32()) // high word zero
	case 6:
		return uint64(r.Uint32()) << 32 // low word zero
	case 7:
		return uint64(r.Uint32())<<32 | 0xffffffff
	default:
		return r.Uint64()
	}
}

type randAction struct {
	act   specs.LinuxSeccompAction
	errno *uint
}

func randomAction(r *rand.Rand) randAction {
	u := func(v uint) *uint { return &v }
	switch r.IntN(9) {
	case 0:
		return randAction{act: specs.ActAllow}
	case 1:
		return randAction{act: specs.ActErrno}
	case 2:
		return randAction{act: specs.ActErrno, errno: u(uint(r.IntN(4096)))}
	case 3:
		return randAction{act: specs.ActKillProcess}
	case 4:
		return randAction{act: specs.ActKillThread}
	case 5:
		return randAction{act: specs.ActKill}
	case 6:
		return randAction{act: specs.ActTrap}
	case 7:
		return randAction{act: specs.ActLog}
	default:
		return randAction{act: specs.ActTrace, errno: u(uint(r.IntN(100)))}
	}
}

func randomArgs(r *rand.Rand, opCounter *int) []specs.LinuxSeccompArg {
	n := 1 + r.IntN(4)
	args := make([]specs.LinuxSeccompArg, n)
	used := map[uint]bool{}
	for i := range args {
		idx := uint(r.IntN(6))
		// Mostly distinct indexes (ANDed); sometimes a repeat (runc's OR).
		for used[idx] && r.IntN(4) != 0 {
			idx = uint(r.IntN(6))
		}
		used[idx] = true
		op := allOps[*opCounter%len(allOps)]
		*opCounter++
		a := specs.LinuxSeccompArg{Index: idx, Value: randValue(r), Op: op}
		if op == specs.OpMaskedEqual {
			switch r.IntN(4) {
			case 0:
				a.ValueTwo = a.Value & randValue(r)
			case 1:
				a.ValueTwo = 0
			case 2:
				a.ValueTwo = a.Value
			default:
				a.ValueTwo = randValue(r) // possibly unsatisfiable
			}
		}
		args[i] = a
	}
	return args
}

// randomProfile builds a profile over a random set of syscalls. Syscalls
// with an unconditional rule get no rule with another non-default action, so
// the profile is valid.
func randomProfile(r *rand.Rand, names []string, nsys, maxRules int) *specs.LinuxSeccomp {
	def := randomAction(r)
	p := &specs.LinuxSeccomp{DefaultAction: def.act, DefaultErrnoRet: def.errno}
	perm := r.Perm(len(names))
	chosen := make([]string, 0, nsys)
	for _, i := range perm[:nsys] {
		chosen = append(chosen, names[i])
	}
	half := len(chosen) / 3
	uncond, condNames := chosen[:half], chosen[half:]
	opCounter := r.IntN(len(allOps))
	for len(uncond) > 0 {
		k := min(len(uncond), 1+r.IntN(4))
		a := randomAction(r)
		p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{Names: uncond[:k], Action: a.act, ErrnoRet: a.errno})
		if r.IntN(3) == 0 {
			// The same action again, conditionally: the unconditional rule wins.
			p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{Names: uncond[:1], Action: a.act, ErrnoRet: a.errno, Args: randomArgs(r, &opCounter)})
		}
		uncond = uncond[k:]
	}
	for len(condNames) > 0 {
		k := min(len(condNames), 1+r.IntN(3))
		group := condNames[:k]
		condNames = condNames[k:]
		// One action per syscall: conditional rules with different actions
		// are refused (libseccomp's order among them is its own).
		ga := randomAction(r)
		for range 1 + r.IntN(maxRules) {
			a := ga
			if r.IntN(8) == 0 {
				a = def // dropped, as runc does
			}
			rule := specs.LinuxSyscall{Names: group, Action: a.act, ErrnoRet: a.errno, Args: randomArgs(r, &opCounter)}
			if r.IntN(3) == 0 {
				rule.Names = group[:1]
			}
			p.Syscalls = append(p.Syscalls, rule)
		}
		if r.IntN(6) == 0 {
			// An unconditional rule with the default action is dropped too.
			p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{Names: group[:1], Action: def.act, ErrnoRet: def.errno})
		}
	}
	if r.IntN(4) == 0 {
		p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{Names: []string{"no_such_syscall"}, Action: specs.ActAllow})
	}
	return p
}

// boundaryValues are argument values around every constant in the profile.
func boundaryValues(r *rand.Rand, p *specs.LinuxSeccomp) []uint64 {
	set := map[uint64]bool{0: true, 1: true, 0xffffffff: true, 1 << 32: true, ^uint64(0): true}
	for _, s := range p.Syscalls {
		for _, a := range s.Args {
			for _, v := range []uint64{a.Value, a.ValueTwo} {
				hi, lo := v>>32, v&0xffffffff
				set[v] = true
				set[v-1] = true
				set[v+1] = true
				set[v^1<<32] = true
				set[hi<<32] = true
				set[hi<<32|0xffffffff] = true
				set[lo] = true
				set[0xffffffff<<32|lo] = true
				set[(hi+1)<<32|lo] = true
				set[(hi-1)<<32|lo] = true
			}
			if a.Op == specs.OpMaskedEqual {
				set[a.ValueTwo|^a.Value] = true
				set[a.ValueTwo&a.Value] = true
				if a.Value != 0 {
					low := a.Value & -a.Value
					set[a.ValueTwo^low] = true
					high := uint64(1) << (63 - uint(leadingZeros(a.Value)))
					set[a.ValueTwo^high] = true
				}
			}
		}
	}
	out := make([]uint64, 0, len(set)+4)
	for v := range set {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	for range 4 {
		out = append(out, r.Uint64())
	}
	return out
}

func leadingZeros(v uint64) int {
	n := 0
	for v&(1<<63) == 0 && n < 64 {
		v <<= 1
		n++
	}
	return n
}

func tableNames() []string {
	names := make([]string, 0, len(syscallNumbers))
	for n := range syscallNumbers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// checkRandomInputs compares the filter with the reference on the profile's
// syscalls and their neighbours, with arguments drawn from the boundaries.
func checkRandomInputs(t *testing.T, r *rand.Rand, p *specs.LinuxSeccomp, v *vm, perSyscall int) {
	t.Helper()
	audit := nativeAudit(t)
	vals := boundaryValues(r, p)
	nrs := map[uint32]bool{}
	for _, s := range p.Syscalls {
		for _, n := range s.Names {
			if nr, ok := syscallNumbers[n]; ok {
				nrs[nr] = true
				nrs[nr+1] = true
				if nr > 0 {
					nrs[nr-1] = true
				}
			}
		}
	}
	for range 5 {
		nrs[uint32(r.IntN(1024))] = true
	}
	for nr := range nrs {
		for range perSyscall {
			var d data
			d.nr, d.arch = nr, audit
			for i := range d.args {
				if r.IntN(3) == 0 {
					d.args[i] = r.Uint64()
				} else {
					d.args[i] = vals[r.IntN(len(vals))]
				}
			}
			got, want := v.run(t, d), reference(t, p, d)
			if got != want {
				t.Fatalf("syscall %s args %#x: filter returns %#x, reference %#x\nprofile: %+v", syscallName(nr), d.args, got, want, p.Syscalls)
			}
		}
	}
}

func TestRandomProfiles(t *testing.T) {
	requireNative(t)
	names := tableNames()
	iterations := 300
	if testing.Short() {
		iterations = 50
	}
	for seed := range uint64(iterations) {
		r := rand.New(rand.NewPCG(seed, 0x5ecc0))
		p := randomProfile(r, names, 1+r.IntN(40), 6)
		prog, _ := mustCompile(t, p)
		checkRandomInputs(t, r, p, newVM(t, prog), 300)
	}
}

// TestLongJumps uses profiles big enough that conditional jumps cannot reach
// their targets directly and must be relaxed.
func TestLongJumps(t *testing.T) {
	requireNative(t)
	names := tableNames()
	r := rand.New(rand.NewPCG(7, 7))

	// Many syscalls with argument blocks: tree leaves jump far into the blocks.
	p := randomProfile(r, names, 250, 3)
	prog, st := mustCompile(t, p)
	t.Logf("many blocks: %d instructions, depth %d, %d relaxation jumps", st.insns, st.depth, st.trampolines)
	if st.trampolines == 0 {
		t.Fatal("expected relaxed jumps")
	}
	checkRandomInputs(t, r, p, newVM(t, prog), 60)

	// One syscall with a long rule list: the rules jump far to the returns.
	opCounter := 0
	p = &specs.LinuxSeccomp{DefaultAction: specs.ActErrno}
	for range 90 {
		// One action for all (rules of different actions are refused).
		a := randAction{act: specs.ActAllow}
		args := make([]specs.LinuxSeccompArg, 6)
		for j := range args {
			args[j] = specs.LinuxSeccompArg{Index: uint(j), Op: allOps[opCounter%len(allOps)], Value: randValue(r), ValueTwo: randValue(r)}
			opCounter++
		}
		p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{Names: []string{"ioctl"}, Action: a.act, ErrnoRet: a.errno, Args: args})
	}
	p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{Names: []string{"read", "write"}, Action: specs.ActAllow})
	prog, st = mustCompile(t, p)
	t.Logf("long block: %d instructions, %d relaxation jumps", st.insns, st.trampolines)
	if st.trampolines == 0 {
		t.Fatal("expected relaxed jumps")
	}
	v := newVM(t, prog)
	checkRandomInputs(t, r, p, v, 3000)
	// Make each rule match in turn, so every rule's far jump is taken.
	for i, s := range p.Syscalls[:90] {
		var d data
		d.nr, d.arch = syscallNumbers["ioctl"], nativeAudit(t)
		for _, a := range s.Args {
			switch a.Op {
			case specs.OpEqualTo, specs.OpLessEqual, specs.OpGreaterEqual:
				d.args[a.Index] = a.Value
			case specs.OpNotEqual:
				d.args[a.Index] = ^a.Value
			case specs.OpLessThan:
				d.args[a.Index] = a.Value - 1 // wraps for 0: no match
			case specs.OpGreaterThan:
				d.args[a.Index] = a.Value + 1
			case specs.OpMaskedEqual:
				d.args[a.Index] = a.ValueTwo
			}
		}
		if got, want := v.run(t, d), reference(t, p, d); got != want {
			t.Fatalf("rule %d: filter returns %#x, reference %#x", i, got, want)
		}
	}
}

func TestAssemblerRelaxation(t *testing.T) {
	for _, gap := range []int{0, 1, 254, 255, 256, 300, 600} {
		for _, farTrue := range []bool{false, true} {
			as := newAssembler()
			near, far, next := as.newLabel(), as.newLabel(), as.newLabel()
			as.load(offNr)
			if farTrue {
				as.jump(unix.BPF_JEQ, 5, far, near)
			} else {
				as.jump(unix.BPF_JEQ, 5, near, far)
			}
			as.bind(near)
			as.ja(next)
			as.bind(next)
			for range gap {
				as.load(offArch)
			}
			as.stmt(unix.BPF_RET|unix.BPF_K, 1) // reached from near
			as.bind(far)
			as.stmt(unix.BPF_RET|unix.BPF_K, 2)
			prog, added, err := as.assemble()
			if err != nil {
				t.Fatal(err)
			}
			// The far target is gap+2 instructions after the jump's successor.
			if wantRelaxed := gap+2 > 255; (added > 0) != wantRelaxed {
				t.Errorf("gap %d: %d relaxation jumps, want relaxed=%v", gap, added, wantRelaxed)
			}
			v := newVM(t, prog)
			farWant, nearWant := uint32(2), uint32(1)
			if !farTrue {
				farWant, nearWant = 1, 2
			}
			if got := v.run(t, data{nr: 5}); got != farWant {
				t.Errorf("gap %d farTrue %v: nr 5 gives %d, want %d", gap, farTrue, got, farWant)
			}
			if got := v.run(t, data{nr: 6}); got != nearWant {
				t.Errorf("gap %d farTrue %v: nr 6 gives %d, want %d", gap, farTrue, got, nearWant)
			}
		}
	}
}

func TestTooLarge(t *testing.T) {
	requireNative(t)
	p := &specs.LinuxSeccomp{DefaultAction: specs.ActAllow}
	for i := range 200 {
		args := make([]specs.LinuxSeccompArg, 6)
		for j := range args {
			args[j] = specs.LinuxSeccompArg{Index: uint(j), Op: specs.OpGreaterThan, Value: uint64(i*6+j) << 31}
		}
		p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{Names: []string{"ioctl"}, Action: specs.ActErrno, Args: args})
	}
	if _, err := Compile(p); err == nil || !strings.Contains(err.Error(), "4096") {
		t.Fatalf("want a too-large error, got %v", err)
	}
}

// ---- semantics ----

func TestRuleSemantics(t *testing.T) {
	audit := nativeAudit(t)
	u := func(v uint) *uint { return &v }
	getppid := uint32(unix.SYS_GETPPID)
	for _, c := range []struct {
		name string
		p    specs.LinuxSeccomp
		args [6]uint64
		want uint32
	}{
		{
			name: "conditional rules with one action: any match",
			p: specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
				{Names: []string{"getppid"}, Action: specs.ActErrno, ErrnoRet: u(5), Args: []specs.LinuxSeccompArg{{Index: 0, Op: specs.OpGreaterThan, Value: 10}}},
				{Names: []string{"getppid"}, Action: specs.ActErrno, ErrnoRet: u(5), Args: []specs.LinuxSeccompArg{{Index: 1, Op: specs.OpEqualTo, Value: 5}}},
			}},
			args: [6]uint64{7, 5},
			want: retErrno | 5,
		},
		{
			name: "conditional rules with one action: no match",
			p: specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
				{Names: []string{"getppid"}, Action: specs.ActErrno, ErrnoRet: u(5), Args: []specs.LinuxSeccompArg{{Index: 0, Op: specs.OpGreaterThan, Value: 10}}},
				{Names: []string{"getppid"}, Action: specs.ActErrno, ErrnoRet: u(5), Args: []specs.LinuxSeccompArg{{Index: 1, Op: specs.OpEqualTo, Value: 5}}},
			}},
			args: [6]uint64{7, 4},
			want: retAllow,
		},
		{
			name: "rules with the default action are dropped",
			p: specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{
				{Names: []string{"getppid"}, Action: specs.ActErrno, ErrnoRet: u(1), Args: []specs.LinuxSeccompArg{{Index: 0, Op: specs.OpEqualTo, Value: 1}}},
				{Names: []string{"getppid"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Index: 0, Op: specs.OpLessThan, Value: 5}}},
			}},
			args: [6]uint64{1},
			want: retAllow,
		},
		{
			name: "arguments are ANDed",
			p: specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
				{Names: []string{"getppid"}, Action: specs.ActTrap, Args: []specs.LinuxSeccompArg{
					{Index: 0, Op: specs.OpEqualTo, Value: 1}, {Index: 1, Op: specs.OpEqualTo, Value: 2}}},
			}},
			args: [6]uint64{1, 3},
			want: retAllow,
		},
		{
			name: "a repeated index makes arguments ORed",
			p: specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
				{Names: []string{"getppid"}, Action: specs.ActTrap, Args: []specs.LinuxSeccompArg{
					{Index: 0, Op: specs.OpEqualTo, Value: 1}, {Index: 0, Op: specs.OpEqualTo, Value: 2}, {Index: 1, Op: specs.OpEqualTo, Value: 9}}},
			}},
			args: [6]uint64{2, 3},
			want: retTrap,
		},
		{
			name: "unconditional rule wins over conditional rules with its action",
			p: specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{
				{Names: []string{"getppid"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Index: 0, Op: specs.OpEqualTo, Value: 1}}},
				{Names: []string{"getppid"}, Action: specs.ActAllow},
			}},
			args: [6]uint64{2},
			want: retAllow,
		},
		{
			name: "unconditional rule with the default action does not conflict",
			p: specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{
				{Names: []string{"getppid"}, Action: specs.ActErrno},
				{Names: []string{"getppid"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Index: 0, Op: specs.OpEqualTo, Value: 1}}},
			}},
			args: [6]uint64{1},
			want: retAllow,
		},
		{
			name: "unknown names are skipped",
			p: specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{
				{Names: []string{"no_such_call", "getppid", "socketcall_nope"}, Action: specs.ActLog},
			}},
			want: retLog,
		},
		{
			name: "default errno",
			p:    specs.LinuxSeccomp{DefaultAction: specs.ActErrno, DefaultErrnoRet: u(38)},
			want: retErrno | 38,
		},
		{
			name: "default errno is EPERM",
			p:    specs.LinuxSeccomp{DefaultAction: specs.ActErrno},
			want: retErrno | 1,
		},
		{
			name: "errno 0",
			p:    specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{Names: []string{"getppid"}, Action: specs.ActErrno, ErrnoRet: u(0)}}},
			want: retErrno,
		},
		{
			name: "trace defaults to EPERM",
			p:    specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{Names: []string{"getppid"}, Action: specs.ActTrace}}},
			want: retTrace | 1,
		},
		{
			name: "trace with errnoRet",
			p:    specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{Names: []string{"getppid"}, Action: specs.ActTrace, ErrnoRet: u(42)}}},
			want: retTrace | 42,
		},
		{
			name: "kill is kill thread",
			p:    specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{Names: []string{"getppid"}, Action: specs.ActKill}}},
			want: retKillThread,
		},
		{
			name: "kill process",
			p:    specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{Names: []string{"getppid"}, Action: specs.ActKillProcess}}},
			want: retKillProcess,
		},
		{
			name: "kill thread default",
			p:    specs.LinuxSeccomp{DefaultAction: specs.ActKillThread, Syscalls: []specs.LinuxSyscall{{Names: []string{"getpid", "exit_group"}, Action: specs.ActAllow}}},
			want: retKillThread,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			prog, _ := mustCompile(t, &c.p)
			d := data{nr: getppid, arch: audit, args: c.args}
			if got := newVM(t, prog).run(t, d); got != c.want {
				t.Fatalf("got %#x, want %#x", got, c.want)
			}
			if ref := reference(t, &c.p, d); ref != c.want {
				t.Fatalf("reference gives %#x, want %#x", ref, c.want)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	u := func(v uint) *uint { return &v }
	arg := func(i uint, op specs.LinuxSeccompOperator) []specs.LinuxSeccompArg {
		return []specs.LinuxSeccompArg{{Index: i, Op: op, Value: 1}}
	}
	for _, c := range []struct {
		name string
		p    *specs.LinuxSeccomp
		want string
	}{
		{"nil profile", nil, "no profile"},
		{"notify rule", &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
			{Names: []string{"getppid"}, Action: specs.ActNotify}}}, "NOTIFY"},
		{"notify default", &specs.LinuxSeccomp{DefaultAction: specs.ActNotify}, "NOTIFY"},
		{"listener path", &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, ListenerPath: "/run/x.sock"}, "listener"},
		{"flags", &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Flags: []specs.LinuxSeccompFlag{specs.LinuxSeccompFlagLog}}, "flags"},
		{"empty default action", &specs.LinuxSeccomp{}, "unknown action"},
		{"unknown action", &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
			{Names: []string{"getppid"}, Action: "SCMP_ACT_FOO"}}}, "unknown action"},
		{"unknown action on unknown syscall", &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
			{Names: []string{"no_such_call"}, Action: "SCMP_ACT_FOO"}}}, "unknown action"},
		{"unknown operator", &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
			{Names: []string{"getppid"}, Action: specs.ActErrno, Args: arg(0, "SCMP_CMP_FOO")}}}, "unknown operator"},
		{"index 6", &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
			{Names: []string{"getppid"}, Action: specs.ActErrno, Args: arg(6, specs.OpEqualTo)}}}, "index 6"},
		{"index 6 with the default action", &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
			{Names: []string{"getppid"}, Action: specs.ActAllow, Args: arg(6, specs.OpEqualTo)}}}, "index 6"},
		{"errno too large", &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
			{Names: []string{"getppid"}, Action: specs.ActErrno, ErrnoRet: u(0x10000)}}}, "errnoRet"},
		{"conditional rules with different actions", &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
			{Names: []string{"socket"}, Action: specs.ActErrno, ErrnoRet: u(5), Args: arg(0, specs.OpEqualTo)},
			{Names: []string{"socket"}, Action: specs.ActErrno, ErrnoRet: u(7), Args: arg(1, specs.OpEqualTo)}}}, "different actions"},
		{"conflicting unconditional rules", &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{
			{Names: []string{"getppid"}, Action: specs.ActAllow},
			{Names: []string{"getppid"}, Action: specs.ActLog}}}, "conflicts"},
		{"conflicting errno values", &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
			{Names: []string{"getppid"}, Action: specs.ActErrno, ErrnoRet: u(3)},
			{Names: []string{"getppid"}, Action: specs.ActErrno, ErrnoRet: u(4)}}}, "conflicts"},
		{"unconditional after conditional", &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{
			{Names: []string{"getppid"}, Action: specs.ActLog, Args: arg(0, specs.OpEqualTo)},
			{Names: []string{"getppid"}, Action: specs.ActAllow}}}, "conflicts"},
		{"conditional after unconditional", &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{
			{Names: []string{"getppid"}, Action: specs.ActAllow},
			{Names: []string{"getppid"}, Action: specs.ActLog, Args: arg(0, specs.OpEqualTo)}}}, "conflicts"},
	} {
		t.Run(c.name, func(t *testing.T) {
			requireNative(t)
			prog, err := Compile(c.p)
			if err == nil {
				t.Fatalf("compiled to %d instructions, want an error", len(prog))
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not mention %q", err, c.want)
			}
		})
	}
}

// TestSyscallTable checks the generated table against x/sys constants.
func TestSyscallTable(t *testing.T) {
	requireNative(t)
	for name, nr := range map[string]int{
		"read": unix.SYS_READ, "write": unix.SYS_WRITE, "getpid": unix.SYS_GETPID, "getppid": unix.SYS_GETPPID,
		"clone": unix.SYS_CLONE, "clone3": unix.SYS_CLONE3, "personality": unix.SYS_PERSONALITY,
		"socket": unix.SYS_SOCKET, "unshare": unix.SYS_UNSHARE,
		"mount": unix.SYS_MOUNT, "umount2": unix.SYS_UMOUNT2, "seccomp": unix.SYS_SECCOMP,
		"io_uring_setup": unix.SYS_IO_URING_SETUP, "rt_sigreturn": unix.SYS_RT_SIGRETURN,
		"exit_group": unix.SYS_EXIT_GROUP, "openat2": unix.SYS_OPENAT2, "mseal": unix.SYS_MSEAL,
	} {
		if got, ok := syscallNumbers[name]; !ok || got != uint32(nr) {
			t.Errorf("%s: table has %d (present %v), x/sys has %d", name, got, ok, nr)
		}
	}
	// Numbers of every table (not only the native one), spelled out.
	for _, a := range arches {
		for name, nr := range map[string]map[string]uint32{
			"amd64": {"read": 0, "getpid": 39, "clone": 56, "newfstatat": 262, "_sysctl": 156, "arch_prctl": 158, "clone3": 435, "mseal": 462},
			"arm64": {"read": 63, "getpid": 172, "clone": 220, "newfstatat": 79, "clone3": 435, "mseal": 462},
		}[a.name] {
			if got, ok := a.numbers[name]; !ok || got != nr {
				t.Errorf("%s %s: table has %d (present %v), want %d", a.name, name, got, ok, nr)
			}
		}
		if _, ok := a.numbers["arch_prctl"]; ok != (a.name == "amd64") {
			t.Errorf("%s: arch_prctl present %v; only amd64 has it", a.name, ok)
		}
	}
	// Every name the default profile lists for this architecture and that
	// the table lacks must be one the kernel does not have here.
	missing := map[string]bool{}
	for _, s := range defaultProfile(t).Syscalls {
		for _, n := range s.Names {
			if _, ok := syscallNumbers[n]; !ok {
				missing[n] = true
			}
		}
	}
	for _, n := range []string{"read", "newfstatat", "clone", "arch_prctl", "rseq", "statx", "pidfd_open", "epoll_pwait2"} {
		if runtime.GOARCH != "amd64" && n == "arch_prctl" {
			continue
		}
		if missing[n] {
			t.Errorf("%s missing from the table", n)
		}
	}
	t.Logf("default profile names without a number here: %d", len(missing))
}

// TestGeneratedTablesCurrent re-runs gen.go and compares its output with the
// committed files, so an x/sys upgrade without `go generate` fails.
func TestGeneratedTablesCurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: this test runs the go command (go run gen.go)")
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goCmd); err != nil {
			t.Skipf("no go command in PATH or in %s, so gen.go cannot be run", filepath.Join(runtime.GOROOT(), "bin"))
		}
	}
	dir := t.TempDir()
	out, err := exec.Command(goCmd, "run", "gen.go", "-o", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("go run gen.go: %v\n%s", err, out)
	}
	for _, f := range []string{"zsysnum.go"} {
		want, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("%s is not what gen.go produces; run go generate", f)
		}
	}
}

func BenchmarkCompileDefault(b *testing.B) {
	p := defaultProfile(b)
	requireNative(b)
	var n int
	for b.Loop() {
		prog, err := Compile(p)
		if err != nil {
			b.Fatal(err)
		}
		n = len(prog)
	}
	b.ReportMetric(float64(n), "insns")
}

// TestENOSYSStub: numbers above the profile's highest syscall get ENOSYS
// (runc's stub) unless the default action allows or already is ENOSYS;
// unlisted numbers below it keep the default action.
func TestENOSYSStub(t *testing.T) {
	audit := nativeAudit(t)
	enosys := uint32(unix.ENOSYS)
	allowGetppid := []specs.LinuxSyscall{{Names: []string{"getppid"}, Action: specs.ActAllow}}
	for _, c := range []struct {
		name        string
		p           specs.LinuxSeccomp
		below, over uint32 // outcome for getpid-1 (unlisted, lower) and getppid+1
	}{
		{"errno default", specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: allowGetppid}, retErrno | 1, retErrno | enosys},
		{"kill default", specs.LinuxSeccomp{DefaultAction: specs.ActKillProcess, Syscalls: allowGetppid}, retKillProcess, retErrno | enosys},
		{"allow default", specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{Names: []string{"getppid"}, Action: specs.ActErrno}}}, retAllow, retAllow},
		{"EACCES default", specs.LinuxSeccomp{DefaultAction: specs.ActErrno, DefaultErrnoRet: &[]uint{uint(unix.EACCES)}[0], Syscalls: allowGetppid}, retErrno | uint32(unix.EACCES), retErrno | enosys},
	} {
		t.Run(c.name, func(t *testing.T) {
			prog, _ := mustCompile(t, &c.p)
			v := newVM(t, prog)
			for nr, want := range map[uint32]uint32{unix.SYS_GETPID - 1: c.below, unix.SYS_GETPPID + 1: c.over, unix.SYS_GETPPID: map[bool]uint32{true: retAllow, false: retErrno | 1}[c.p.DefaultAction != specs.ActAllow]} {
				d := data{nr: nr, arch: audit}
				if got := v.run(t, d); got != want {
					t.Errorf("nr %d: got %#x, want %#x", nr, got, want)
				}
				if ref := reference(t, &c.p, d); ref != want {
					t.Errorf("nr %d: reference gives %#x, want %#x", nr, ref, want)
				}
			}
		})
	}
	enosysDefault := specs.LinuxSeccomp{DefaultAction: specs.ActErrno, DefaultErrnoRet: &[]uint{uint(unix.ENOSYS)}[0], Syscalls: allowGetppid}
	prog, _ := mustCompile(t, &enosysDefault)
	if got := newVM(t, prog).run(t, data{nr: unix.SYS_GETPID - 1, arch: audit}); got != retErrno|enosys {
		t.Errorf("ENOSYS default below: got %#x", got)
	}
}

// TestDefaultProfileGolden pins what the sandboxes' profile does to every
// syscall number (zero arguments; syscalls with argument rules are marked),
// in testdata/default_GOARCH.golden, for amd64 and arm64 alike, on any host
// (the profile is built and compiled for each architecture; the x/net/bpf
// interpreter runs it). A change to the profile, a syscall table (an x/sys
// upgrade) or the compiler shows up there in review. Regenerate with
// MSB_UPDATE_GOLDEN=1 go test -run TestDefaultProfileGolden.
func TestDefaultProfileGolden(t *testing.T) {
	for _, a := range arches {
		t.Run(a.name, func(t *testing.T) {
			path := filepath.Join("testdata", "default_"+a.name+".golden")
			p := profileFor(t, a.name)
			prog, _ := compileFor(t, p, a)
			v := newVM(t, prog)
			names := map[uint32]string{}
			for n, nr := range a.numbers {
				names[nr] = n
			}
			conditional := map[string]bool{}
			for _, r := range p.Syscalls {
				if len(r.Args) > 0 {
					for _, n := range r.Names {
						conditional[n] = true
					}
				}
			}
			var highest uint32
			for nr := range names {
				highest = max(highest, nr)
			}
			var b strings.Builder
			fmt.Fprintf(&b, "# seccomp outcome of the default sandbox profile on %s, zero arguments\n", a.name)
			for nr := uint32(0); nr <= highest+1; nr++ {
				name := names[nr]
				if name == "" {
					name = "-"
				}
				out := outcomeName(v.run(t, data{nr: nr, arch: auditOf(t, a.name)}))
				if conditional[name] {
					out += " (argument rules)"
				}
				fmt.Fprintf(&b, "%4d %-24s %s\n", nr, name, out)
			}
			if os.Getenv("MSB_UPDATE_GOLDEN") != "" {
				if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if errors.Is(err, os.ErrNotExist) {
				t.Fatalf("no %s: generate it with MSB_UPDATE_GOLDEN=1 go test -run TestDefaultProfileGolden, review and commit it", path)
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(want) != b.String() {
				t.Fatalf("the default profile's outcomes changed; review, then regenerate %s with MSB_UPDATE_GOLDEN=1:\n%s", path, lineDiff(string(want), b.String()))
			}
		})
	}
}

func outcomeName(r uint32) string {
	switch {
	case r == retAllow:
		return "allow"
	case r&0xffff0000 == retErrno:
		return fmt.Sprintf("errno %d", r&0xffff)
	case r == retKillProcess:
		return "kill-process"
	case r == retKillThread:
		return "kill-thread"
	}
	return fmt.Sprintf("%#x", r)
}

// lineDiff lists the lines only in a (-) or only in b (+).
func lineDiff(a, b string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	ina, inb := in(a), in(b)
	var out strings.Builder
	for _, l := range strings.Split(a, "\n") {
		if !inb[l] {
			fmt.Fprintf(&out, "- %s\n", l)
		}
	}
	for _, l := range strings.Split(b, "\n") {
		if !ina[l] {
			fmt.Fprintf(&out, "+ %s\n", l)
		}
	}
	return out.String()
}
