package seccompbpf

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Install sets no_new_privs and loads prog for every thread of the calling
// process: seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, prog).
//
// A Go process has several threads by the time it can call this, and a filter
// attached to one thread only would leave the others, and any goroutine
// scheduled on them, unfiltered. With TSYNC the kernel attaches the filter
// (and no_new_privs) to all threads or to none, and Install reports the
// latter as an error. Threads created later inherit the filter.
func Install(prog []unix.SockFilter) error {
	if len(prog) == 0 || len(prog) > maxInsns {
		return fmt.Errorf("seccompbpf: program has %d instructions, want 1..%d", len(prog), maxInsns)
	}
	// no_new_privs is per thread and seccomp checks it on the calling thread
	// (without it, loading a filter needs CAP_SYS_ADMIN), so both calls must
	// run on the same thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("seccompbpf: set no_new_privs: %w", err)
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if errno != 0 {
		return fmt.Errorf("seccompbpf: seccomp(SET_MODE_FILTER, TSYNC): %w", errno)
	}
	if r != 0 {
		// With TSYNC a positive result is the ID of a thread that could not
		// be synchronized; no thread got the filter.
		return fmt.Errorf("seccompbpf: seccomp(SET_MODE_FILTER, TSYNC): thread %d cannot be synchronized", r)
	}
	return nil
}

// Usable reports whether this kernel runs the programs Compile makes: they
// return SECCOMP_RET_KILL_PROCESS (Linux 4.14+), which older kernels lack.
// Where it fails the caller should leave seccomp to the runtime (runc falls
// back through libseccomp) rather than start sandboxes that cannot install
// their filter.
func Usable() error {
	act := uint32(unix.SECCOMP_RET_KILL_PROCESS)
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_GET_ACTION_AVAIL, 0, uintptr(unsafe.Pointer(&act)))
	if errno != 0 {
		return fmt.Errorf("seccompbpf: the kernel lacks SECCOMP_RET_KILL_PROCESS: %w", errno)
	}
	return nil
}
