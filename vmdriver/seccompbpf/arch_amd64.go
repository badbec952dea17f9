package seccompbpf

import "golang.org/x/sys/unix"

// native is x86_64. The kernel's x86_64 entry also serves the x32 ABI, whose
// syscall numbers have bit 30 set and whose AUDIT_ARCH is AUDIT_ARCH_X86_64
// too, so the filter must reject those numbers itself.
var native = &arch{
	name:    "amd64",
	audit:   unix.AUDIT_ARCH_X86_64,
	x32:     true,
	numbers: syscallNumbers,
}
