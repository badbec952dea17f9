package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"msb.dev/msb/vmdriver/agent/agenttest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	agenttest.Cleanup()
	os.Exit(code)
}

type testAgent struct {
	t    *testing.T
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
	code int
}

// startAgent runs the agent (not as PID 1: it makes itself a subreaper) in dir,
// or in a fresh temporary directory when dir is "", and waits until it is ready.
func startAgent(t testing.TB, dir string, cfg Config) *testAgent {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	if err := WriteConfig(dir, cfg); err != nil {
		t.Fatal(err)
	}
	a := &testAgent{dir: dir, done: make(chan struct{})}
	a.cmd = exec.Command(agenttest.Build(t), "init", "--dir", dir)
	a.cmd.Stderr = os.Stderr
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		a.cmd.Wait()
		a.code = a.cmd.ProcessState.ExitCode()
		close(a.done)
	}()
	t.Cleanup(func() {
		// SIGTERM goes to the main command; the agent then stops what is left and
		// exits. SIGKILL first would orphan the main command.
		a.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.done:
		case <-time.After(5 * time.Second):
			a.cmd.Process.Signal(syscall.SIGKILL)
			<-a.done
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := WaitReady(ctx, dir); err != nil {
		// A main command that exits at once may beat the ready check.
		if _, ok, _ := ReadExitCode(dir); !ok {
			t.Fatal(err)
		}
	}
	return a
}

func (a *testAgent) wait(t testing.TB, d time.Duration) int {
	t.Helper()
	select {
	case <-a.done:
		return a.code
	case <-time.After(d):
		t.Fatalf("agent did not exit within %v", d)
		return -1
	}
}

func (a *testAgent) dial(t testing.TB) *Client {
	t.Helper()
	c, err := Dial(context.Background(), filepath.Join(a.dir, SocketFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func sleeper() Config {
	return Config{Args: []string{"sleep", "1000"}, Env: []string{"PATH=/usr/bin:/bin"}}
}

func readLog(t *testing.T, dir string) string {
	t.Helper()
	var b bytes.Buffer
	if err := ReadLog(dir, &b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestMainCommand(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		code    int
		wantLog string
		signal  int // what ReadExitSignal must say
	}{
		{"exit 3", []string{"sh", "-c", "echo out; echo err >&2; echo out2; exit 3"}, 3, "out\nerr\nout2\n", 0},
		{"killed", []string{"sh", "-c", "kill -9 $$"}, 128 + 9, "", 9},
		{"exit 137", []string{"sh", "-c", "exit 137"}, 137, "", 0},
		{"not found", []string{"no-such-command"}, 127, `msb-agent: exec "no-such-command": executable file not found in $PATH`, 0},
		{"not executable", []string{"/etc/passwd"}, 126, "permission denied", 0},
		{"workdir and env", []string{"sh", "-c", "pwd; echo $FOO"}, 0, "/tmp\nbar\n", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := startAgent(t, "", Config{Args: tc.args, Env: []string{"PATH=/usr/bin:/bin", "FOO=bar"}, WorkingDir: "/tmp"})
			if code := a.wait(t, 5*time.Second); code != tc.code {
				t.Errorf("agent exit code %d, want %d", code, tc.code)
			}
			code, ok, err := ReadExitCode(a.dir)
			if err != nil || !ok || code != tc.code {
				t.Errorf("ReadExitCode = %d, %v, %v; want %d", code, ok, err, tc.code)
			}
			if sig := ReadExitSignal(a.dir); sig != tc.signal {
				t.Errorf("ReadExitSignal = %d, want %d", sig, tc.signal)
			}
			if got := readLog(t, a.dir); !strings.Contains(got, tc.wantLog) {
				t.Errorf("log = %q, want it to contain %q", got, tc.wantLog)
			}
			for _, f := range []string{ReadyFile, SocketFile} {
				if _, err := os.Stat(filepath.Join(a.dir, f)); err == nil {
					t.Errorf("%s left behind after exit", f)
				}
			}
		})
	}
}

func TestForwardSignal(t *testing.T) {
	a := startAgent(t, "", sleeper())
	a.cmd.Process.Signal(syscall.SIGTERM)
	if code := a.wait(t, 5*time.Second); code != 128+15 {
		t.Errorf("exit code %d, want %d", code, 128+15)
	}
}

func TestLeftoversTerminated(t *testing.T) {
	// The main command exits leaving a child that ignores SIGTERM: the agent must
	// still exit with the main command's code once the grace period is over,
	// not wait for the leftover's 100 s sleep (the bound below is a hang guard
	// far under that, not a speed check).
	a := startAgent(t, "", Config{Args: []string{"sh", "-c", "sh -c 'trap \"\" TERM; sleep 100' & sleep 100 & sleep 0.1; exit 5"}})
	if code := a.wait(t, 60*time.Second); code != 5 {
		t.Errorf("exit code %d, want 5", code)
	}
}

func TestOrphansReaped(t *testing.T) {
	// The subshell exits at once, so its sleeps are reparented to the agent.
	// The sleeps are long enough to be seen on a loaded machine; the loops
	// wait for states, with bounds only as hang guards.
	a := startAgent(t, "", Config{Args: []string{"sh", "-c", "(sleep 2 & sleep 3 &); exec sleep 1000"}})
	c := a.dial(t)
	code, err := c.Exec(context.Background(), ExecRequest{Argv: []string{"sh", "-c", "(sleep 2 &)"}})
	if err != nil || code != 0 {
		t.Fatalf("exec: %d, %v", code, err)
	}
	pid := a.cmd.Process.Pid
	sawOrphan := false
	for deadline := time.Now().Add(30 * time.Second); !sawOrphan && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		sawOrphan = len(childrenOf(t, pid, "")) > 1
	}
	if !sawOrphan {
		t.Fatal("orphans were never reparented to the agent; the test proves nothing")
	}
	// Once the sleeps end the agent must reap them: no zombie may stay, and
	// only the main command remains.
	var z []string
	n := 0
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if z, n = childrenOf(t, pid, "Z"), len(childrenOf(t, pid, "")); len(z) == 0 && n == 1 {
			return
		}
	}
	t.Errorf("agent still has %d children (zombies: %v), want only the main command", n, z)
}

// childrenOf lists the children of pid (in the given state, if not "").
func childrenOf(t *testing.T, pid int, state string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(pid) || (state != "" && f[0] != state) {
			continue
		}
		out = append(out, e.Name()+":"+f[0])
	}
	return out
}

func TestLogRotation(t *testing.T) {
	const limit = 64 << 10
	a := startAgent(t, "", Config{Args: []string{"seq", "1", "200000"}, LogMaxBytes: limit})
	a.wait(t, 10*time.Second)
	got := readLog(t, a.dir)
	// The head that was dropped is announced, and counted exactly.
	marker, got, _ := strings.Cut(got, "\n")
	dropped := ReadLogDropped(a.dir)
	if want := strings.TrimSuffix(droppedMarker(dropped), "\n"); dropped == 0 || marker != want {
		t.Errorf("log starts with %q, want the marker %q", marker, want)
	}
	if len(got) > limit || len(got) < limit/2 {
		t.Errorf("log is %d bytes, want between %d and %d", len(got), limit/2, limit)
	}
	var full strings.Builder
	for i := 1; i <= 200000; i++ {
		fmt.Fprintf(&full, "%d\n", i)
	}
	if !strings.HasSuffix(full.String(), got) {
		t.Errorf("log is not the tail of the output")
	}
	// Cut at a line boundary: what is kept starts a line, and the count is
	// what is missing.
	if head := full.Len() - len(got); head > 0 && full.String()[head-1] != '\n' {
		t.Errorf("log starts mid-line: %q", got[:min(len(got), 20)])
	}
	if int64(full.Len()-len(got)) != dropped {
		t.Errorf("log.dropped = %d, want %d", dropped, full.Len()-len(got))
	}
}

func TestFollowLog(t *testing.T) {
	// Lines arrive over ~1s while the log rotates every 512 bytes.
	a := startAgent(t, "", Config{Args: []string{"sh", "-c", "i=0; while [ $i -lt 200 ]; do i=$((i+1)); echo line$i; sleep 0.005; done"}, LogMaxBytes: 1024})
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() { errc <- FollowLog(ctx, a.dir, pw); pw.Close() }()
	var got []string
	buf := make([]byte, 4096)
	var partial string
	deadline := time.After(10 * time.Second)
	for len(got) == 0 || got[len(got)-1] != "line200" {
		type res struct {
			n   int
			err error
		}
		rc := make(chan res, 1)
		go func() { n, err := pr.Read(buf); rc <- res{n, err} }()
		select {
		case r := <-rc:
			if r.err != nil {
				t.Fatal(r.err)
			}
			lines := strings.Split(partial+string(buf[:r.n]), "\n")
			partial = lines[len(lines)-1]
			got = append(got, lines[:len(lines)-1]...)
		case <-deadline:
			t.Fatalf("follow stalled after %d lines", len(got))
		}
	}
	cancel()
	go io.Copy(io.Discard, pr)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// The start may have rotated away before following began (said by a
	// marker line); after that nothing is lost.
	if strings.HasPrefix(got[0], "[msb: ") {
		got = got[1:]
	}
	first, _ := strconv.Atoi(strings.TrimPrefix(got[0], "line"))
	for i, l := range got {
		if want := fmt.Sprintf("line%d", first+i); l != want {
			t.Fatalf("line %d = %q, want %q (lines lost or repeated)", i, l, want)
		}
	}
}

func TestExecOutput(t *testing.T) {
	a := startAgent(t, "", sleeper())
	c := a.dial(t)
	dir := t.TempDir()
	out := make([]byte, 5<<20)
	errb := make([]byte, 1<<20)
	rand.Read(out)
	rand.Read(errb)
	os.WriteFile(filepath.Join(dir, "out"), out, 0o644)
	os.WriteFile(filepath.Join(dir, "err"), errb, 0o644)
	var stdout, stderr bytes.Buffer
	code, err := c.Exec(context.Background(), ExecRequest{
		Argv:       []string{"sh", "-c", `cat "$1"; cat "$2" >&2; printf '\377\376x'; printf '\300y' >&2`, "sh", "out", "err"},
		Env:        []string{"PATH=/bin:/usr/bin"},
		WorkingDir: dir,
		Stdout:     &stdout,
		Stderr:     &stderr,
	})
	if err != nil || code != 0 {
		t.Fatalf("exec: %d, %v", code, err)
	}
	if want := append(out, "\xff\xfex"...); !bytes.Equal(stdout.Bytes(), want) {
		t.Errorf("stdout: %d bytes, differs from the %d written", stdout.Len(), len(want))
	}
	if want := append(errb, "\xc0y"...); !bytes.Equal(stderr.Bytes(), want) {
		t.Errorf("stderr: %d bytes, differs from the %d written", stderr.Len(), len(want))
	}
}

func TestExecExitCodes(t *testing.T) {
	a := startAgent(t, "", sleeper())
	c := a.dial(t)
	noexec := filepath.Join(t.TempDir(), "noexec")
	os.WriteFile(noexec, []byte("#!/bin/sh\n"), 0o644)
	for _, tc := range []struct {
		argv       []string
		code       int
		wantStderr string
	}{
		{[]string{"true"}, 0, ""},
		{[]string{"sh", "-c", "exit 1"}, 1, ""},
		{[]string{"sh", "-c", "exit 42"}, 42, ""},
		{[]string{"sh", "-c", "kill -KILL $$"}, 128 + 9, ""},
		{[]string{"sh", "-c", "exit 137"}, 137, ""},
		{[]string{"foo-not-there"}, 127, `msb-agent: exec "foo-not-there": executable file not found in $PATH` + "\n"},
		{[]string{"/no/such/file"}, 127, "no such file or directory"},
		{[]string{noexec}, 126, "permission denied"},
	} {
		t.Run(strings.Join(tc.argv, " "), func(t *testing.T) {
			var stderr bytes.Buffer
			code, err := c.Exec(context.Background(), ExecRequest{Argv: tc.argv, Stderr: &stderr})
			if err != nil || code != tc.code {
				t.Errorf("exec = %d, %v; want %d", code, err, tc.code)
			}
			// Run tells a signal from an exit code of the same value.
			st, err := c.Run(context.Background(), ExecRequest{Argv: tc.argv})
			wantSig := syscall.Signal(0)
			if strings.Contains(strings.Join(tc.argv, " "), "kill -KILL") {
				wantSig = syscall.SIGKILL
			}
			if err != nil || st.Code != tc.code || st.Signal != wantSig {
				t.Errorf("run = %+v, %v; want code %d signal %d", st, err, tc.code, wantSig)
			}
			if !strings.Contains(stderr.String(), tc.wantStderr) {
				t.Errorf("stderr = %q, want %q", stderr.String(), tc.wantStderr)
			}
		})
	}
}

func TestExecEnvAndUser(t *testing.T) {
	a := startAgent(t, "", Config{Args: []string{"sleep", "1000"}, Env: []string{"PATH=/usr/bin:/bin", "A=1", "B=2"}, WorkingDir: "/tmp"})
	c := a.dial(t)
	var out bytes.Buffer
	code, err := c.Exec(context.Background(), ExecRequest{
		Argv: []string{"sh", "-c", `echo "$A $B $(pwd) $(id -u):$(id -g)"`}, Env: []string{"B=3"}, User: "nobody", Stdout: &out,
	})
	if err != nil || code != 0 {
		t.Fatalf("exec = %d, %v", code, err)
	}
	if os.Geteuid() != 0 {
		t.Skip("user switch needs root")
	}
	if got := out.String(); !strings.HasPrefix(got, "1 3 /tmp 65534:") {
		t.Errorf("output %q, want env override, workdir and user nobody", got)
	}
}

func TestExecStdin(t *testing.T) {
	a := startAgent(t, "", sleeper())
	c := a.dial(t)
	in := make([]byte, 1<<20)
	rand.Read(in)
	var out bytes.Buffer
	code, err := c.Exec(context.Background(), ExecRequest{Argv: []string{"cat"}, Stdin: bytes.NewReader(in), Stdout: &out})
	if err != nil || code != 0 || !bytes.Equal(out.Bytes(), in) {
		t.Errorf("cat: %d, %v, %d bytes back of %d", code, err, out.Len(), len(in))
	}
	// No stdin at all: EOF at once.
	out.Reset()
	code, err = c.Exec(context.Background(), ExecRequest{Argv: []string{"wc", "-c"}, Stdout: &out})
	if err != nil || code != 0 || strings.TrimSpace(out.String()) != "0" {
		t.Errorf("wc -c with no stdin: %d, %v, %q", code, err, out.String())
	}
}

func TestExecTTY(t *testing.T) {
	a := startAgent(t, "", sleeper())
	c := a.dial(t)
	var out bytes.Buffer
	code, err := c.Exec(context.Background(), ExecRequest{
		Argv: []string{"sh", "-c", "tty; stty size; echo $TERM; echo err >&2"}, TTY: true, Term: "vt100", Rows: 30, Cols: 100, Stdout: &out,
	})
	if err != nil || code != 0 {
		t.Fatalf("exec = %d, %v", code, err)
	}
	got := out.String()
	for _, want := range []string{"/dev/pts/", "30 100\r\n", "vt100\r\n", "err\r\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("tty output %q lacks %q", got, want)
		}
	}

	// Window change, and stdin through the terminal.
	pr, pw := io.Pipe()
	outc := &syncBuffer{}
	resize := make(chan WindowSize, 1)
	done := make(chan int, 1)
	go func() {
		code, err := c.Exec(context.Background(), ExecRequest{
			Argv: []string{"sh", "-c", "stty size; read x; stty size"}, TTY: true, Rows: 10, Cols: 20,
			Stdin: pr, Stdout: outc, Resize: resize,
		})
		if err != nil {
			t.Error(err)
		}
		done <- code
	}()
	waitFor(t, outc, "10 20\r\n")
	resize <- WindowSize{Rows: 44, Cols: 88}
	time.Sleep(100 * time.Millisecond)
	pw.Write([]byte("\n"))
	waitFor(t, outc, "44 88\r\n")
	if code := <-done; code != 0 {
		t.Errorf("exit %d", code)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t *testing.T, b *syncBuffer, s string) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if strings.Contains(b.String(), s) {
			return
		}
	}
	t.Fatalf("output %q never contained %q", b.String(), s)
}

