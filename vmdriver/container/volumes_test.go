package container

import (
	"os"
	"strings"
	"testing"

	"msb.dev/msb/vmdriver"
)

// A read-write volume other host users can enter is warned about; a closed
// or read-only one is not.
func TestVolumeWarnings(t *testing.T) {
	open, closed, ro := t.TempDir(), t.TempDir(), t.TempDir()
	for dir, mode := range map[string]os.FileMode{open: 0o755, closed: 0o700, ro: 0o755} {
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
	}
	d := &Driver{}
	got := d.VolumeWarnings(vmdriver.Spec{Mounts: []vmdriver.Mount{
		{HostPath: open, Path: "/open"},
		{HostPath: closed, Path: "/closed"},
		{HostPath: ro, Path: "/ro", ReadOnly: true},
	}})
	if len(got) != 1 || !strings.Contains(got[0], open) || !strings.Contains(got[0], "/open") {
		t.Fatalf("warnings %q, want one about %s", got, open)
	}
}
