// Command testagent stands in for msb-agent in the container driver's tests:
// it reads /.msb/config.json, runs the command with its output in /.msb/log,
// writes /.msb/exit-code and exits with that code. It installs the seccomp
// filter passed with --seccomp-fd the way msb-agent does. Build with CGO_ENABLED=0.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"msb.dev/msb/vmdriver/agent"
)

type config struct {
	Args       []string `json:"args"`
	Env        []string `json:"env"`
	WorkingDir string   `json:"workingDir"`
	UID        uint32   `json:"uid"`
	GID        uint32   `json:"gid"`
}

func main() {
	code, err := run()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testagent:", err)
		os.WriteFile("/.msb/agent-error", []byte(err.Error()), 0o644)
	}
	os.WriteFile("/.msb/exit-code.tmp", []byte(strconv.Itoa(code)+"\n"), 0o644)
	os.Rename("/.msb/exit-code.tmp", "/.msb/exit-code")
	os.Exit(code)
}

func run() (int, error) {
	if len(os.Args) < 2 || os.Args[1] != "init" {
		return 125, errors.New("usage: msb-agent init [--seccomp-fd N]")
	}
	// As msb-agent: the driver's compiled filter first, or nothing runs;
	// the command goes into the workload cgroup when the driver made one.
	var cgroupFDs []int
	for i := 2; i+1 < len(os.Args); i += 2 {
		switch os.Args[i] {
		case "--seccomp-fd":
			fd, err := strconv.Atoi(os.Args[i+1])
			if err != nil {
				return 125, err
			}
			if err := agent.InstallSeccomp(fd); err != nil {
				return 125, err
			}
		case "--workload-cgroup-fds":
			fds, err := agent.ParseFDs(os.Args[i+1])
			if err != nil {
				return 125, err
			}
			cgroupFDs = fds
		default:
			return 125, fmt.Errorf("unknown argument %q", os.Args[i])
		}
	}
	b, err := os.ReadFile("/.msb/config.json")
	if err != nil {
		return 125, err
	}
	var cfg config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return 125, err
	}
	path := cfg.Args[0]
	if !strings.Contains(path, "/") {
		for _, e := range cfg.Env {
			if p, ok := strings.CutPrefix(e, "PATH="); ok {
				os.Setenv("PATH", p)
			}
		}
		if path, err = exec.LookPath(path); err != nil {
			return 127, err
		}
	}
	log, err := os.OpenFile("/.msb/log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 125, err
	}
	cmd := &exec.Cmd{Path: path, Args: cfg.Args, Env: cfg.Env, Dir: cfg.WorkingDir, Stdout: log, Stderr: log}
	if cfg.UID != 0 || cfg.GID != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: cfg.UID, Gid: cfg.GID}}
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	if err := cmd.Start(); err != nil {
		return 126, err
	}
	for _, fd := range cgroupFDs {
		// Racy (the command already runs), which a test agent may be.
		if _, err := syscall.Pwrite(fd, []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
			return 125, err
		}
	}
	go func() {
		for s := range sigs {
			cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 125, err
	}
	return 0, nil
}
