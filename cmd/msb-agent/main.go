// Command msb-agent is the PID 1 of every msb sandbox: it runs the sandbox's command,
// reaps orphans, forwards signals, and serves exec to the host over SSH on a unix
// socket. It is built static (CGO_ENABLED=0) and bind-mounted into the sandbox, so it
// depends on nothing in the image. The logic lives in msb.dev/msb/vmdriver/agent,
// next to the host-side client that speaks to it.
package main

import (
	"flag"
	"fmt"
	"os"

	"msb.dev/msb/vmdriver/agent"
)

const usage = `usage: msb-agent init [--dir DIR] [--seccomp-fd N] [--vsock-port P | --listen-fd N]
                      [--workload-cgroup-fds N,...]

Runs as the sandbox's init. DIR (default /.msb) holds config.json, agent.sock,
ready, log, log.1 and exit-code. With --seccomp-fd, descriptor N carries the
compiled seccomp filter, installed before anything else. In a microVM the
agent serves on vsock port P instead of DIR/agent.sock; --listen-fd serves on
an inherited listening socket. With --workload-cgroup-fds, the descriptors are
the cgroup.procs files of the workload's cgroup: every command the agent starts
runs there, under the sandbox's limits, while the agent keeps its own reserve.
`

func main() {
	if len(os.Args) >= 2 && os.Args[1] == agent.EnterVerb {
		// Not for users: the first step of every command the agent starts.
		os.Exit(agent.RunEnter(os.Args[2:]))
	}
	if len(os.Args) < 2 || os.Args[1] != "init" {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	dir := fs.String("dir", agent.DefaultDir, "shared directory with the host")
	seccompFD := fs.Int("seccomp-fd", -1, "descriptor with the compiled seccomp filter")
	vsockPort := fs.Uint("vsock-port", 0, "serve on this vsock port (in a microVM)")
	listenFD := fs.Int("listen-fd", -1, "serve on this inherited listening socket")
	cgroupFDs := fs.String("workload-cgroup-fds", "", "descriptors of the workload cgroup's cgroup.procs files, comma-separated")
	if err := fs.Parse(os.Args[2:]); err != nil {
		os.Exit(2)
	}
	if *cgroupFDs != "" {
		fds, err := agent.ParseFDs(*cgroupFDs)
		if err == nil {
			err = agent.UseWorkloadCgroups(fds)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "msb-agent: --workload-cgroup-fds: %v\n", err)
			os.Exit(agent.ExitAgentError)
		}
	}
	if *vsockPort > 1<<32-1 || (*vsockPort != 0 && *listenFD >= 0) || (*listenFD >= 0 && *listenFD <= 2) {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	os.Exit(agent.RunInitListen(*dir, *seccompFD, agent.Listen{VsockPort: uint32(*vsockPort), FD: *listenFD}))
}