func TestExecSignal(t *testing.T) {
	a := startAgent(t, "", sleeper())
	c := a.dial(t)
	for _, tty := range []bool{false, true} {
		t.Run(fmt.Sprintf("tty=%v", tty), func(t *testing.T) {
			sigs := make(chan syscall.Signal, 1)
			out := &syncBuffer{}
			go func() {
				waitFor(t, out, "started")
				sigs <- syscall.SIGTERM
			}()
			code, err := c.Exec(context.Background(), ExecRequest{
				Argv: []string{"sh", "-c", "echo started; exec sleep 100"}, TTY: tty, Stdout: out, Signals: sigs,
			})
			if err != nil || code != 128+15 {
				t.Errorf("exec = %d, %v; want %d", code, err, 128+15)
			}
		})
	}
}

func TestExecContextCancelKills(t *testing.T) {
	a := startAgent(t, "", sleeper())
	c := a.dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := c.Exec(ctx, ExecRequest{Argv: []string{"sleep", "77"}}); err == nil {
		t.Fatal("want an error when ctx ends")
	}
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		found := false
		for _, p := range descendants(a.cmd.Process.Pid) {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p)); bytes.Contains(b, []byte("77")) {
				found = true
			}
		}
		if !found {
			return
		}
	}
	t.Error("sleep 77 still runs after its session ended")
}

