package apiserver_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
	"msb.dev/msb/vmdriver/agent"
	"msb.dev/msb/vmdriver/agent/agenttest"
)

// TestMain removes the msb-agent that agenttest built.
func TestMain(m *testing.M) {
	code := m.Run()
	agenttest.Cleanup()
	os.Exit(code)
}

// startAgent builds and runs the real msb-agent with --dir (not as PID 1) and
// returns its agent socket once it is ready.
func startAgent(t *testing.T, dir string) string {
	t.Helper()
	sock, _ := startAgentStoppable(t, dir)
	return sock
}

// startAgentStoppable is startAgent that also returns a func stopping the
// agent (SIGTERM, then SIGKILL of its process group).
func startAgentStoppable(t *testing.T, dir string) (string, func()) {
	t.Helper()
	bin := agenttest.Build(t)
	adir := filepath.Join(dir, "agent")
	if err := os.MkdirAll(adir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := agent.WriteConfig(adir, agent.Config{Args: []string{"sleep", "1000"}, Env: []string{"PATH=/usr/bin:/bin"}}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "init", "--dir", adir)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	t.Cleanup(stop)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := agent.WaitReady(ctx, adir); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(adir, agent.SocketFile), stop
}

// TestExecAfterAgentRestart: msbd keeps its agent connections warm; an agent
// that restarted behind the same socket still gets the next exec.
func TestExecAfterAgentRestart(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	if _, err := e.client.Create(ctx, sandbox("default", "box", nil)); err != nil {
		t.Fatal(err)
	}
	sock, stop := startAgentStoppable(t, e.dir)
	e.rt.setAgentSock(sock)
	run := func(what string) {
		t.Helper()
		var out bytes.Buffer
		code, err := e.client.Exec(ctx, "default", "box", client.ExecOptions{Command: []string{"echo", what}, Stdout: &out})
		if err != nil || code != 0 || out.String() != what+"\n" {
			t.Fatalf("exec echo %s: code %d err %v out %q", what, code, err, out.String())
		}
	}
	run("one")
	run("two") // on the kept connection
	stop()
	if sock2, _ := startAgentStoppable(t, e.dir); sock2 != sock {
		t.Fatalf("restarted agent listens at %s, not %s", sock2, sock)
	}
	run("three")
}

// TestExecAgent runs commands through msbd's exec endpoint in a real msb-agent.
func TestExecAgent(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	if _, err := e.client.Create(ctx, sandbox("default", "box", nil)); err != nil {
		t.Fatal(err)
	}
	e.rt.setAgentSock(startAgent(t, e.dir))

	var stdout, stderr bytes.Buffer
	code, err := e.client.Exec(ctx, "default", "box", client.ExecOptions{
		Command: []string{"sh", "-c", "echo out; echo err >&2; echo $FOO; pwd; exit 3"},
		Env:     []string{"FOO=bar"}, WorkingDir: "/tmp",
		Stdout: &stdout, Stderr: &stderr,
	})
	if err != nil {
		t.Fatal(err)
	}
	if code != 3 || stdout.String() != "out\nbar\n/tmp\n" || stderr.String() != "err\n" {
		t.Fatalf("exec: code %d stdout %q stderr %q", code, stdout.String(), stderr.String())
	}

	stdout.Reset()
	code, err = e.client.Exec(ctx, "default", "box", client.ExecOptions{
		Command: []string{"cat"}, Stdin: strings.NewReader("hello\n"), Stdout: &stdout,
	})
	if err != nil || code != 0 || stdout.String() != "hello\n" {
		t.Fatalf("exec cat: code %d err %v stdout %q", code, err, stdout.String())
	}

	// No stdin: closed at once.
	stdout.Reset()
	code, err = e.client.Exec(ctx, "default", "box", client.ExecOptions{Command: []string{"cat"}, Stdout: &stdout})
	if err != nil || code != 0 || stdout.String() != "" {
		t.Fatalf("exec cat without stdin: code %d err %v stdout %q", code, err, stdout.String())
	}

	stdout.Reset()
	code, err = e.client.Exec(ctx, "default", "box", client.ExecOptions{
		Command: []string{"stty", "size"}, TTY: true, Rows: 12, Cols: 34, Stdout: &stdout,
	})
	if err != nil || code != 0 || stdout.String() != "12 34\r\n" {
		t.Fatalf("exec tty: code %d err %v stdout %q", code, err, stdout.String())
	}

	// Resize and signals reach the process. The command itself waits until its
	// terminal's size changes, so nothing here depends on how long the resize
	// takes to arrive.
	out := &syncBuffer{}
	resize := make(chan v1alpha1.WindowSize, 1)
	done := make(chan error, 1)
	go func() {
		code, err := e.client.Exec(ctx, "default", "box", client.ExecOptions{
			Command: []string{"sh", "-c", `stty size; while [ "$(stty size)" = "10 20" ]; do sleep 0.01; done; stty size`},
			TTY:     true, Rows: 10, Cols: 20, Stdout: out, Resize: resize,
		})
		if err == nil && code != 0 {
			err = fmt.Errorf("exit code %d", code)
		}
		done <- err
	}()
	waitFor(t, func() bool { return strings.Contains(out.String(), "10 20\r\n") }, "first size")
	resize <- v1alpha1.WindowSize{Rows: 44, Cols: 88}
	if err := <-done; err != nil {
		t.Fatalf("exec with resize: %v", err)
	}
	if got := out.String(); got != "10 20\r\n44 88\r\n" {
		t.Fatalf("sizes before and after the resize: %q, want \"10 20\\r\\n44 88\\r\\n\"", got)
	}

	// The signal is sent once the command has started (it says so).
	signals := make(chan syscall.Signal, 1)
	started := &syncBuffer{}
	go func() {
		code, err := e.client.Exec(ctx, "default", "box", client.ExecOptions{
			Command: []string{"sh", "-c", "echo started; exec sleep 100"}, Stdout: started, Signals: signals,
		})
		if err == nil && code != 128+int(syscall.SIGTERM) {
			err = fmt.Errorf("exit code %d, want %d", code, 128+int(syscall.SIGTERM))
		}
		done <- err
	}()
	waitFor(t, func() bool { return started.String() == "started\n" }, "the command to start")
	signals <- syscall.SIGTERM
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exec with signal: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("signal did not end the exec")
	}

	code, err = e.client.Exec(ctx, "default", "box", client.ExecOptions{Command: []string{"no-such-command"}})
	if err != nil || code != 127 {
		t.Fatalf("exec missing command: code %d err %v", code, err)
	}

	// ctx ends a running exec.
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := e.client.Exec(cctx, "default", "box", client.ExecOptions{Command: []string{"sleep", "100"}}); err == nil {
		t.Fatal("exec outlived its context")
	}
}

