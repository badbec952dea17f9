package container

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestProbeIDMappedMounts(t *testing.T) {
	requireRunc(t)
	if err := ProbeIDMappedMounts(t.TempDir()); err != nil {
		t.Fatal(err)
	}
}

// TestUserNSOwnerAndLimits: the namespace made for a sandbox is owned by
// the given uid, maps as asked and has the lowered per-user limits.
func TestUserNSOwnerAndLimits(t *testing.T) {
	requireRunc(t)
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		t.Skip("nsenter not found (util-linux)")
	}
	dir := tempDir(t)
	target := filepath.Join(dir, "userns")
	const owner = DefaultHostID + 3*SlotSize
	must(t, makeUserNS(target, owner, owner+1, idMap{0, owner, SlotSize}, idMap{0, owner + 1, SlotSize},
		[]string{"max_inotify_instances=7", "max_user_namespaces=3"}))
	t.Cleanup(func() { unmountAll(target) })
	if !isUserNS(target) {
		t.Fatal("not a user namespace mount")
	}
	got, err := userNSOwner(target)
	must(t, err)
	if got != owner {
		t.Errorf("owner %d, want %d", got, owner)
	}
	out, err := exec.Command(nsenter, "--user="+target, "cat", "/proc/self/uid_map", "/proc/self/gid_map",
		"/proc/sys/user/max_inotify_instances", "/proc/sys/user/max_user_namespaces").CombinedOutput()
	must(t, err)
	want := []string{"0", strconv.Itoa(owner), "65536", "0", strconv.Itoa(owner + 1), "65536", "7", "3"}
	if f := strings.Fields(string(out)); !slices.Equal(f, want) {
		t.Errorf("inside: %q, want %q", f, want)
	}
	host, _ := os.ReadFile("/proc/sys/user/max_inotify_instances")
	if strings.TrimSpace(string(host)) == "7" {
		t.Errorf("the host's limit changed too")
	}
}

// makeUserNS creates a user namespace owned by host uid ownerUID (group
// ownerGID), with uid and gid maps uids and gids and the per-user limits
// limits ("name=value" of /proc/sys/user), and bind-mounts it on target (a
// file created if missing).
func makeUserNS(target string, ownerUID, ownerGID uint32, uids, gids idMap, limits []string) error {
	holder, err := newUserNS(ownerUID, ownerGID, uids, gids, limits)
	if err != nil {
		return err
	}
	defer holder.stop()
	return holder.bind(target)
}

// isUserNS reports whether path is a live bind mount of a user namespace.
func isUserNS(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var fs unix.Statfs_t
	if unix.Fstatfs(int(f.Fd()), &fs) != nil || fs.Type != unix.NSFS_MAGIC {
		return false
	}
	typ, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	return err == nil && typ == unix.CLONE_NEWUSER
}
