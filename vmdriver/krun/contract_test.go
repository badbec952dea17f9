package krun

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"msb.dev/msb/vmdriver"
	"msb.dev/msb/vmdriver/agent/agenttest"
	"msb.dev/msb/vmdriver/container"
	"msb.dev/msb/vmdriver/drivertest"
	"msb.dev/msb/vmdriver/krun/krunstandin"
)

// canary is in the test's (msbd's) environment: it must reach neither the
// runner nor the guest.
const canary = "MSB_KRUN_CANARY=never-in-a-guest"

// netns makes a network namespace for the test and returns its file.
func netns(t *testing.T) string {
	t.Helper()
	name := "msbkrun-" + randomID()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	exec.Command("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up").Run()
	return "/run/netns/" + name
}

// TestContract checks what the driver asks of libkrun and how the runner
// is placed, through the stand-in's record of every call.
func TestContract(t *testing.T) {
	requireRoot(t)
	k, v, _ := strings.Cut(canary, "=")
	t.Setenv(k, v)
	si := newStandIn(t)
	base := tempDir(t)
	self, err := os.Executable()
	must(t, err)
	d, err := New(Options{StateDir: filepath.Join(base, "state"), Library: si.lib, KVMDevice: si.kvm, RunnerPath: self, MaxVCPUs: 4})
	must(t, err)
	layers := busyboxLayers(t, base)

	for _, c := range []struct {
		name      string
		netns     bool
		milliCPUs int64
		memory    int64
		ports     []vmdriver.Port
		wantCPUs  float64
		wantRAM   float64
		wantPorts []string
	}{
		{"sized, ports, sandbox netns", true, 1500, 300 << 20, []vmdriver.Port{{HostPort: 18080, ContainerPort: 8080, Protocol: "tcp"}, {HostPort: 1053, ContainerPort: 53, Protocol: "udp"}}, 2, 300, []string{"8080:8080"}},
		{"defaults, no ports, own netns", false, 0, 0, nil, defaultVCPUs, defaultRAMMiB, []string{}},
		{"more vCPUs than allowed", false, 64000, 64 << 20, nil, 4, 64, []string{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := vmdriver.Spec{ID: randomID(), Hostname: "contract", Layers: layers, AgentPath: agenttest.Build(t),
				Args: []string{"sh", "-c", drivertest.ScriptForever}, Env: []string{"PATH=/bin"},
				MilliCPUs: c.milliCPUs, MemoryBytes: c.memory, Ports: c.ports, PIDs: 100}
			if c.netns {
				spec.NetNSPath = netns(t)
			}
			ctx := context.Background()
			must(t, d.Create(ctx, spec))
			t.Cleanup(func() { d.Delete(ctx, spec.ID, true) })
			// Host paths the runner must not reach once libkrun runs (the
			// stand-in tries each), and one in its own root that it must.
			msbDB := filepath.Join(d.opts.StateDir, "msb.db")
			must(t, os.WriteFile(msbDB, []byte("state"), 0o644))
			probes := []string{msbDB, "/etc/passwd", "/etc/shadow", filepath.Join(layers[0], "etc/passwd"), d.host.Rootfs(spec.ID), inRootfs + "/etc/passwd"}
			ids, _, err := d.host.IDs(spec.ID)
			must(t, err)
			probeFile := d.ConsolePath(spec.ID) + ".probe"
			must(t, os.WriteFile(probeFile, []byte(strings.Join(probes, "\n")+"\n"), 0o644))
			must(t, os.Chown(probeFile, int(ids.UID), int(ids.GID)))
			must(t, d.Start(ctx, spec.ID))
			// Once the agent answers, the stand-in has "booted".
			out, code, err := drivertest.AgentExec(t, d, spec.ID, "sh", "-c", "echo \"[$MSB_KRUN_CANARY]\"")
			if err != nil || code != 0 || strings.TrimSpace(out) != "[]" {
				t.Errorf("exec in the guest: %q, %d, %v: want [] (msbd's environment never reaches it)", out, code, err)
			}
			calls, err := krunstandin.Calls(d.ConsolePath(spec.ID))
			if err != nil {
				b, _ := os.ReadFile(d.ConsolePath(spec.ID) + ".calls")
				t.Fatalf("%v:\n%s", err, b)
			}
			var fns []string
			for _, call := range calls {
				if call.Fn() != "probe_open" { // the stand-in's own, after start_enter
					fns = append(fns, call.Fn())
				}
			}
			if fns[0] != "krun_set_log_level" || fns[1] != "krun_create_ctx" || fns[len(fns)-1] != "krun_start_enter" {
				t.Errorf("calls %v: want log level, create_ctx first and start_enter last", fns)
			}
			ep, _ := d.Endpoint(spec.ID)
			check := func(fn string, ok func(krunstandin.Call) bool) {
				t.Helper()
				call := krunstandin.Find(calls, fn)
				if call == nil {
					t.Errorf("%s was not called (calls: %v)", fn, fns)
				} else if !ok(call) {
					t.Errorf("%s(%v): wrong arguments", fn, map[string]any(call))
				}
			}
			check("krun_set_vm_config", func(c2 krunstandin.Call) bool { return c2.Num("vcpus") == c.wantCPUs && c2.Num("ramMiB") == c.wantRAM })
			// Paths as they are in the runner's own root (vmroot.go).
			check("krun_set_root", func(c2 krunstandin.Call) bool { return c2.Str("path") == inRootfs })
			check("krun_set_workdir", func(c2 krunstandin.Call) bool { return c2.Str("path") == "/" })
			check("krun_set_exec", func(c2 krunstandin.Call) bool {
				return c2.Str("path") == container.AgentBinary &&
					slices.Equal(c2.Strs("argv"), []string{"init", "--dir", "/.msb", "--vsock-port", "52000"}) &&
					slices.Equal(c2.Strs("envp"), agentEnv)
			})
			check("krun_set_port_map", func(c2 krunstandin.Call) bool {
				p := c2.Strs("ports")
				return p != nil && slices.Equal(p, c.wantPorts) // never NULL: NULL publishes every guest port
			})
			check("krun_add_vsock_port2", func(c2 krunstandin.Call) bool {
				return c2.Num("port") == AgentPort && c2.Str("path") == inVMDir+"/"+filepath.Base(ep.AgentSocket) && c2["listen"] == true
			})
			check("krun_set_console_output", func(c2 krunstandin.Call) bool { return c2.Str("path") == inVMDir+"/"+consoleLogName })
			// TSI hijacks inet sockets only, asked for before the vsock
			// port is added to the device.
			check("krun_add_vsock", func(c2 krunstandin.Call) bool { return c2.Num("tsiFeatures") == float64(TSIHijackInet) })
			if i, j, k := slices.Index(fns, "krun_disable_implicit_vsock"), slices.Index(fns, "krun_add_vsock"), slices.Index(fns, "krun_add_vsock_port2"); i < 0 || !(i < j && j < k) {
				t.Errorf("calls %v: want krun_disable_implicit_vsock, then krun_add_vsock, then krun_add_vsock_port2", fns)
			}

			// The runner as krun_start_enter found itself: root of a user
			// namespace that is the sandboxes' uid on the host, with
			// no_new_privs, in the sandbox's cgroup and network namespace,
			// with nothing of msbd's environment.
			start := krunstandin.Find(calls, "krun_start_enter")
			if ids.Shared || ids.UID == d.opts.HostUID || ids.Size != container.SlotSize {
				t.Fatalf("recorded ids %+v: want a slot of its own", ids)
			}
			if f := strings.Fields(start.Str("uidMap")); len(f) != 3 || f[0] != "0" || f[1] != fmt.Sprint(ids.UID) || f[2] != fmt.Sprint(ids.Size) {
				t.Errorf("runner uid_map %q: want 0 mapped to the sandbox's host uid %d", start.Str("uidMap"), ids.UID)
			}
			if start.Num("noNewPrivs") != 1 {
				t.Error("runner without no_new_privs")
			}
			if !strings.Contains(start.Str("cgroup"), "/"+d.cgPrefix+spec.ID+"\n") {
				t.Errorf("runner cgroups %q: want %s", start.Str("cgroup"), d.cgPrefix+spec.ID)
			}
			hostNet, _ := os.Readlink("/proc/self/ns/net")
			if c.netns {
				var st syscall.Stat_t
				must(t, syscall.Stat(spec.NetNSPath, &st))
				if want := fmt.Sprintf("net:[%d]", st.Ino); start.Str("netns") != want {
					t.Errorf("runner netns %s, want the sandbox's %s", start.Str("netns"), want)
				}
			} else if start.Str("netns") == hostNet || start.Str("netns") == "" {
				t.Errorf("runner netns %s: want a new one, not msbd's %s", start.Str("netns"), hostNet)
			}
			if env := start.Strs("environ"); slices.Contains(env, canary) || len(env) != 1 || !strings.HasPrefix(env[0], "PATH=") {
				t.Errorf("runner environment %q: want PATH only", env)
			}
			// Its file system: its own small root, no host path.
			root := start.Strs("root")
			slices.Sort(root)
			if want := []string{"dev", "proc", "rootfs", "vm"}; !slices.Equal(root, want) {
				t.Errorf("runner root holds %q, want %q", root, want)
			}
			if n := start.Num("procs"); n != 1 {
				t.Errorf("the runner's /proc shows %v processes, want 1 (itself, PID 1 of its own PID namespace)", n)
			}
			var opened []string
			for _, call := range calls {
				if call.Fn() != "probe_open" {
					continue
				}
				opened = append(opened, call.Str("path"))
				if reach := call.Num("errno") == 0; reach != (call.Str("path") == inRootfs+"/etc/passwd") {
					t.Errorf("runner opening %s: errno %v", call.Str("path"), call.Num("errno"))
				}
			}
			if !slices.Equal(opened, probes) {
				t.Errorf("the stand-in tried %q, want %q", opened, probes)
			}

			// And from the host's side.
			st, err := d.State(ctx, spec.ID)
			must(t, err)
			status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", st.PID))
			must(t, err)
			for _, want := range []string{fmt.Sprintf("Uid:\t%d\t%d\t%d\t%d", ids.UID, ids.UID, ids.UID, ids.UID), "NoNewPrivs:\t1"} {
				if !strings.Contains(string(status), want+"\n") {
					t.Errorf("runner %d: /proc status lacks %q:\n%s", st.PID, want, status)
				}
			}
			// msbctl top reads the runner's cgroups.
			if stats, err := d.Stats(spec.ID); err != nil || stats.MemoryBytes == 0 || stats.MemoryLimitBytes != uint64(c.wantRAM+vmmOverheadMiB)<<20 {
				t.Errorf("Stats: %+v, %v: want memory in use and the limit RAM + %d MiB", stats, err, vmmOverheadMiB)
			}
			stopCtx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			must(t, d.Stop(stopCtx, spec.ID, 10*time.Second))
			if st, err := d.State(ctx, spec.ID); err != nil || st.Status != vmdriver.StatusStopped || !st.Exited || st.ExitCode != 143 {
				t.Errorf("after Stop: %+v, %v: want stopped with 143 (the agent passed SIGTERM on)", st, err)
			}
		})
	}
}

