package container

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// isMountPoint (statx) and isMountPointSlow (mountinfo) agree on a mount
// point, a plain directory below it, a plain directory and a missing path.
func TestIsMountPointAgreesWithMountinfo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	mp, plain := filepath.Join(dir, "mp"), filepath.Join(dir, "plain")
	for _, p := range []string{mp, plain} {
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("tmpfs", mp, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(mp, unix.MNT_DETACH) })
	below := filepath.Join(mp, "below")
	if err := os.Mkdir(below, 0o700); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{mp: true, mp + "/": true, below: false, plain: false, dir + "/missing": false} {
		got, err := isMountPoint(path)
		slow, serr := isMountPointSlow(path)
		if err != nil || serr != nil || got != want || slow != want {
			t.Errorf("%s: isMountPoint %v (%v), mountinfo %v (%v), want %v", path, got, err, slow, serr, want)
		}
	}
}
