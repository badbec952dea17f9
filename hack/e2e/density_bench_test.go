package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
	"msb.dev/msb/vmdriver/container"
)

// BenchmarkDensity runs N idle busybox `sleep` sandboxes applied at once,
// for each N of MSB_BENCH_DENSITY (e.g. "100,1000"), each on a fresh
// msbd, and reports per size:
//
//   - ready-s: apply → all Ready, beside runc-seq-s: the same number of
//     sequential bare `runc run -d` of the same rootfs, timed in the same run
//     (100 of them, scaled to N), and their ratio; runc-seq-loaded-s: 20
//     more timed while the N run, scaled to N;
//   - pss-KiB/sb: PSS of the sandboxes' processes (agent and command, from
//     /proc/PID/smaps_rollup) per sandbox, and agent-pss-KiB the agent's alone;
//   - memavail-KiB/sb: the drop of MemAvailable per sandbox (the whole
//     system: kernel memory included; noisy on a shared host);
//   - msbd-rss-KiB/sb: msbd's RSS growth per sandbox;
//   - msbd-idle-cpu-%: msbd's CPU over MSB_BENCH_IDLE (30s) with all of
//     them running, in % of one core;
//   - get-A-ms: `msbctl get sb -A`, median of 5;
//   - delete-s: `msbctl delete sb --all --wait`.
//
// Run: MSB_BENCH_DENSITY=100,1000 go test -run '^$' -bench Density
// -benchtime 1x ./hack/e2e/ (or hack/bench/density.sh). Nothing here
// asserts on time.
func BenchmarkDensity(b *testing.B) {
	sizes := os.Getenv("MSB_BENCH_DENSITY")
	if sizes == "" {
		// Minutes per size: not part of `-bench .` (hack/bench/run.sh).
		b.Skip("set MSB_BENCH_DENSITY=100,1000 (or run hack/bench/density.sh) to run it")
	}
	idle := 30 * time.Second
	if s := os.Getenv("MSB_BENCH_IDLE"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			b.Fatal(err)
		}
		idle = d
	}
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			b.Fatalf("MSB_BENCH_DENSITY=%q", sizes)
		}
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			for range b.N {
				densityOnce(b, n, idle)
			}
		})
	}
}

func densityOnce(b *testing.B, n int, idle time.Duration) {
	d := startDaemon(b, "--log-level", "warn")
	d.apply(sandboxYAML("warm", "", "sleep", "100000"))
	d.must("wait", "sandbox/warm", "--for=condition=Ready", "--timeout=60s")
	d.must("delete", "sandbox", "warm", "--wait")

	// The baseline: sequential `runc run -d` of the same rootfs, beside.
	seq := runcDetachedSeq(b, layerDir(b, d), 100)
	seqN := seq * time.Duration(n) / 100

	msbdPid := d.cmd.Process.Pid
	rssBefore, availBefore := procRSS(msbdPid), memAvailableKiB()
	var docs []string
	for i := range n {
		docs = append(docs, sandboxYAML(fmt.Sprintf("d%04d", i), "", "sleep", "100000"))
	}
	f := filepath.Join(b.TempDir(), "m.yaml")
	os.WriteFile(f, []byte(strings.Join(docs, "---\n")), 0o644)
	c := client.New(d.socket)
	t0 := time.Now()
	d.must("apply", "-f", f)
	for {
		if readyCount(c) == n {
			break
		}
		if time.Since(t0) > time.Duration(n)*time.Second+time.Minute {
			b.Fatalf("only %d of %d Ready after %s", readyCount(c), n, time.Since(t0))
		}
		time.Sleep(100 * time.Millisecond)
	}
	ready := time.Since(t0)

	// The same baseline with the N sandboxes running: what the host's
	// state (N more mounts in every new mount namespace, N more cgroups)
	// costs runc itself, beside what msb adds.
	seqLoaded := runcDetachedSeq(b, layerDir(b, d), 20) * time.Duration(n) / 20

	time.Sleep(5 * time.Second) // let the starts' garbage go
	pss, agentPss, procs := sandboxPSS(b, d.stateDir)
	rssAfter, availAfter := procRSS(msbdPid), memAvailableKiB()
	cpu0 := procCPU(msbdPid)
	time.Sleep(idle)
	cpu := procCPU(msbdPid) - cpu0

	var gets []time.Duration
	for range 5 {
		t := time.Now()
		d.must("get", "sb", "-A")
		gets = append(gets, time.Since(t))
	}
	b.ReportMetric(ready.Seconds(), "ready-s")
	b.ReportMetric(seqN.Seconds(), "runc-seq-s")
	b.ReportMetric(ready.Seconds()/seqN.Seconds(), "ready/runc-seq")
	b.ReportMetric(seqLoaded.Seconds(), "runc-seq-loaded-s")
	b.ReportMetric(float64(pss)/float64(n), "pss-KiB/sb")
	b.ReportMetric(float64(agentPss)/float64(n), "agent-pss-KiB")
	b.ReportMetric(float64(procs)/float64(n), "procs/sb")
	b.ReportMetric(float64(availBefore-availAfter)/float64(n), "memavail-KiB/sb")
	b.ReportMetric(float64(rssAfter-rssBefore)/float64(n), "msbd-rss-KiB/sb")
	b.ReportMetric(float64(rssAfter), "msbd-rss-KiB")
	b.ReportMetric(100*cpu.Seconds()/idle.Seconds(), "msbd-idle-cpu-%")
	b.ReportMetric(ms(median(gets)), "get-A-ms")

	// msbctl's own timeout, not the harness's two minutes.
	timeout := time.Duration(2*n+60) * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "msbctl"), "delete", "sandboxes", "--all", "--wait", "--timeout="+timeout.String())
	cmd.Env = append(os.Environ(), "MSB_SOCKET="+d.socket)
	t1 := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("delete --all --wait: %v\n%s", err, out)
	}
	b.ReportMetric(time.Since(t1).Seconds(), "delete-s")
}