// TestTSIWithoutAddVsock checks that a libkrun without krun_add_vsock (older
// than the TSI feature flags) still boots, keeps its implicit vsock device
// (disabling it without adding one would leave the agent no port), and
// that runner.log says TSI is not limited to inet.
func TestTSIWithoutAddVsock(t *testing.T) {
	requireRoot(t)
	lib := krunstandin.Build(t, "krun_add_vsock")
	kvm := krunstandin.Device(t, lib)
	base := tempDir(t)
	self, err := os.Executable()
	must(t, err)
	d, err := New(Options{StateDir: filepath.Join(base, "state"), Library: lib, KVMDevice: kvm, RunnerPath: self})
	must(t, err)
	spec := vmdriver.Spec{ID: randomID(), Layers: busyboxLayers(t, base), AgentPath: agenttest.Build(t),
		Args: []string{"sh", "-c", drivertest.ScriptForever}, Env: []string{"PATH=/bin"}, MemoryBytes: 64 << 20, PIDs: 64}
	ctx := context.Background()
	must(t, d.Create(ctx, spec))
	t.Cleanup(func() { d.Delete(ctx, spec.ID, true) })
	must(t, d.Start(ctx, spec.ID))
	if out, code, err := drivertest.AgentExec(t, d, spec.ID, "true"); err != nil || code != 0 {
		t.Fatalf("exec: %q %d %v", out, code, err)
	}
	calls, err := krunstandin.Calls(d.ConsolePath(spec.ID))
	must(t, err)
	if c := krunstandin.Find(calls, "krun_disable_implicit_vsock"); c != nil {
		t.Error("krun_disable_implicit_vsock called though krun_add_vsock is missing")
	}
	if b, _ := os.ReadFile(d.RunnerLogPath(spec.ID)); !strings.Contains(string(b), "cannot limit TSI to inet") {
		t.Errorf("runner.log does not say TSI is not limited:\n%s", b)
	}
}
