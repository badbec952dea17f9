// Command ptracer runs inside a sandbox for TestTrampolineNotTraceable: it
// waits for a stopped process whose command line holds every word of its
// arguments, tries PTRACE_ATTACH as the sandbox's own code would, prints
// "attached" or "refused: ERR", then lets the process go on (SIGCONT).
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	words := os.Args[1:]
	deadline := time.Now().Add(8 * time.Second)
	for time.Now().Before(deadline) {
		if pid := find(words); pid > 0 {
			runtime.LockOSThread() // ptrace requests come from the tracer thread
			if err := syscall.PtraceAttach(pid); err != nil {
				fmt.Printf("refused: %v\n", err)
			} else {
				var ws syscall.WaitStatus
				syscall.Wait4(pid, &ws, 0x40000000 /* __WALL */, nil)
				fmt.Println("attached")
				syscall.PtraceDetach(pid)
			}
			syscall.Kill(pid, syscall.SIGCONT)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println("no stopped process found")
	os.Exit(1)
}

// find returns a stopped process (state T) whose command line has every word.
func find(words []string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cl, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		args := strings.Split(string(cl), "\x00")
		all := true
		for _, w := range words {
			found := false
			for _, a := range args {
				found = found || a == w
			}
			all = all && found
		}
		if !all {
			continue
		}
		stat, _ := os.ReadFile("/proc/" + e.Name() + "/stat")
		if i := strings.LastIndexByte(string(stat), ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'T' {
			return pid
		}
	}
	return 0
}
