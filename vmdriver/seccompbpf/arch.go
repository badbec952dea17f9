package seccompbpf

import "golang.org/x/sys/unix"

// The architectures the compiler has syscall tables for. Both are defined on
// every GOARCH, so the tests can compile and check either architecture's
// filter on any host; Compile itself only ever uses native.
var (
	// archAMD64 is x86_64. The kernel's x86_64 entry also serves the x32 ABI,
	// whose syscall numbers have bit 30 set and whose AUDIT_ARCH is
	// AUDIT_ARCH_X86_64 too, so the filter must reject those numbers itself.
	archAMD64 = &arch{
		name:    "amd64",
		audit:   unix.AUDIT_ARCH_X86_64,
		x32:     true,
		numbers: amd64Numbers,
	}

	// archARM64 is AArch64. 32-bit ARM tasks report AUDIT_ARCH_ARM and are
	// refused by the architecture check.
	archARM64 = &arch{
		name:    "arm64",
		audit:   unix.AUDIT_ARCH_AARCH64,
		numbers: arm64Numbers,
	}
)