func TestExecConcurrent(t *testing.T) {
	a := startAgent(t, "", sleeper())
	c := a.dial(t)
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out bytes.Buffer
			code, err := c.Exec(context.Background(), ExecRequest{Argv: []string{"sh", "-c", "echo $0; exit $0", strconv.Itoa(i)}, Stdout: &out})
			if err != nil || code != i || out.String() != fmt.Sprintf("%d\n", i) {
				t.Errorf("exec %d: %d, %v, %q", i, code, err, out.String())
			}
		}()
	}
	wg.Wait()
}

func TestLongSocketPath(t *testing.T) {
	dir := t.TempDir()
	for len(dir) < 130 {
		dir = filepath.Join(dir, "a-rather-long-directory-name")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, SocketFile)
	if len(sock) <= 108 {
		t.Fatalf("path %d bytes, not long enough", len(sock))
	}
	a := startAgent(t, dir, sleeper())
	c := a.dial(t)
	if code, err := c.Exec(context.Background(), ExecRequest{Argv: []string{"true"}}); err != nil || code != 0 {
		t.Errorf("exec over %d-byte socket path: %d, %v", len(sock), code, err)
	}
}

func TestWaitReadyReportsEarlyExit(t *testing.T) {
	dir := t.TempDir()
	WriteConfig(dir, Config{Args: []string{"true"}})
	writeExitCode(dir, 7)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := WaitReady(ctx, dir); err == nil || !strings.Contains(err.Error(), "code 7") {
		t.Errorf("WaitReady = %v, want an error naming exit code 7", err)
	}
}

