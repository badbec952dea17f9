package seccompbpf

import (
	"errors"
	"fmt"
	"math/bits"

	"golang.org/x/sys/unix"
)

// label names an instruction position that jumps refer to before the program
// is laid out.
type label int

// instr is an instruction whose jump targets are labels. For a conditional
// jump jt and jf are the targets; for BPF_JA jt is.
type instr struct {
	code   uint16
	k      uint32
	jt, jf label
}

// assembler collects instructions with symbolic jumps and lays them out.
// Classic BPF conditional jumps only reach 255 instructions ahead, so
// assemble relaxes a conditional jump whose target is farther into a jump to
// an unconditional BPF_JA (32-bit offset) placed right after it.
type assembler struct {
	prog   []instr
	labels []int // label -> index in prog; -1 until bound
}

func newAssembler() *assembler {
	return &assembler{}
}

func (a *assembler) newLabel() label {
	a.labels = append(a.labels, -1)
	return label(len(a.labels) - 1)
}

// bind makes l refer to the next instruction emitted.
func (a *assembler) bind(l label) {
	if a.labels[l] != -1 {
		panic("seccompbpf: label bound twice")
	}
	a.labels[l] = len(a.prog)
}

func (a *assembler) stmt(code uint16, k uint32) {
	a.prog = append(a.prog, instr{code: code, k: k})
}

// load loads the 32-bit word at offset off of seccomp_data into A.
func (a *assembler) load(off uint32) {
	a.stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, off)
}

// jump emits a conditional jump on A op k (op is BPF_JEQ, BPF_JGT, ...).
func (a *assembler) jump(op uint16, k uint32, jt, jf label) {
	a.prog = append(a.prog, instr{code: unix.BPF_JMP | op | unix.BPF_K, k: k, jt: jt, jf: jf})
}

// ja emits an unconditional jump.
func (a *assembler) ja(l label) {
	a.prog = append(a.prog, instr{code: unix.BPF_JMP | unix.BPF_JA, jt: l})
}

func isJump(code uint16) bool {
	return code&0x07 == unix.BPF_JMP
}

func isCondJump(code uint16) bool {
	return isJump(code) && code&0xf0 != unix.BPF_JA
}

// Relaxation modes of a conditional jump: which targets go through a BPF_JA
// placed after it. With both, the layout is `jcond 0,1; ja T; ja F`.
const (
	viaTrueJA  = 1 << 0
	viaFalseJA = 1 << 1
)

// assemble resolves labels and returns the program and the number of BPF_JA
// instructions relaxation added.
func (a *assembler) assemble() ([]unix.SockFilter, int, error) {
	n := len(a.prog)
	target := func(i int, l label) (int, error) {
		t := a.labels[l]
		if t < 0 || t >= n {
			return 0, fmt.Errorf("internal error: instruction %d jumps to unbound label %d", i, l)
		}
		if t <= i {
			return 0, fmt.Errorf("internal error: instruction %d jumps backwards to %d", i, t)
		}
		return t, nil
	}
	for i, in := range a.prog {
		if !isJump(in.code) {
			continue
		}
		if _, err := target(i, in.jt); err != nil {
			return nil, 0, err
		}
		if isCondJump(in.code) {
			if _, err := target(i, in.jf); err != nil {
				return nil, 0, err
			}
		}
	}

	// Grow jumps until every offset fits. Modes only ever gain bits, so this
	// ends after at most two passes per conditional jump.
	mode := make([]uint8, n)
	pos := make([]int, n) // final position of each instruction
	for {
		p := 0
		for i := range a.prog {
			pos[i] = p
			p += 1 + bits.OnesCount8(mode[i])
		}
		if p > 1<<16 {
			return nil, 0, errors.New("program too large")
		}
		changed := false
		for i, in := range a.prog {
			if !isCondJump(in.code) {
				continue
			}
			if mode[i]&viaTrueJA == 0 && pos[a.labels[in.jt]]-pos[i]-1 > 255 {
				mode[i] |= viaTrueJA
				changed = true
			}
			if mode[i]&viaFalseJA == 0 && pos[a.labels[in.jf]]-pos[i]-1 > 255 {
				mode[i] |= viaFalseJA
				changed = true
			}
		}
		if !changed {
			break
		}
	}

	out := make([]unix.SockFilter, 0, n)
	added := 0
	ja := func(to int) {
		out = append(out, unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JA, K: uint32(to - len(out) - 1)})
		added++
	}
	for i, in := range a.prog {
		if len(out) != pos[i] {
			return nil, 0, fmt.Errorf("internal error: instruction %d laid out at %d, planned at %d", i, len(out), pos[i])
		}
		switch {
		case isCondJump(in.code):
			p := pos[i]
			t, f := pos[a.labels[in.jt]], pos[a.labels[in.jf]]
			jt, jf := t-p-1, f-p-1
			slot := 1 // offset of the next BPF_JA after this jump
			if mode[i]&viaTrueJA != 0 {
				jt = slot - 1
				slot++
			}
			if mode[i]&viaFalseJA != 0 {
				jf = slot - 1
			}
			if jt < 0 || jt > 255 || jf < 0 || jf > 255 {
				return nil, 0, fmt.Errorf("internal error: instruction %d has jump offsets %d, %d", i, jt, jf)
			}
			out = append(out, unix.SockFilter{Code: in.code, Jt: uint8(jt), Jf: uint8(jf), K: in.k})
			if mode[i]&viaTrueJA != 0 {
				ja(t)
			}
			if mode[i]&viaFalseJA != 0 {
				ja(f)
			}
		case isJump(in.code):
			ja(pos[a.labels[in.jt]])
			added-- // not added by relaxation
		default:
			out = append(out, unix.SockFilter{Code: in.code, K: in.k})
		}
	}
	return out, added, nil
}
