// Package krunstandin builds a recording stand-in for libkrun (from C, with
// gcc) for tests on hosts without KVM: it has libkrun's prototypes, records
// every call with its arguments, and "boots" the workload chrooted into the
// VM's root, serving its vsock port on the mapped unix socket. See
// libkrun_standin.c.in for exactly what it does.
package krunstandin

import (
	"bufio"
	_ "embed"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

//go:embed libkrun_standin.c.in
var source []byte

// Build compiles the stand-in into a fresh directory and returns the path of
// its libkrun.so.1. Each name in omit is a symbol left out (an old or broken
// libkrun). The test is skipped, saying why, where gcc is missing.
func Build(t testing.TB, omit ...string) string {
	t.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not found: cannot build the libkrun stand-in (apt-get install gcc)")
	}
	dir, err := os.MkdirTemp("", "msb-krunstandin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// Runners are unprivileged on the host: they must reach the library.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "libkrun_standin.c")
	if err := os.WriteFile(src, source, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "libkrun.so.1")
	args := []string{"-shared", "-fPIC", "-O1", "-Wall", "-o", out, src}
	for _, s := range omit {
		args = append(args, "-DOMIT_"+s)
	}
	if b, err := exec.Command(gcc, args...).CombinedOutput(); err != nil {
		t.Fatalf("building the libkrun stand-in: %v\n%s", err, b)
	}
	return out
}

// Device makes a stand-in KVM device beside lib (as Build returned it): a
// regular file every user may open read-write, which is all msb asks of
// the device before libkrun uses it. The probe reports that it is not a
// character device.
func Device(t testing.TB, lib string) string {
	t.Helper()
	p := filepath.Join(filepath.Dir(lib), "kvm")
	if err := os.WriteFile(p, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o666); err != nil { // past the umask
		t.Fatal(err)
	}
	return p
}

// Call is one recorded call: "fn" names the function, the other keys are
// its arguments (see the C source for each function's keys).
type Call map[string]any

// Fn is the function's name.
func (c Call) Fn() string { s, _ := c["fn"].(string); return s }

// Str returns argument k as a string.
func (c Call) Str(k string) string { s, _ := c[k].(string); return s }

// Num returns argument k as a number.
func (c Call) Num(k string) float64 { n, _ := c[k].(float64); return n }

// Strs returns argument k as a list of strings; nil for a NULL array.
func (c Call) Strs(k string) []string {
	raw, ok := c[k].([]any)
	if !ok {
		return nil
	}
	out := make([]string, 0, len(raw))
	for _, v := range raw {
		s, _ := v.(string)
		out = append(out, s)
	}
	return out
}

// Calls reads what the stand-in recorded before krun_start_enter, from the
// file beside the console output ("<console>.calls").
func Calls(consolePath string) ([]Call, error) {
	f, err := os.Open(consolePath + ".calls")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var calls []Call
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var c Call
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			return nil, err
		}
		calls = append(calls, c)
	}
	return calls, sc.Err()
}

// Find returns the first call of fn, or nil.
func Find(calls []Call, fn string) Call {
	for _, c := range calls {
		if c.Fn() == fn {
			return c
		}
	}
	return nil
}
