// Command hostile does, inside a sandbox, what hostile code would do to the
// sandbox's own agent and limits; the e2e tests run it and judge from the
// host. It is built static by the tests and mounted read-only.
//
//	hostile mem MIB     allocate and touch MIB MiB, then sleep (the memory limit should kill it)
//	hostile ptrace PID  PTRACE_ATTACH to PID; prints "attached" or "refused: ERR", exits 0/1
//	hostile forkbomb    fork children that sleep until fork fails, forever
package main

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: hostile mem MIB | ptrace PID | forkbomb")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "mem":
		n, _ := strconv.Atoi(os.Args[2])
		var keep [][]byte
		for i := 0; i < n; i++ {
			b := make([]byte, 1<<20)
			for j := 0; j < len(b); j += 4096 {
				b[j] = 1
			}
			keep = append(keep, b)
		}
		fmt.Printf("allocated %d MiB\n", len(keep))
		time.Sleep(time.Hour)
	case "ptrace":
		pid, _ := strconv.Atoi(os.Args[2])
		if err := syscall.PtraceAttach(pid); err != nil {
			fmt.Printf("refused: %v\n", err)
			os.Exit(1)
		}
		fmt.Println("attached")
		syscall.PtraceDetach(pid)
	case "forkbomb":
		forkbomb()
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}

// forkbomb keeps starting copies of "sleep" until the pids limit refuses,
// and keeps trying: whatever exits is replaced at once.
func forkbomb() {
	self, _ := os.Executable()
	for {
		_, err := syscall.ForkExec(self, []string{"hostile", "mem", "0"}, &syscall.ProcAttr{})
		if err != nil {
			time.Sleep(time.Millisecond)
		}
	}
}
