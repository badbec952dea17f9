package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
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
//   - msbd-goroutines/sb: msbd's goroutines per sandbox (from its
//     --pprof-socket);
//   - get-A-ms, describe-ms: `msbctl get sb -A` and `msbctl describe sb
//     NAME`, median of 5;
//   - delete-s: `msbctl delete sb --all --wait`.
//
// At the end it logs the figures of every size side by side, with the
// ratio of each to the smallest size's per unit of size (1.0: linear).
// MSB_BENCH_PPROF=DIR also saves msbd's heap profile after the idle
// period and CPU profiles of the idle period and of the delete to DIR
// (`go tool pprof bin/msbd DIR/heap-1000.pb.gz`).
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
	var runs []densityFigures
	for _, s := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			b.Fatalf("MSB_BENCH_DENSITY=%q", sizes)
		}
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			for range b.N {
				runs = append(runs, densityOnce(b, n, idle))
			}
		})
	}
	logDensity(b, runs)
}

// densityFigures are one size's figures that should scale linearly (or
// not at all), kept to set the sizes side by side.
type densityFigures struct {
	n                                     int
	getA, describe, deleteAll, idleCPU    time.Duration
	rssPerSb, goroutinesPerSb, idleCPUPct float64
}

// logDensity logs every size's figures beside the smallest size's: per
// object for get -A and delete (1.0× means linear in objects), as is for
// the per-sandbox ones.
func logDensity(b *testing.B, runs []densityFigures) {
	if len(runs) < 2 {
		return
	}
	base := runs[0]
	var sb strings.Builder
	fmt.Fprintf(&sb, "%-6s %10s %12s %10s %14s %10s %12s %8s\n", "n", "get-A-ms", "describe-ms", "delete-s", "delete-ms/sb", "rss-KiB/sb", "goroutines/sb", "idle-%")
	for _, r := range runs {
		fmt.Fprintf(&sb, "%-6d %10.1f %12.1f %10.1f %14.1f %10.0f %12.2f %8.2f\n", r.n, ms(r.getA), ms(r.describe), r.deleteAll.Seconds(),
			ms(r.deleteAll)/float64(r.n), r.rssPerSb, r.goroutinesPerSb, r.idleCPUPct)
	}
	for _, r := range runs[1:] {
		per := func(x, y time.Duration) float64 { return (float64(x) / float64(r.n)) / (float64(y) / float64(base.n)) }
		fmt.Fprintf(&sb, "n=%d vs n=%d, per object (1.0 = linear): get -A %.2f×, delete --all --wait %.2f×; describe %.2f× (1.0 = flat)\n",
			r.n, base.n, per(r.getA, base.getA), per(r.deleteAll, base.deleteAll), float64(r.describe)/float64(base.describe))
	}
	// Printed, not logged: a parent benchmark's log is not shown.
	fmt.Print("density, side by side:\n" + sb.String())
}

