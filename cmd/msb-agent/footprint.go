package main

import (
	"os"
	"runtime"
)

// The agent idles in every sandbox, so its own memory is paid once per
// sandbox (hundreds per host): keep it small. One P: the agent only moves
// bytes between pipes and its socket, and each P costs a thread and per-P
// caches (about 200 KiB of an idle agent's 1.1 MiB PSS, measured with
// hack/bench/density.sh). GOMAXPROCS in the environment wins.
//
// Tried and left out: a lower GOGC or a GOMEMLIMIT of a few MiB (the
// heap of an idle agent never reaches the first GC; a limit only makes it
// collect, and the collector's own structures cost more than the garbage),
// and a forced GC with FreeOSMemory after start-up (same).
func init() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}
