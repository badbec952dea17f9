package seccompbpf

import "golang.org/x/sys/unix"

// native is AArch64. 32-bit ARM tasks report AUDIT_ARCH_ARM and are refused
// by the architecture check.
var native = &arch{
	name:    "arm64",
	audit:   unix.AUDIT_ARCH_AARCH64,
	numbers: syscallNumbers,
}
