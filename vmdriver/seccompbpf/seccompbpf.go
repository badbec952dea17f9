// Package seccompbpf compiles an OCI seccomp profile into a classic BPF
// program and installs such a program in the calling process.
//
// runc compiles the container's seccomp profile with libseccomp at every
// container start, which costs about 10ms per sandbox. The profile is the same
// for every sandbox, so the daemon compiles it once with Compile, hands the
// result (Marshal) to the guest agent, and the agent, PID 1 of the sandbox,
// calls Unmarshal and Install before it runs anything untrusted. The package
// is imported by that static agent, so it depends on nothing beyond the
// standard library, x/sys/unix and the runtime-spec types, and needs no cgo.
//
// The semantics follow runc 1.1 with libseccomp on a 64-bit little-endian
// architecture, restricted to the native ABI:
//
//   - A task of any other audit architecture (32-bit compat tasks, and on
//     x86_64 the x32 ABI) is killed (SECCOMP_RET_KILL_PROCESS). Syscall
//     number -1 (a tracer skipping a call) gets the default action.
//   - A rule without Args applies its action to each named syscall. A rule
//     with Args ANDs them, unless an argument index appears twice, in which
//     case each argument becomes a rule of its own (ORed), as runc does.
//   - Rules whose action is the default action are dropped, as runc does.
//   - A syscall's conditional rules must share one action (libseccomp orders
//     rules of different actions by its own criteria, so such profiles are
//     refused); any of them matching gives that action, none the default.
//     An unconditional rule wins over other rules with the same action; other
//     rules with a different action are an error.
//   - Names the native architecture does not have are skipped, as runc does.
//   - Syscall numbers above the highest one the profile names return ENOSYS
//     (unless the default action allows or is ENOSYS), as runc's stub does,
//     so software probing a newer syscall falls back instead of failing.
//   - Anything that cannot be expressed faithfully (SCMP_ACT_NOTIFY, listener
//     settings, filter flags, unknown actions or operators) is an error: the
//     compiler refuses rather than produce a weaker filter.
//
// The program is laid out for speed rather than as the linear chain of
// compares libseccomp emits: after the architecture check it is a balanced
// binary search over syscall-number intervals, so a syscall costs about
// log2(number of intervals) compares, followed by the argument checks of the
// few syscalls that have conditional rules.
package seccompbpf

//go:generate go run gen.go