func densityOnce(b *testing.B, n int, idle time.Duration) densityFigures {
	pprofSock := filepath.Join(b.TempDir(), "pprof.sock")
	d := startDaemon(b, "--log-level", "warn", "--pprof-socket", pprofSock)
	profDir := os.Getenv("MSB_BENCH_PPROF")
	d.apply(sandboxYAML("warm", "", "sleep", "100000"))
	d.must("wait", "sandbox/warm", "--for=condition=Ready", "--timeout=60s")
	d.must("delete", "sandbox", "warm", "--wait")

	// The baseline: sequential `runc run -d` of the same rootfs, beside.
	seq := runcDetachedSeq(b, layerDir(b, d), 100)
	seqN := seq * time.Duration(n) / 100

	msbdPid := d.cmd.Process.Pid
	rssBefore, availBefore := procRSS(msbdPid), memAvailableKiB()
	grBefore := goroutines(b, pprofSock)
	var docs []string
	for i := range n {
		docs = append(docs, sandboxYAML(fmt.Sprintf("d%04d", i), "", "sleep", "100000"))
	}
	f := filepath.Join(b.TempDir(), "m.yaml")
	os.WriteFile(f, []byte(strings.Join(docs, "---\n")), 0o644)
	c := client.New(d.socket)
	// Ready is what the daemon reports, seen through a watch opened before
	// the apply (polling lists of N objects would take CPU from the starts).
	wctx, wcancel := context.WithTimeout(context.Background(), time.Duration(n)*time.Second+time.Minute)
	events, err := c.Watch(wctx, v1alpha1.KindSandbox, "default", "")
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	d.must("apply", "-f", f)
	ready := allReadyAt(events, n).Sub(t0)
	wcancel()
	if got := readyCount(c); got < n {
		b.Fatalf("only %d of %d Ready after %s", got, n, time.Since(t0))
	}

	// The same baseline with the N sandboxes running: what the host's
	// state (N more mounts in every new mount namespace, N more cgroups)
	// costs runc itself, beside what msb adds.
	seqLoaded := runcDetachedSeq(b, layerDir(b, d), 20) * time.Duration(n) / 20

	time.Sleep(5 * time.Second) // let the starts' garbage go
	pss, agentPss, procs := sandboxPSS(b, d.stateDir)
	rssAfter, availAfter := procRSS(msbdPid), memAvailableKiB()
	grAfter := goroutines(b, pprofSock)
	cpu0 := procCPU(msbdPid)
	if profDir != "" {
		// The CPU profile is the idle period itself.
		saveProfile(b, pprofSock, fmt.Sprintf("profile?seconds=%d", int(idle.Seconds())), filepath.Join(profDir, fmt.Sprintf("cpu-idle-%d.pb.gz", n)))
	} else {
		time.Sleep(idle)
	}
	cpu := procCPU(msbdPid) - cpu0
	if profDir != "" {
		saveProfile(b, pprofSock, "heap?gc=1", filepath.Join(profDir, fmt.Sprintf("heap-%d.pb.gz", n)))
		saveProfile(b, pprofSock, "goroutine", filepath.Join(profDir, fmt.Sprintf("goroutine-%d.pb.gz", n)))
	}

	var gets, descs []time.Duration
	for range 5 {
		t := time.Now()
		d.must("get", "sb", "-A")
		gets = append(gets, time.Since(t))
		t = time.Now()
		d.must("describe", "sb", fmt.Sprintf("d%04d", n/2))
		descs = append(descs, time.Since(t))
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
	b.ReportMetric(float64(grAfter-grBefore)/float64(n), "msbd-goroutines/sb")
	b.ReportMetric(ms(median(gets)), "get-A-ms")
	b.ReportMetric(ms(median(descs)), "describe-ms")

	// msbctl's own timeout, not the harness's two minutes.
	timeout := time.Duration(2*n+60) * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "msbctl"), "delete", "sandboxes", "--all", "--wait", "--timeout="+timeout.String())
	cmd.Env = append(os.Environ(), "MSB_SOCKET="+d.socket)
	profiled := make(chan struct{})
	if profDir != "" {
		// The first minute of the delete (or all of it); awaited below,
		// before msbd stops.
		secs := min(60, n/20+5)
		go func() {
			defer close(profiled)
			saveProfile(b, pprofSock, fmt.Sprintf("profile?seconds=%d", secs), filepath.Join(profDir, fmt.Sprintf("cpu-delete-%d.pb.gz", n)))
		}()
		// Where the goroutines wait, a few seconds into the delete.
		time.AfterFunc(3*time.Second, func() {
			if data, err := pprofGet(pprofSock, "goroutine?debug=1", 30*time.Second); err == nil {
				os.WriteFile(filepath.Join(profDir, fmt.Sprintf("goroutines-delete-%d.txt", n)), data, 0o644)
			}
		})
	} else {
		close(profiled)
	}
	busy0, total0 := hostCPU()
	t1 := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("delete --all --wait: %v\n%s", err, out)
	}
	del := time.Since(t1)
	<-profiled
	b.ReportMetric(del.Seconds(), "delete-s")
	b.ReportMetric(ms(del)/float64(n), "delete-ms/sb")
	// How busy the whole host was meanwhile: near 100% means the delete is
	// bounded by the machine, not by a lock or a serial step.
	busy1, total1 := hostCPU()
	if total1 > total0 {
		b.ReportMetric(100*float64(busy1-busy0)/float64(total1-total0), "delete-host-busy-%")
	}
	return densityFigures{n: n, getA: median(gets), describe: median(descs), deleteAll: del,
		rssPerSb: float64(rssAfter-rssBefore) / float64(n), goroutinesPerSb: float64(grAfter-grBefore) / float64(n),
		idleCPUPct: 100 * cpu.Seconds() / idle.Seconds()}
}

// pprofGet fetches path from msbd's --pprof-socket.
func pprofGet(sock, path string, timeout time.Duration) ([]byte, error) {
	hc := &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := hc.Get("http://msbd/debug/pprof/" + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("pprof %s: %s", path, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// goroutines is msbd's goroutine count.
func goroutines(b *testing.B, sock string) int {
	data, err := pprofGet(sock, "goroutine?debug=1", 30*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	first, _, _ := strings.Cut(string(data), "\n")
	n, err := strconv.Atoi(strings.TrimPrefix(first, "goroutine profile: total "))
	if err != nil {
		b.Fatalf("goroutine profile: %q", first)
	}
	return n
}

// saveProfile writes msbd's profile path to file (logged, not fatal: the
// profiles are extras).
func saveProfile(b *testing.B, sock, path, file string) {
	data, err := pprofGet(sock, path, 5*time.Minute)
	if err == nil {
		err = os.WriteFile(file, data, 0o644)
	}
	if err != nil {
		b.Logf("profile %s: %v", path, err)
	}
}

// allReadyAt returns when n sandboxes have been seen Ready in events (or
// when the watch ends).
func allReadyAt(events <-chan client.WatchEvent, n int) time.Time {
	ready := map[string]bool{}
	for ev := range events {
		sb, ok := ev.Object.(*v1alpha1.Sandbox)
		if !ok {
			continue
		}
		if c := v1alpha1.FindCondition(sb.Status.Conditions, v1alpha1.ConditionReady); c != nil && c.Status == v1alpha1.ConditionTrue {
			ready[sb.Metadata.Name] = true
		}
		if len(ready) == n {
			return time.Now()
		}
	}
	return time.Now()
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

// hostCPU is the host's busy and total CPU time so far, in ticks, from
// the first line of /proc/stat (busy: all but idle and iowait).
func hostCPU() (busy, total int64) {
	data, _ := os.ReadFile("/proc/stat")
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i >= 7 { // steal, guest: guest is already in user
			break
		}
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
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
