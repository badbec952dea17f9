package krun

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"msb.dev/msb/vmdriver/agent/agenttest"
	"msb.dev/msb/vmdriver/container"
	"msb.dev/msb/vmdriver/krun/krunstandin"
)

// init keeps the runner on the main thread, as msbd's does.
func init() {
	if len(os.Args) > 1 && os.Args[1] == RunnerSubcommand {
		runtime.LockOSThread()
	}
}

// TestMain lets this test binary be the runner too: the driver re-executes
// it as "msbd krun-runner ID", as msbd re-executes itself.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == RunnerSubcommand {
		if err := RunnerMain(os.Args[2:]); err != nil {
			os.Stderr.WriteString("krun-runner: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	agenttest.Cleanup()
	os.Exit(code)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// requireRoot skips, saying why, where the driver cannot work at all.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the krun driver needs root (user namespaces with id maps, mounts, cgroups)")
	}
}

// tempDir is a directory the sandboxes' uid may search (o+x), removed at
// the end; it fails the test if something is still mounted under it.
func tempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "msbkrun-")
	must(t, err)
	must(t, os.Chmod(dir, 0o711))
	t.Cleanup(func() {
		mi, _ := os.ReadFile("/proc/self/mountinfo")
		for _, l := range strings.Split(string(mi), "\n") {
			if strings.Contains(l, dir) {
				t.Errorf("still mounted under %s: %s", dir, l)
			}
		}
		os.RemoveAll(dir)
	})
	return dir
}

// standIn is a built stand-in libkrun and a stand-in KVM device (a regular
// file every user may open read-write), both where the sandboxes' uid
// reaches them.
type standIn struct{ lib, kvm string }

func newStandIn(t testing.TB) standIn {
	t.Helper()
	lib := krunstandin.Build(t)
	return standIn{lib: lib, kvm: krunstandin.Device(t, lib)}
}

func randomID() string {
	var b [6]byte
	rand.Read(b[:])
	return "k" + hex.EncodeToString(b[:])
}

// busyboxLayers makes two image layers from the host's static busybox,
// owned by the sandboxes' mapped root as unpacked images are.
func busyboxLayers(t testing.TB, base string) []string {
	t.Helper()
	bb := "/bin/busybox"
	if _, err := os.Stat(bb); err != nil {
		t.Skip("no /bin/busybox (apt-get install busybox-static)")
	}
	store := filepath.Join(base, "layers")
	must(t, os.MkdirAll(store, 0o700))
	l0, l1 := filepath.Join(store, "layer0"), filepath.Join(store, "layer1")
	for _, d := range []string{"bin", "etc", "tmp", "root"} {
		must(t, os.MkdirAll(filepath.Join(l0, d), 0o755))
	}
	must(t, os.Chmod(filepath.Join(l0, "tmp"), 0o1777))
	in, err := os.Open(bb)
	must(t, err)
	defer in.Close()
	out, err := os.OpenFile(filepath.Join(l0, "bin/busybox"), os.O_CREATE|os.O_WRONLY, 0o755)
	must(t, err)
	_, err = io.Copy(out, in)
	must(t, err)
	must(t, out.Close())
	for _, name := range []string{"sh", "cat", "echo", "sleep", "ls", "id", "touch", "test", "grep", "hostname", "wc", "true", "false", "rm", "mkdir", "readlink", "stat", "mount", "kill", "ps"} {
		must(t, os.Symlink("busybox", filepath.Join(l0, "bin", name)))
	}
	must(t, os.WriteFile(filepath.Join(l0, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644))
	must(t, os.MkdirAll(filepath.Join(l1, "etc"), 0o755))
	must(t, os.WriteFile(filepath.Join(l1, "etc/motd"), []byte("layer1\n"), 0o644))
	for _, l := range []string{l0, l1} {
		must(t, filepath.Walk(l, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, container.DefaultHostID, container.DefaultHostID)
		}))
	}
	return []string{l0, l1}
}