import (
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// maxInsns is the kernel's limit on the length of a classic BPF program
// (BPF_MAXINSNS).
const maxInsns = 4096

// Offsets in struct seccomp_data. Loads are 32 bits wide; on a little-endian
// architecture the low word of a 64-bit argument comes first.
const (
	offNr   = 0
	offArch = 4
	offArgs = 16
)

// x32SyscallBit is __X32_SYSCALL_BIT: x32 syscalls enter the x86_64 entry
// with this bit set in the syscall number.
const x32SyscallBit = 0x40000000

// arch describes an architecture the compiler can build filters for.
type arch struct {
	name    string
	audit   uint32 // AUDIT_ARCH_* reported in seccomp_data.arch
	x32     bool   // numbers >= x32SyscallBit are another ABI and are refused
	numbers map[string]uint32
}

// Supported reports whether Compile can build filters for this build's
// GOARCH (amd64 and arm64; both little-endian).
func Supported() bool {
	return native != nil
}

// Compile turns an OCI seccomp profile into a classic BPF program for the
// native architecture only. Architectures other than the native one that the
// profile lists are not compiled in: their tasks are killed. The result can be
// loaded with Install, in this process or, after Marshal and Unmarshal, in
// another one.
func Compile(p *specs.LinuxSeccomp) ([]unix.SockFilter, error) {
	if native == nil {
		return nil, fmt.Errorf("seccompbpf: GOARCH %s is not supported", runtime.GOARCH)
	}
	prog, _, err := compile(p, native)
	return prog, err
}

// cond is one argument comparison.
type cond struct {
	index    uint
	op       specs.LinuxSeccompOperator
	value    uint64
	valueTwo uint64
}

// rule is one rule for one syscall; conds is empty for an unconditional rule.
type rule struct {
	action uint32
	conds  []cond
}

// stats describes a compiled program; tests and benchmarks report it.
type stats struct {
	insns       int // instructions in the program
	intervals   int // leaves of the syscall-number search tree
	depth       int // compares on the longest path through the tree
	blocks      int // distinct argument-checking blocks
	trampolines int // jumps added to relax conditional jumps that were too long
}

func compile(p *specs.LinuxSeccomp, a *arch) ([]unix.SockFilter, stats, error) {
	var st stats
	if p == nil {
		return nil, st, errors.New("seccompbpf: no profile")
	}
	if len(p.Flags) != 0 {
		return nil, st, fmt.Errorf("seccompbpf: seccomp flags %v are not supported", p.Flags)
	}
	if p.ListenerPath != "" || p.ListenerMetadata != "" {
		return nil, st, errors.New("seccompbpf: seccomp listeners (SCMP_ACT_NOTIFY) are not supported")
	}
	def, err := action(p.DefaultAction, p.DefaultErrnoRet)
	if err != nil {
		return nil, st, fmt.Errorf("seccompbpf: default action: %w", err)
	}

	// Syscalls newer than every one the profile names get ENOSYS rather than
	// the default action, as runc does: a program (or libc) probing a
	// syscall the kernel or profile does not know then falls back to an
	// older one instead of failing with EPERM. Not when the default already
	// allows, or already is ENOSYS.
	enosys := unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
	stubFrom, stub := uint64(0), def != unix.SECCOMP_RET_ALLOW && def != enosys
	for _, call := range p.Syscalls {
		for _, name := range call.Names {
			if nr, ok := a.numbers[name]; ok && uint64(nr)+1 > stubFrom {
				stubFrom = uint64(nr) + 1
			}
		}
	}
	stub = stub && stubFrom > 0 && stubFrom <= 0xffffffff

	// Expand the profile into rules per syscall number, in profile order.
	type named struct {
		name  string
		rules []rule
	}
	bySyscall := map[uint32]*named{}
	for i, call := range p.Syscalls {
		act, err := action(call.Action, call.ErrnoRet)
		if err != nil {
			return nil, st, fmt.Errorf("seccompbpf: syscalls[%d] %v: %w", i, call.Names, err)
		}
		groups, err := conditions(call.Args)
		if err != nil {
			return nil, st, fmt.Errorf("seccompbpf: syscalls[%d] %v: %w", i, call.Names, err)
		}
		if act == def {
			// runc skips these (libseccomp refuses them). It makes a
			// difference only where a later rule of the same syscall with
			// another action also matches: that rule then decides.
			continue
		}
		for _, name := range call.Names {
			nr, ok := a.numbers[name]
			if !ok {
				// runc ignores syscalls the architecture does not have.
				continue
			}
			n := bySyscall[nr]
			if n == nil {
				n = &named{name: name}
				bySyscall[nr] = n
			}
			for _, g := range groups {
				n.rules = append(n.rules, rule{action: act, conds: g})
			}
		}
	}

	as := newAssembler()
	c := &compiler{as: as, rets: map[uint32]label{}}

	// Decide the outcome of every listed syscall: a return, or a block of
	// argument checks. Identical blocks are shared.
	nrs := make([]uint32, 0, len(bySyscall))
	for nr := range bySyscall {
		nrs = append(nrs, nr)
	}
	sort.Slice(nrs, func(i, j int) bool { return nrs[i] < nrs[j] })
	type block struct {
		label label
		rules []rule
	}
	var blocks []block
	blockByKey := map[string]label{}
	outcome := map[uint32]label{}
	for _, nr := range nrs {
		n := bySyscall[nr]
		uncond := -1
		for i, r := range n.rules {
			if len(r.conds) == 0 {
				uncond = i
				break
			}
		}
		if uncond >= 0 {
			act := n.rules[uncond].action
			for _, r := range n.rules {
				if r.action != act {
					return nil, st, fmt.Errorf("seccompbpf: syscall %s: unconditional rule (action %#x) conflicts with a rule with action %#x", n.name, act, r.action)
				}
			}
			outcome[nr] = c.ret(act)
			continue
		}
		// libseccomp orders a syscall's conditional rules by its own
		// criteria, not the profile's: where their actions differ the
		// outcome of a call matching several would be ours, not runc's,
		// and could be weaker. Refuse; the default profile never does it.
		for _, r := range n.rules[1:] {
			if r.action != n.rules[0].action {
				return nil, st, fmt.Errorf("seccompbpf: syscall %s: conditional rules with different actions (%#x, %#x) are not supported", n.name, n.rules[0].action, r.action)
			}
		}
		key := blockKey(n.rules)
		l, ok := blockByKey[key]
		if !ok {
			l = as.newLabel()
			blockByKey[key] = l
			blocks = append(blocks, block{label: l, rules: n.rules})
		}
		outcome[nr] = l
	}

	// Syscall-number intervals with one outcome each, covering 0..2^32-1.
	defRet := c.ret(def)
	var ivs []interval
	add := func(start uint32, target label) {
		if n := len(ivs); n > 0 && ivs[n-1].start == start {
			ivs = ivs[:n-1] // a later outcome for the same start overrides
		}
		if n := len(ivs); n > 0 && ivs[n-1].target == target {
			return // same outcome as the numbers before: extend that interval
		}
		ivs = append(ivs, interval{start: start, target: target})
	}
	add(0, defRet)
	for _, nr := range nrs {
		if a.x32 && nr >= x32SyscallBit {
			return nil, st, fmt.Errorf("seccompbpf: syscall %s has number %#x in the x32 range", bySyscall[nr].name, nr)
		}
		add(nr, outcome[nr])
		if nr != ^uint32(0) {
			add(nr+1, defRet)
		}
	}
	if stub && (!a.x32 || stubFrom < x32SyscallBit) {
		add(uint32(stubFrom), c.ret(enosys))
	}
	if a.x32 {
		add(x32SyscallBit, c.ret(unix.SECCOMP_RET_KILL_PROCESS))
		// Number -1 is no x32 call: a tracer sets it to skip a syscall
		// (strace's fault injection, proot). It gets the default action,
		// as with libseccomp, rather than killing the traced process.
		add(0xffffffff, defRet)
	}
	st.intervals = len(ivs)
	st.blocks = len(blocks)

	// Architecture check, then the search tree on the syscall number.
	nrLabel := as.newLabel()
	as.load(offArch)
	as.jump(unix.BPF_JEQ, a.audit, nrLabel, c.ret(unix.SECCOMP_RET_KILL_PROCESS))
	as.bind(nrLabel)
	as.load(offNr)
	if len(ivs) == 1 {
		as.ja(ivs[0].target)
	} else {
		root := as.newLabel()
		st.depth = c.tree(ivs, root)
	}

	for _, b := range blocks {
		c.block(b.label, b.rules, defRet)
	}

	// The deduplicated returns come last, so every jump to them is forward.
	for _, r := range c.retOrder {
		as.bind(c.rets[r])
		as.stmt(unix.BPF_RET|unix.BPF_K, r)
	}

	prog, tramps, err := as.assemble()
	if err != nil {
		return nil, st, fmt.Errorf("seccompbpf: %w", err)
	}
	st.trampolines = tramps
	st.insns = len(prog)
	if len(prog) > maxInsns {
		return nil, st, fmt.Errorf("seccompbpf: profile needs %d BPF instructions, the kernel allows %d", len(prog), maxInsns)
	}
	return prog, st, nil
}

// action maps an OCI action to a seccomp return value, as runc 1.1 does.
func action(act specs.LinuxSeccompAction, errnoRet *uint) (uint32, error) {
	data := func() (uint32, error) {
		if errnoRet == nil {
			return uint32(unix.EPERM), nil
		}
		if *errnoRet > unix.SECCOMP_RET_DATA {
			return 0, fmt.Errorf("errnoRet %d does not fit in SECCOMP_RET_DATA", *errnoRet)
		}
		return uint32(*errnoRet), nil
	}
	switch act {
	case specs.ActAllow:
		return unix.SECCOMP_RET_ALLOW, nil
	case specs.ActErrno:
		d, err := data()
		return unix.SECCOMP_RET_ERRNO | d, err
	case specs.ActTrace:
		d, err := data()
		return unix.SECCOMP_RET_TRACE | d, err
	case specs.ActKill, specs.ActKillThread:
		return unix.SECCOMP_RET_KILL_THREAD, nil
	case specs.ActKillProcess:
		return unix.SECCOMP_RET_KILL_PROCESS, nil
	case specs.ActTrap:
		return unix.SECCOMP_RET_TRAP, nil
	case specs.ActLog:
		return unix.SECCOMP_RET_LOG, nil
	case specs.ActNotify:
		return 0, errors.New("SCMP_ACT_NOTIFY is not supported")
	}
	return 0, fmt.Errorf("unknown action %q", act)
}

// conditions validates a rule's arguments and groups them the way runc does:
// one group (all ANDed), or, if an argument index repeats, one group per
// argument (ORed). Without arguments it returns one empty group.
func conditions(args []specs.LinuxSeccompArg) ([][]cond, error) {
	if len(args) == 0 {
		return [][]cond{nil}, nil
	}
	var seen [6]int
	repeated := false
	all := make([]cond, 0, len(args))
	for _, arg := range args {
		if arg.Index > 5 {
			return nil, fmt.Errorf("argument index %d out of range 0..5", arg.Index)
		}
		switch arg.Op {
		case specs.OpEqualTo, specs.OpNotEqual, specs.OpLessThan, specs.OpLessEqual,
			specs.OpGreaterEqual, specs.OpGreaterThan, specs.OpMaskedEqual:
		default:
			return nil, fmt.Errorf("unknown operator %q", arg.Op)
		}
		seen[arg.Index]++
		if seen[arg.Index] > 1 {
			repeated = true
		}
		all = append(all, cond{index: arg.Index, op: arg.Op, value: arg.Value, valueTwo: arg.ValueTwo})
	}
	if !repeated {
		return [][]cond{all}, nil
	}
	groups := make([][]cond, len(all))
	for i := range all {
		groups[i] = all[i : i+1 : i+1]
	}
	return groups, nil
}

func blockKey(rules []rule) string {
	var b strings.Builder
	for _, r := range rules {
		fmt.Fprintf(&b, "%x", r.action)
		for _, c := range r.conds {
			fmt.Fprintf(&b, ",%d%s%x:%x", c.index, c.op, c.value, c.valueTwo)
		}
		b.WriteByte(';')
	}
	return b.String()
}

// interval is the syscall numbers from start up to the next interval's start.
type interval struct {
	start  uint32
	target label
}

type compiler struct {
	as       *assembler
	rets     map[uint32]label
	retOrder []uint32
}

// ret returns the label of the shared return instruction for r.
func (c *compiler) ret(r uint32) label {
	if l, ok := c.rets[r]; ok {
		return l
	}
	l := c.as.newLabel()
	c.rets[r] = l
	c.retOrder = append(c.retOrder, r)
	return l
}

// tree emits, at self, a balanced search over ivs (at least two) on the
// syscall number in A, and returns the number of compares on its longest path.
// Nodes are laid out in preorder so every jump goes forward.
func (c *compiler) tree(ivs []interval, self label) int {
	c.as.bind(self)
	mid := len(ivs) / 2
	left, right := ivs[:mid], ivs[mid:]
	child := func(sub []interval) label {
		if len(sub) == 1 {
			return sub[0].target
		}
		return c.as.newLabel()
	}
	lt, rt := child(left), child(right)
	c.as.jump(unix.BPF_JGE, ivs[mid].start, rt, lt)
	depth := 0
	if len(left) > 1 {
		depth = c.tree(left, lt)
	}
	if len(right) > 1 {
		depth = max(depth, c.tree(right, rt))
	}
	return depth + 1
}

// block emits, at self, the rules of one syscall: each is tried in order, the
// first whose conditions all hold returns its action, and def is returned if
// none does.
func (c *compiler) block(self label, rules []rule, def label) {
	c.as.bind(self)
	for i, r := range rules {
		fail := def
		if i < len(rules)-1 {
			fail = c.as.newLabel()
		}
		for j, cd := range r.conds {
			if j == len(r.conds)-1 {
				c.cmp(cd, c.ret(r.action), fail)
				break
			}
			next := c.as.newLabel()
			c.cmp(cd, next, fail)
			c.as.bind(next)
		}
		if i < len(rules)-1 {
			c.as.bind(fail)
		}
	}
}

// cmp emits one 64-bit comparison as two 32-bit ones: the high words decide
// unless they are equal, then the low words decide.
func (c *compiler) cmp(cd cond, pass, fail label) {
	as := c.as
	lo := uint32(offArgs + 8*cd.index)
	hi := lo + 4
	vh, vl := uint32(cd.value>>32), uint32(cd.value)
	next := as.newLabel()
	switch cd.op {
	case specs.OpEqualTo:
		as.load(hi)
		as.jump(unix.BPF_JEQ, vh, next, fail)
		as.bind(next)
		as.load(lo)
		as.jump(unix.BPF_JEQ, vl, pass, fail)
	case specs.OpNotEqual:
		as.load(hi)
		as.jump(unix.BPF_JEQ, vh, next, pass)
		as.bind(next)
		as.load(lo)
		as.jump(unix.BPF_JEQ, vl, fail, pass)
	case specs.OpGreaterThan, specs.OpGreaterEqual, specs.OpLessThan, specs.OpLessEqual:
		// One unsigned test a > v (or a >= v): high words first, low words
		// when they are equal. a < v is !(a >= v) and a <= v is !(a > v),
		// so those swap where the test's outcomes lead.
		yes, no := pass, fail
		if cd.op == specs.OpLessThan || cd.op == specs.OpLessEqual {
			yes, no = fail, pass
		}
		op := uint16(unix.BPF_JGE)
		if cd.op == specs.OpGreaterThan || cd.op == specs.OpLessEqual {
			op = unix.BPF_JGT
		}
		eq := as.newLabel()
		as.load(hi)
		as.jump(unix.BPF_JGT, vh, yes, eq)
		as.bind(eq)
		as.jump(unix.BPF_JEQ, vh, next, no)
		as.bind(next)
		as.load(lo)
		as.jump(op, vl, yes, no)
	case specs.OpMaskedEqual:
		// (a & value) == valueTwo, as libseccomp defines it.
		mh, ml := vh, vl
		wh, wl := uint32(cd.valueTwo>>32), uint32(cd.valueTwo)
		if mh != 0 || wh != 0 { // (hi & 0) == 0 holds for every hi
			as.load(hi)
			if mh != ^uint32(0) {
				as.stmt(unix.BPF_ALU|unix.BPF_AND|unix.BPF_K, mh)
			}
			as.jump(unix.BPF_JEQ, wh, next, fail)
		}
		as.bind(next)
		if ml == 0 && wl == 0 {
			as.ja(pass)
			return
		}
		as.load(lo)
		if ml != ^uint32(0) {
			as.stmt(unix.BPF_ALU|unix.BPF_AND|unix.BPF_K, ml)
		}
		as.jump(unix.BPF_JEQ, wl, pass, fail)
	default:
		panic("seccompbpf: operator not validated: " + string(cd.op))
	}
}
