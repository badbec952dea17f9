// Package agenttest builds the real msb-agent for tests, once per test
// binary, so every test that runs a sandbox or the agent itself uses the
// binary that ships (static, CGO_ENABLED=0) instead of a copy of the build
// recipe.
//
// The binary lands in a fresh directory under os.TempDir that every user may
// search (0755): a container sandbox's root is an unprivileged host id, and
// runc bind-mounts the binary from inside the sandbox's user namespace. Call
// Cleanup from TestMain after m.Run to remove it; a test binary that does not
// leaves one small directory named msb-agenttest-* behind.
package agenttest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Package is the import path Build builds.
const Package = "msb.dev/msb/cmd/msb-agent"

// RaceEnv, when set to anything, makes Build add -race (which needs cgo, so
// the binary is not static): a way to race-check the agent itself.
const RaceEnv = "MSB_AGENT_RACE"

var (
	once   sync.Once
	dir    string
	bin    string
	errBld error
)

// Build returns the path of msb-agent, building it on the first call of the
// test binary; later calls return the same path. A failed build fails every
// test that asks (t.Fatal), with the compiler's output.
func Build(t testing.TB) string {
	t.Helper()
	once.Do(func() { bin, errBld = build() })
	if errBld != nil {
		t.Fatal(errBld)
	}
	return bin
}

func build() (string, error) {
	var err error
	dir, err = os.MkdirTemp("", "msb-agenttest-")
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "msb-agent")
	args := []string{"build", "-o", out}
	env := append(os.Environ(), "CGO_ENABLED=0")
	if os.Getenv(RaceEnv) != "" {
		args = append(args, "-race")
		env = append(os.Environ(), "CGO_ENABLED=1")
	}
	cmd := exec.Command(goTool(), append(args, Package)...)
	cmd.Env = env
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %v\n%s", Package, err, b)
	}
	return out, nil
}

// goTool is the go command of the toolchain running the tests (GOROOT/bin),
// falling back to PATH.
func goTool() string {
	if root := os.Getenv("GOROOT"); root != "" {
		if p := filepath.Join(root, "bin", "go"); fileExists(p) {
			return p
		}
	}
	return "go"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Cleanup removes what Build made. Call it from TestMain after m.Run; it does
// nothing when Build was never called.
func Cleanup() {
	if dir != "" {
		os.RemoveAll(dir)
	}
}
