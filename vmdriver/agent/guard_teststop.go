//go:build msbtest_trampolinestop

package agent

import (
	"path/filepath"
	"syscall"
)

// In this test build a trampoline for a command named stop-in-trampoline
// stops itself (SIGSTOP) before anything else, so a test can try to
// ptrace it from inside the sandbox at the moment a real attacker would
// aim for; SIGCONT lets it go on.
func init() {
	trampolineStartHook = func(args []string) {
		if len(args) > 0 && filepath.Base(args[0]) == "stop-in-trampoline" {
			syscall.Kill(syscall.Getpid(), syscall.SIGSTOP)
		}
	}
}
