package agent

import (
	"fmt"
	"io"
	"os"

	"msb.dev/msb/vmdriver/seccompbpf"
)

// maxFilterBytes bounds what InstallSeccomp reads: a classic BPF program has
// at most 4096 instructions of 8 bytes.
const maxFilterBytes = 4096 * 8

// InstallSeccomp reads a compiled seccomp filter (seccompbpf wire format) from
// fd, closes fd and installs the filter on every thread of the agent, with
// no_new_privs. The host compiles the sandbox's profile once instead of
// letting the runtime compile it at every start; the agent installs it as its
// first act, before it reads anything the sandbox can write or starts any
// process, so nothing in the sandbox ever runs unfiltered. Every process the
// agent starts inherits the filter.
func InstallSeccomp(fd int) error {
	f := os.NewFile(uintptr(fd), "seccomp-filter")
	if f == nil {
		return fmt.Errorf("seccomp filter: bad descriptor %d", fd)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxFilterBytes+1))
	f.Close()
	if err != nil {
		return fmt.Errorf("seccomp filter: read fd %d: %w", fd, err)
	}
	if len(b) > maxFilterBytes {
		return fmt.Errorf("seccomp filter: more than %d bytes", maxFilterBytes)
	}
	prog, err := seccompbpf.Unmarshal(b)
	if err != nil {
		return fmt.Errorf("seccomp filter: %w", err)
	}
	if err := seccompbpf.Install(prog); err != nil {
		return fmt.Errorf("seccomp filter: install: %w", err)
	}
	return nil
}
