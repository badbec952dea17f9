package container

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"msb.dev/msb/vmdriver"
)

func TestFilesValidation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	vol := t.TempDir()
	for _, c := range []struct {
		name  string
		files []vmdriver.File
		want  string
	}{
		{"relative", []vmdriver.File{{Path: "etc/x"}}, "clean absolute path"},
		{"dot dot", []vmdriver.File{{Path: "/etc/../x"}}, "clean absolute path"},
		{"trailing slash", []vmdriver.File{{Path: "/etc/x/"}}, "clean absolute path"},
		{"root", []vmdriver.File{{Path: "/"}}, "clean absolute path"},
		{"proc", []vmdriver.File{{Path: "/proc/sys/kernel/core_pattern"}}, "reserved"},
		{"sys", []vmdriver.File{{Path: "/sys/x"}}, "reserved"},
		{"dev", []vmdriver.File{{Path: "/dev/null"}}, "reserved"},
		{"agent dir", []vmdriver.File{{Path: "/.msb/config.json"}}, "reserved"},
		{"twice", []vmdriver.File{{Path: "/etc/x"}, {Path: "/etc/x"}}, "twice"},
		{"in a volume", []vmdriver.File{{Path: "/data/x"}}, "overlaps mounts[0]"},
		{"setuid", []vmdriver.File{{Path: "/etc/x", Mode: 0o755 | os.ModeSetuid}}, "only permission bits"},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := f.spec("true")
			spec.Files = c.files
			spec.Mounts = []vmdriver.Mount{{HostPath: vol, Path: "/data"}}
			if err := f.d.Create(ctx, spec); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Create = %v, want an error containing %q", err, c.want)
			}
		})
	}
}

// TestFilesHostileImage: the image decides what lies on the way to a placed
// file. A symlink there is followed inside the rootfs only (runc resolves
// mount targets in it), never to the host; one into /proc is refused.
func TestFilesHostileImage(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	hostTarget := filepath.Join(f.base, "host-target")
	etc := filepath.Join(f.layers[1], "etc")
	must(t, os.Symlink("../../../../../../../.."+hostTarget, filepath.Join(etc, "escape.conf")))
	must(t, os.Symlink("/proc/sys/kernel/core_pattern", filepath.Join(etc, "proc.conf")))
	must(t, os.Symlink(f.base, filepath.Join(etc, "dir")))
	for _, p := range []string{"escape.conf", "proc.conf", "dir"} {
		must(t, os.Lchown(filepath.Join(etc, p), mappedID, mappedID))
	}

	spec := f.spec("cat /etc/escape.conf > /.msb/escape; cat /etc/dir/x > /.msb/dir; touch /.msb/done; exec sleep 1000")
	spec.Files = []vmdriver.File{
		{Path: "/etc/escape.conf", Data: []byte("placed\n")},
		{Path: "/etc/dir/x", Data: []byte("in dir\n")},
	}
	must(t, f.d.Create(ctx, spec))
	must(t, f.d.Start(ctx, spec.ID))
	agentDir := f.d.agentDir(spec.ID)
	waitFor(t, filepath.Join(agentDir, "done"), 10*time.Second)
	for file, want := range map[string]string{"escape": "placed\n", "dir": "in dir\n"} {
		if got, _ := os.ReadFile(filepath.Join(agentDir, file)); string(got) != want {
			t.Errorf("in the sandbox through the image's symlink (%s): %q, want %q", file, got, want)
		}
	}
	for _, p := range []string{hostTarget, filepath.Join(f.base, "x")} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s was made on the host: %v", p, err)
		}
	}
	must(t, f.d.Stop(ctx, spec.ID, 2*time.Second))

	spec = f.spec("true")
	spec.Files = []vmdriver.File{{Path: "/etc/proc.conf", Data: []byte("|/bin/evil\n")}}
	must(t, f.d.Create(ctx, spec))
	if err := f.d.Start(ctx, spec.ID); err == nil || !strings.Contains(err.Error(), "/proc") {
		t.Errorf("Start with a file placed through a symlink into /proc: %v, want refused", err)
	}
	if b, _ := os.ReadFile("/proc/sys/kernel/core_pattern"); strings.Contains(string(b), "evil") {
		t.Fatalf("the host's core_pattern was changed: %q", b)
	}
}

// TestFilesOwnership: the host copies are host root's (the sandbox sees the
// overflow ids), and a spec's changed files replace the old ones at the next
// Create.
func TestFilesOwnership(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	spec := f.spec("stat -c '%u %g %a' /etc/placed > /.msb/stat; cat /etc/placed > /.msb/content")
	spec.Files = []vmdriver.File{{Path: "/etc/placed", Data: []byte("one\n"), Mode: 0o640}}
	must(t, f.d.Create(ctx, spec))
	must(t, f.d.Start(ctx, spec.ID))
	waitStatus(t, f.d, spec.ID, vmdriver.StatusStopped, 10*time.Second)
	agentDir := f.d.agentDir(spec.ID)
	if got, _ := os.ReadFile(filepath.Join(agentDir, "stat")); string(got) != "65534 65534 640\n" {
		t.Errorf("owner and mode in the sandbox: %q, want the overflow ids and 640", got)
	}
	if got, _ := os.ReadFile(filepath.Join(agentDir, "content")); len(got) != 0 {
		t.Errorf("a 0640 file of host root was readable by the sandbox's root: %q", got)
	}
	checkOwnerMode(t, filepath.Join(f.d.filesDir(spec.ID), "0"), 0, 0, 0o640)

	must(t, f.d.Delete(ctx, spec.ID, false))
	spec.Files = []vmdriver.File{{Path: "/etc/placed", Data: []byte("two\n")}}
	must(t, f.d.Create(ctx, spec))
	must(t, f.d.Start(ctx, spec.ID))
	waitStatus(t, f.d, spec.ID, vmdriver.StatusStopped, 10*time.Second)
	if got, _ := os.ReadFile(filepath.Join(agentDir, "content")); string(got) != "two\n" {
		t.Errorf("after Create with new files: %q, want two", got)
	}
}