// TestExecStdinBackpressure: a command that does not read its input does not
// stop msbd from hearing the client: a signal still arrives behind megabytes
// of unread stdin, and a client that hangs up still ends the command.
func TestExecStdinBackpressure(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	if _, err := e.client.Create(ctx, sandbox("default", "box", nil)); err != nil {
		t.Fatal(err)
	}
	e.rt.setAgentSock(startAgent(t, e.dir))
	flood := func() io.Reader { return io.LimitReader(zeroReader{}, 64<<20) }

	// The signal is sent once the command has started and the client has taken
	// msbd's whole initial stdin grant from its input (it reads only what it
	// may send), so the signal queues behind a full window of unread stdin.
	signals := make(chan syscall.Signal, 1)
	done := make(chan error, 1)
	started := &syncBuffer{}
	stdin := &countingReader{r: flood()}
	go func() {
		code, err := e.client.Exec(ctx, "default", "box", client.ExecOptions{
			Command: []string{"sh", "-c", "echo started; exec sleep 1000"}, Stdin: stdin, Stdout: started, Signals: signals,
		})
		if err == nil && code != 128+int(syscall.SIGTERM) {
			err = fmt.Errorf("exit code %d, want %d", code, 128+int(syscall.SIGTERM))
		}
		done <- err
	}()
	waitFor(t, func() bool { return started.String() == "started\n" }, "the command to start")
	waitFor(t, func() bool { return stdin.n.Load() >= v1alpha1.StdinWindow }, "the client to send a whole stdin window")
	signals <- syscall.SIGTERM
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("signal behind unread stdin: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a signal sent behind unread stdin never arrived")
	}

	// The client hangs up: the command ends.
	cctx, cancel := context.WithCancel(ctx)
	go func() {
		_, err := e.client.Exec(cctx, "default", "box", client.ExecOptions{
			Command: []string{"sleep", "777"}, Stdin: flood(),
		})
		done <- err
	}()
	waitFor(t, func() bool { return processWithArgs("sleep", "777") }, "the command to start")
	cancel()
	<-done
	waitFor(t, func() bool { return !processWithArgs("sleep", "777") }, "the command of a client that hung up to end")
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// processWithArgs reports whether a process runs with exactly this argv.
func processWithArgs(argv ...string) bool {
	want := strings.Join(argv, "\x00") + "\x00"
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && string(b) == want {
			return true
		}
	}
	return false
}
