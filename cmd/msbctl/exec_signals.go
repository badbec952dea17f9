package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// execSignals decides what msbctl exec does with the signals it gets. The
// first SIGINT is passed to the remote command (sent on the returned
// channel), which decides how to end; a second one gives up on it. SIGTERM
// and SIGHUP — a supervisor's `timeout`, a closed terminal — end msbctl at
// once, never waiting on a command that may ignore them: abort hangs up,
// which kills the remote command. stop undoes the subscription.
func execSignals(abort func(os.Signal)) (forward <-chan syscall.Signal, stop func()) {
	sigs := make(chan syscall.Signal, 4)
	osSigs := make(chan os.Signal, 4)
	signal.Notify(osSigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		interrupts := 0
		for {
			select {
			case <-done:
				return
			case s := <-osSigs:
				if s != os.Interrupt {
					abort(s)
					return
				}
				if interrupts++; interrupts > 1 {
					abort(s)
					return
				}
				select {
				case sigs <- syscall.SIGINT:
				default: // four pending already: the command is not reacting
				}
			}
		}
	}()
	return sigs, func() { signal.Stop(osSigs); close(done) }
}

// abortedExit reports why msbctl hung up on the command and returns the exit
// code a shell gives for the signal (128+n).
func abortedExit(stderr io.Writer, sig os.Signal) int {
	n := int(syscall.SIGINT)
	if ss, ok := sig.(syscall.Signal); ok {
		n = int(ss)
	}
	switch sig {
	case os.Interrupt:
		fmt.Fprintln(stderr, "msbctl: interrupted twice: hung up, which stops the command")
	default:
		fmt.Fprintf(stderr, "msbctl: %v: hung up, which stops the command\n", sig)
	}
	return 128 + n
}
