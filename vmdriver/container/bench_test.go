package container

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// BenchmarkStart measures Create+Start until the agent's command has run
// (msb-ms), and, as the baseline in the same run, a bare `runc run -d` of the
// same image with runc's default spec until its command has run (runc-ms).
func BenchmarkStart(b *testing.B) {
	f := newFixture(b)
	ctx := context.Background()

	// Baseline bundle: the same layers under a separate overlay, runc's
	// default config (no user namespace, no seccomp, lo left down).
	base := filepath.Join(f.base, "baseline")
	upper, work, rootfs, bundle := filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "rootfs"), filepath.Join(base, "bundle")
	for _, d := range []string{upper, work, rootfs, bundle} {
		must(b, os.MkdirAll(d, 0o755))
	}
	must(b, mountOverlay(f.layers, upper, work, rootfs))
	b.Cleanup(func() { unmountAll(base) })
	cfg := bareSpec(rootfs)
	js, err := json.Marshal(cfg)
	must(b, err)
	must(b, os.WriteFile(filepath.Join(bundle, "config.json"), js, 0o600))
	baseRoot := filepath.Join(base, "runc")
	marker := filepath.Join(rootfs, "ran") // through the overlay: never touch upper/ under a mount

	var msb, bare time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		spec := f.spec("")
		spec.Args = []string{"touch", "/.msb/ran"}
		t0 := time.Now()
		must(b, f.d.Create(ctx, spec))
		must(b, f.d.Start(ctx, spec.ID))
		waitExists(b, filepath.Join(f.d.agentDir(spec.ID), "ran"))
		msb += time.Since(t0)
		must(b, f.d.Delete(ctx, spec.ID, true))

		id := fmt.Sprintf("msbbench-%d", i)
		t0 = time.Now()
		cmd := exec.Command(f.d.runcPath, "--root", baseRoot, "run", "-d", "--bundle", bundle, id)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("runc run -d: %v: %s", err, out)
		}
		waitExists(b, marker)
		bare += time.Since(t0)
		exec.Command(f.d.runcPath, "--root", baseRoot, "delete", "--force", id).Run()
		os.Remove(marker)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(msb.Microseconds())/1000/n, "msb-ms/start")
	b.ReportMetric(float64(bare.Microseconds())/1000/n, "runc-ms/start")
	b.ReportMetric(float64(msb)/float64(bare), "msb/runc")
}

func waitExists(b *testing.B, path string) {
	deadline := time.Now().Add(10 * time.Second)
	for !fileExists(path) {
		if time.Now().After(deadline) {
			b.Fatalf("%s did not appear", path)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// bareSpec is what `runc spec` generates (as root), running touch /ran.
func bareSpec(rootfs string) *specs.Spec {
	caps := []string{"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"}
	return &specs.Spec{
		Version: "1.0.2",
		Root:    &specs.Root{Path: rootfs},
		Process: &specs.Process{
			Args: []string{"/bin/touch", "/ran"},
			Env:  []string{"PATH=/bin"},
			Cwd:  "/",
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
			NoNewPrivileges: true,
		},
		Hostname: "runc",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.MountNamespace},
			},
			Resources:     &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}},
			MaskedPaths:   maskedPaths,
			ReadonlyPaths: readonlyPaths,
		},
	}
}
