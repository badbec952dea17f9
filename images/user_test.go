package images

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestResolveUserNeverLeavesTheImage: the image's /etc/passwd is hostile
// input read by root on the host; links, fifos and devices must not make
// msbd read host files, hang or flood memory.
func TestResolveUserNeverLeavesTheImage(t *testing.T) {
	host := t.TempDir()
	hostPasswd := filepath.Join(host, "passwd")
	os.WriteFile(hostPasswd, []byte("app:x:4242:4242::/:/bin/sh\n"), 0o644)
	layer := func(t *testing.T, setup func(etc string)) string {
		dir := t.TempDir()
		etc := filepath.Join(dir, "etc")
		os.MkdirAll(etc, 0o755)
		setup(etc)
		return dir
	}
	cases := []struct {
		name    string
		setup   func(etc string)
		wantUID uint32
		wantErr string
	}{
		{"regular", func(etc string) {
			os.WriteFile(filepath.Join(etc, "passwd"), []byte("root:x:0:0::/:/bin/sh\napp:x:1000:1001::/:/bin/sh\n"), 0o644)
		}, 1000, ""},
		{"absolute-symlink", func(etc string) { os.Symlink(hostPasswd, filepath.Join(etc, "passwd")) }, 0, "not a regular file"},
		{"relative-symlink-out", func(etc string) {
			os.Symlink("../../../../../../../../.."+hostPasswd, filepath.Join(etc, "passwd"))
		}, 0, "not a regular file"},
		{"fifo", func(etc string) { syscall.Mkfifo(filepath.Join(etc, "passwd"), 0o644) }, 0, "not a regular file"},
		{"whiteout", func(etc string) { syscall.Mknod(filepath.Join(etc, "passwd"), syscall.S_IFCHR, 0) }, 0, "deleted"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "whiteout" && os.Geteuid() != 0 {
				t.Skip("making a whiteout (a 0:0 device) needs root")
			}
			l := layer(t, c.setup)
			uid, _, err := ResolveUser("app", []string{l})
			if c.wantErr == "" {
				if err != nil || uid != c.wantUID {
					t.Fatalf("uid %d err %v, want %d", uid, err, c.wantUID)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("uid %d err %v, want an error with %q", uid, err, c.wantErr)
			}
		})
	}
	// A symlinked /etc pointing at the host is not followed either.
	dir := t.TempDir()
	os.Symlink(host, filepath.Join(dir, "etc"))
	if uid, _, err := ResolveUser("app", []string{dir}); err == nil || uid == 4242 {
		t.Fatalf("resolved through a symlinked /etc: uid %d err %v", uid, err)
	}
	// A huge file is read only up to the cap (no OOM): a 2 MiB file whose
	// entry sits past the cap is not found.
	big := t.TempDir()
	os.MkdirAll(filepath.Join(big, "etc"), 0o755)
	os.WriteFile(filepath.Join(big, "etc", "passwd"), []byte(strings.Repeat("#\n", 1<<20)+"app:x:7:7::/:/bin/sh\n"), 0o644)
	if _, _, err := ResolveUser("app", []string{big}); err == nil {
		t.Fatal("read past the cap")
	}
}
