package agent

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// shortDeadlines makes the agent deadlines short for one test.
func shortDeadlines(t *testing.T) {
	call, keep := CallTimeout, KeepaliveInterval
	CallTimeout, KeepaliveInterval = 300*time.Millisecond, 200*time.Millisecond
	t.Cleanup(func() { CallTimeout, KeepaliveInterval = call, keep })
}

// A stopped agent fails every call with ErrUnresponsive instead of hanging:
// a new connection's handshake, a session on a kept connection, and a
// command already running; once it continues, it answers again.
func TestUnresponsiveAgent(t *testing.T) {
	shortDeadlines(t)
	a := startAgent(t, "", sleeper())
	sock := filepath.Join(a.dir, SocketFile)
	kept := a.dial(t)
	if err := Probe(context.Background(), sock); err != nil {
		t.Fatalf("probe of a live agent: %v", err)
	}

	running := make(chan error, 1)
	go func() {
		_, err := kept.Exec(context.Background(), ExecRequest{Argv: []string{"sleep", "1000"}})
		running <- err
	}()
	time.Sleep(100 * time.Millisecond) // let it start; the test holds either way
	stop := func() { a.cmd.Process.Signal(syscall.SIGSTOP) }
	cont := func() { a.cmd.Process.Signal(syscall.SIGCONT) }
	stop()
	t.Cleanup(cont)

	wantUnresponsive := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrUnresponsive) || !strings.Contains(err.Error(), "AgentUnresponsive") {
			t.Errorf("%s: %v, want ErrUnresponsive", what, err)
		}
	}
	select {
	case err := <-running:
		wantUnresponsive("running exec", err)
	case <-time.After(30 * time.Second):
		t.Fatal("a running exec still waits 30s after its agent stopped")
	}
	wantUnresponsive("probe", Probe(context.Background(), sock))
	_, err := Dial(context.Background(), sock)
	wantUnresponsive("dial", err)

	cont()
	var perr error
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if perr = Probe(context.Background(), sock); perr == nil {
			break
		}
	}
	if perr != nil {
		t.Fatalf("probe after SIGCONT: %v", perr)
	}
	c := a.dial(t)
	if code, err := c.Exec(context.Background(), ExecRequest{Argv: []string{"true"}}); err != nil || code != 0 {
		t.Errorf("exec after SIGCONT: %d, %v", code, err)
	}
}

// A kept connection to an agent that stopped fails the next session
// request within the deadline.
func TestUnresponsiveSessionOpen(t *testing.T) {
	shortDeadlines(t)
	a := startAgent(t, "", sleeper())
	c := a.dial(t)
	a.cmd.Process.Signal(syscall.SIGSTOP)
	t.Cleanup(func() { a.cmd.Process.Signal(syscall.SIGCONT) })
	_, err := c.Exec(context.Background(), ExecRequest{Argv: []string{"true"}})
	if !errors.Is(err, ErrUnresponsive) {
		t.Errorf("exec on a stopped agent: %v, want ErrUnresponsive", err)
	}
}