// BenchmarkExecTrue measures what msbctl exec pays: connect, SSH handshake, one
// session running true, close.
func BenchmarkExecTrue(b *testing.B) {
	a := startAgent(b, "", sleeper())
	sock := filepath.Join(a.dir, SocketFile)
	ctx := context.Background()
	for b.Loop() {
		c, err := Dial(ctx, sock)
		if err != nil {
			b.Fatal(err)
		}
		if code, err := c.Exec(ctx, ExecRequest{Argv: []string{"true"}}); err != nil || code != 0 {
			b.Fatal(code, err)
		}
		c.Close()
	}
}

// BenchmarkExecTrueReused is the same over one kept connection, for callers that pool.
func BenchmarkExecTrueReused(b *testing.B) {
	a := startAgent(b, "", sleeper())
	c := a.dial(b)
	ctx := context.Background()
	for b.Loop() {
		if code, err := c.Exec(ctx, ExecRequest{Argv: []string{"true"}}); err != nil || code != 0 {
			b.Fatal(code, err)
		}
	}
}

// BenchmarkDial is the connect and handshake alone.
func BenchmarkDial(b *testing.B) {
	a := startAgent(b, "", sleeper())
	sock := filepath.Join(a.dir, SocketFile)
	for b.Loop() {
		c, err := Dial(context.Background(), sock)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// BenchmarkStartReady is agent start to ready: process start, config, listen, ready file.
func BenchmarkStartReady(b *testing.B) {
	dir := b.TempDir()
	ctx := context.Background()
	bin := agenttest.Build(b)
	for b.Loop() {
		if err := WriteConfig(dir, Config{Args: []string{"sleep", "1000"}}); err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(bin, "init", "--dir", dir)
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		if err := WaitReady(ctx, dir); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		b.StartTimer()
	}
}

// TestFollowLogLinesAcrossRotations: followed with times, every line comes
// once, in order, each with a time, while the log rotates every 512 bytes.
func TestFollowLogLinesAcrossRotations(t *testing.T) {
	a := startAgent(t, "", Config{Args: []string{"sh", "-c", "i=0; while [ $i -lt 200 ]; do i=$((i+1)); echo line$i; sleep 0.005; done"}, LogMaxBytes: 1024})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncWriter
	errc := make(chan error, 1)
	go func() { errc <- FollowLogLines(ctx, a.dir, &out, LogReadOptions{Tail: -1, Timestamps: true}) }()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.HasSuffix(out.String(), " line200\n") {
		if time.Now().After(deadline) {
			t.Fatalf("follow stalled:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if strings.HasPrefix(lines[0], "[msb: ") {
		lines = lines[1:]
	}
	first := -1
	for i, l := range lines {
		stamp, text, _ := strings.Cut(l, " ")
		if _, err := time.Parse(time.RFC3339Nano, stamp); err != nil {
			t.Fatalf("line %d %q has no time", i, l)
		}
		n, _ := strconv.Atoi(strings.TrimPrefix(text, "line"))
		if first < 0 {
			first = n
		}
		if n != first+i {
			t.Fatalf("line %d = %q, want line%d (lines lost or repeated)", i, l, first+i)
		}
	}
}

type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
