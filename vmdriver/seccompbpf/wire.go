package seccompbpf

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// insnSize is the size of struct sock_filter and of one instruction on the
// wire.
const insnSize = 8

// Marshal encodes prog for handing from the daemon to the agent: 8 bytes per
// instruction, laid out as struct sock_filter (u16 code, u8 jt, u8 jf, u32 k)
// in native byte order. Both ends run on the same machine, so native order
// is the kernel's own.
func Marshal(prog []unix.SockFilter) []byte {
	b := make([]byte, 0, insnSize*len(prog))
	for _, in := range prog {
		b = binary.NativeEndian.AppendUint16(b, in.Code)
		b = append(b, in.Jt, in.Jf)
		b = binary.NativeEndian.AppendUint32(b, in.K)
	}
	return b
}

// Unmarshal decodes what Marshal produced. It refuses empty input, a length
// that is not a multiple of 8, and more than 4096 instructions (the kernel's
// limit), so a truncated or corrupt hand-over fails here rather than leaving
// the sandbox without a filter. The kernel validates the instructions.
func Unmarshal(b []byte) ([]unix.SockFilter, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("seccompbpf: empty program")
	}
	if len(b)%insnSize != 0 {
		return nil, fmt.Errorf("seccompbpf: program length %d is not a multiple of %d", len(b), insnSize)
	}
	if n := len(b) / insnSize; n > maxInsns {
		return nil, fmt.Errorf("seccompbpf: program has %d instructions, the limit is %d", n, maxInsns)
	}
	prog := make([]unix.SockFilter, len(b)/insnSize)
	for i := range prog {
		in := b[i*insnSize:]
		prog[i] = unix.SockFilter{
			Code: binary.NativeEndian.Uint16(in[0:]),
			Jt:   in[2],
			Jf:   in[3],
			K:    binary.NativeEndian.Uint32(in[4:]),
		}
	}
	return prog, nil
}
