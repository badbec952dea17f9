package e2e

import (
	"os"
	"path/filepath"
	"testing"
)

// TestLeakCheckerSeesLeftovers makes sure the suite's leak checker is not
// vacuous: a directory of a recorded state dir that is left behind is reported.
func TestLeakCheckerSeesLeftovers(t *testing.T) {
	dir, err := os.MkdirTemp("/tmp", "msbe2e")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sd := filepath.Join(dir, "state")
	stateDirsMu.Lock()
	stateDirs = append(stateDirs, sd)
	stateDirsMu.Unlock()
	defer func() {
		stateDirsMu.Lock()
		stateDirs = stateDirs[:len(stateDirs)-1]
		stateDirsMu.Unlock()
	}()
	if leaks := leakDiff(map[string]bool{}, leakSnapshot()); len(leaks) != 1 || leaks[0] != "dir "+dir {
		t.Fatalf("leak checker reported %v, want the directory %s", leaks, dir)
	}
}