func readyCount(c *client.Client) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	objs, _, err := c.List(ctx, v1alpha1.KindSandbox, "", "")
	if err != nil {
		return 0
	}
	n := 0
	for _, o := range objs {
		for _, cd := range o.(*v1alpha1.Sandbox).Status.Conditions {
			if cd.Type == v1alpha1.ConditionReady && cd.Status == v1alpha1.ConditionTrue {
				n++
			}
		}
	}
	return n
}

// runcDetachedSeq times n sequential `runc run -d` of `sleep` on rootfs
// (runc's default spec), then removes them.
func runcDetachedSeq(b *testing.B, rootfs string, n int) time.Duration {
	dir := b.TempDir()
	if out, err := exec.Command("runc", "spec", "-b", dir).CombinedOutput(); err != nil {
		b.Fatalf("runc spec: %v %s", err, out)
	}
	cfgPath := filepath.Join(dir, "config.json")
	data, _ := os.ReadFile(cfgPath)
	s := strings.Replace(string(data), `"terminal": true`, `"terminal": false`, 1)
	s = strings.Replace(s, `"sh"`, `"/bin/sleep", "100000"`, 1)
	s = strings.Replace(s, `"path": "rootfs"`, `"path": "`+rootfs+`"`, 1)
	os.WriteFile(cfgPath, []byte(s), 0o644)
	root := filepath.Join(dir, "runc-root")
	ids := make([]string, 0, n)
	b.Cleanup(func() {
		for _, id := range ids {
			exec.Command("runc", "--root", root, "delete", "-f", id).Run()
		}
	})
	t0 := time.Now()
	for i := range n {
		id := fmt.Sprintf("msbbenchd%d", i)
		cmd := exec.Command("runc", "--root", root, "run", "-d", "-b", dir, id)
		if err := cmd.Run(); err != nil {
			b.Fatalf("runc run -d: %v", err)
		}
		ids = append(ids, id)
	}
	took := time.Since(t0)
	for _, id := range ids {
		exec.Command("runc", "--root", root, "delete", "-f", id).Run()
	}
	ids = nil
	return took
}

// sandboxPSS sums the PSS (KiB) of every process in the sandboxes' cgroups
// of this state dir, and of the agents (each cgroup's lowest pid) alone.
func sandboxPSS(b *testing.B, stateDir string) (all, agents int64, procs int) {
	prefix := container.CgroupPrefix(stateDir)
	var root string
	for _, r := range []string{"/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if ents, err := os.ReadDir(r); err == nil {
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), prefix) {
					root = r
					break
				}
			}
		}
		if root != "" {
			break
		}
	}
	if root == "" {
		b.Fatal("no sandbox cgroups found")
	}
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		var pids []int
		filepath.WalkDir(filepath.Join(root, e.Name()), func(p string, de os.DirEntry, err error) error {
			if err == nil && de.Name() == "cgroup.procs" {
				data, _ := os.ReadFile(p)
				for _, f := range strings.Fields(string(data)) {
					if pid, err := strconv.Atoi(f); err == nil {
						pids = append(pids, pid)
					}
				}
			}
			return nil
		})
		lowest := 0
		for _, pid := range pids {
			all += smapsPSS(pid)
			procs++
			if lowest == 0 || pid < lowest {
				lowest = pid
			}
		}
		if lowest != 0 {
			agents += smapsPSS(lowest)
		}
	}
	return all, agents, procs
}

func smapsPSS(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "Pss:"); ok {
			v, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return v
		}
	}
	return 0
}

// procRSS is pid's VmRSS in KiB.
func procRSS(pid int) int64 {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			v, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return v
		}
	}
	return 0
}

// procCPU is pid's user+system CPU time so far.
func procCPU(pid int) time.Duration {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	s := string(data)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+2:]
	}
	f := strings.Fields(s)
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func memAvailableKiB() int64 {
	data, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			v, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return v
		}
	}
	return 0
}
