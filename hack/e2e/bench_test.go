package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/client"
)

// Benchmarks of the user-visible latencies, each beside a baseline measured in
// the same run: bare `runc run` of the same image rootfs. Run with
//
//	go test -run '^$' -bench . -benchtime 20x ./hack/e2e/
//
// or hack/bench/run.sh. They report ratios; nothing here asserts on time.

// BenchmarkApplyToReady: `msbctl apply` → Ready (image already unpacked), and
// → first exec output, against `runc run` of the same rootfs.
func BenchmarkApplyToReady(b *testing.B) {
	d := startDaemon(b, "--log-level", "warn")
	// Warm the image cache.
	d.apply(sandboxYAML("warm", "", "sleep", "1000"))
	d.must("wait", "sandbox/warm", "--for=condition=Ready", "--timeout=60s")
	rootfs := layerDir(b, d)
	baseRun := runcBaseline(b, rootfs)
	sameRun := runcSameConfig(b, d, "warm")

	// Interleaved, so load on the machine hits baselines and msb alike.
	// Ready is what the daemon reports: a watch opened before the apply sees
	// the status write, with no other process competing for the CPU while
	// the sandbox starts. The first exec follows right after. A script's
	// view is timed on two more sandboxes of each round: `msbctl apply` then
	// `msbctl wait` (a second CLI start, running while runc does), and
	// `msbctl apply --wait` (one process).
	var base, same, cli, ready, readyCLI, applyWait, firstExec []time.Duration
	c := client.New(d.socket)
	manifest := func(name string) string {
		f := filepath.Join(b.TempDir(), "m.yaml")
		os.WriteFile(f, []byte(sandboxYAML(name, "", "sleep", "1000")), 0o644)
		return f
	}
	for i := 0; i < b.N; i++ {
		base = append(base, baseRun(i))
		same = append(same, sameRun(i))

		name, f := fmt.Sprintf("b%d", i), manifest(fmt.Sprintf("b%d", i))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		events, err := c.Watch(ctx, "sandbox", "default", "")
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		d.must("apply", "-f", f)
		cli = append(cli, time.Since(t0))
		ready = append(ready, readyAt(b, events, name).Sub(t0))
		cancel()
		d.must("exec", name, "--", "echo", "hi")
		firstExec = append(firstExec, time.Since(t0))

		name2, f2 := fmt.Sprintf("w%d", i), manifest(fmt.Sprintf("w%d", i))
		t0 = time.Now()
		d.must("apply", "-f", f2)
		d.must("wait", "sandbox/"+name2, "--for=condition=Ready", "--timeout=60s")
		readyCLI = append(readyCLI, time.Since(t0))

		name3, f3 := fmt.Sprintf("x%d", i), manifest(fmt.Sprintf("x%d", i))
		t0 = time.Now()
		d.must("apply", "-f", f3, "--wait")
		applyWait = append(applyWait, time.Since(t0))
		d.must("delete", "sandbox", name, name2, name3, "--wait", "--timeout=60s")
	}
	b.ReportMetric(ms(median(base)), "runc-run-ms")
	b.ReportMetric(ms(median(cli)), "msbctl-apply-ms")
	b.ReportMetric(ms(median(ready)), "apply-ready-ms")
	b.ReportMetric(ms(median(readyCLI)), "apply+wait-cli-ms")
	b.ReportMetric(ms(median(applyWait)), "apply--wait-cli-ms")
	b.ReportMetric(float64(median(applyWait))/float64(median(base)), "apply--wait/runc")
	b.ReportMetric(ms(median(firstExec)), "apply-exec-ms")
	b.ReportMetric(ms(median(same)), "runc-run-sameconfig-ms")
	b.ReportMetric(float64(median(ready))/float64(median(same)), "ready/runc-sameconfig")
	b.ReportMetric(float64(median(ready))/float64(median(base)), "ready/runc")
	b.ReportMetric(float64(median(firstExec))/float64(median(base)), "exec/runc")
}

// BenchmarkExecTrue: `msbctl exec NAME -- true` round trip, against
// `runc exec` into a bare container of the same rootfs.
func BenchmarkExecTrue(b *testing.B) {
	d := startDaemon(b, "--log-level", "warn")
	d.apply(sandboxYAML("ex", "", "sleep", "1000"))
	d.must("wait", "sandbox/ex", "--for=condition=Ready", "--timeout=60s")
	var rt []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		d.must("exec", "ex", "--", "true")
		rt = append(rt, time.Since(t0))
	}
	b.StopTimer()
	b.ReportMetric(ms(median(rt)), "exec-true-median-ms")
	sort.Slice(rt, func(i, j int) bool { return rt[i] < rt[j] })
	b.ReportMetric(ms(rt[len(rt)*9/10]), "exec-true-p90-ms")
}

// readyAt returns when the watch delivered Sandbox name with Ready=True.
func readyAt(b *testing.B, events <-chan client.WatchEvent, name string) time.Time {
	for ev := range events {
		if sb, ok := ev.Object.(*v1alpha1.Sandbox); ok && sb.Metadata.Name == name {
			if c := v1alpha1.FindCondition(sb.Status.Conditions, "Ready"); c != nil && c.Status == "True" {
				return time.Now()
			}
		}
	}
	b.Fatalf("watch ended before sandbox %s was Ready", name)
	return time.Time{}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// layerDir returns the unpacked busybox layer (a complete rootfs: one layer).
func layerDir(b *testing.B, d *daemon) string {
	ents, err := os.ReadDir(filepath.Join(d.stateDir, "images", "layers"))
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			return filepath.Join(d.stateDir, "images", "layers", e.Name())
		}
	}
	b.Fatal("no unpacked layer")
	return ""
}

// runcSameConfig times `runc run` of `true` with the very runtime config msb
// generated for sandbox name (user namespace, seccomp, cgroup limits, masked
// paths) on its rootfs: what msb adds beyond runc itself.
func runcSameConfig(b *testing.B, d *daemon, name string) func(i int) time.Duration {
	uid := field(d.sandbox(name), "metadata.uid").(string)
	data, err := os.ReadFile(filepath.Join(d.stateDir, "sandboxes", uid, "bundle", "config.json"))
	if err != nil {
		b.Fatal(err)
	}
	var cfg map[string]any
	json.Unmarshal(data, &cfg)
	cfg["process"].(map[string]any)["args"] = []string{"/bin/true"}
	var mounts []any
	for _, m := range cfg["mounts"].([]any) {
		if !strings.HasPrefix(m.(map[string]any)["destination"].(string), "/.msb") {
			mounts = append(mounts, m)
		}
	}
	cfg["mounts"] = mounts
	dir := b.TempDir()
	root := filepath.Join(dir, "runc-root")
	return func(i int) time.Duration {
		id := fmt.Sprintf("msbbenchsame%d", i)
		cfg["linux"].(map[string]any)["cgroupsPath"] = "/" + id
		data, _ := json.Marshal(cfg)
		os.WriteFile(filepath.Join(dir, "config.json"), data, 0o644)
		return timeRuncRun(b, root, dir, id)
	}
}

// runcBaseline times one `runc run` of `true` on the rootfs with runc's
// default spec, per call.
func runcBaseline(b *testing.B, rootfs string) func(i int) time.Duration {
	dir := b.TempDir()
	if out, err := exec.Command("runc", "spec", "-b", dir).CombinedOutput(); err != nil {
		b.Fatalf("runc spec: %v %s", err, out)
	}
	cfgPath := filepath.Join(dir, "config.json")
	var cfg map[string]any
	data, _ := os.ReadFile(cfgPath)
	json.Unmarshal(data, &cfg)
	cfg["root"] = map[string]any{"path": rootfs, "readonly": true}
	p := cfg["process"].(map[string]any)
	p["terminal"] = false
	p["args"] = []string{"/bin/true"}
	data, _ = json.Marshal(cfg)
	os.WriteFile(cfgPath, data, 0o644)
	root := filepath.Join(dir, "runc-root")
	return func(i int) time.Duration {
		return timeRuncRun(b, root, dir, fmt.Sprintf("msbbench%d", i))
	}
}

// timeRuncRun times one foreground `runc run` of the bundle in dir, then
// removes the container.
func timeRuncRun(b *testing.B, root, dir, id string) time.Duration {
	t0 := time.Now()
	if out, err := exec.Command("runc", "--root", root, "run", "-b", dir, id).CombinedOutput(); err != nil {
		b.Fatalf("runc run: %v %s", err, out)
	}
	took := time.Since(t0)
	exec.Command("runc", "--root", root, "delete", "-f", id).Run()
	return took
}

// BenchmarkImageFirstVsCached: time to Ready for a 5-layer image on its first
// start (pulled from a loopback registry and unpacked) against a second
// sandbox of the same image (cache hit).
func BenchmarkImageFirstVsCached(b *testing.B) {
	d := startDaemon(b, "--log-level", "warn")
	reg := newRegistry(b, d.netns)
	var first, cached []time.Duration
	for i := 0; i < b.N; i++ {
		ref, _ := reg.Push(b, fmt.Sprintf("bench/img%d:v1", i), layeredBusybox(b, 4, fmt.Sprint(i)))
		for j, out := range []*[]time.Duration{&first, &cached} {
			name := fmt.Sprintf("i%d-%d", i, j)
			t0 := time.Now()
			d.apply(registrySandbox(name, ref, ""))
			d.must("wait", "sandbox/"+name, "--for=condition=Ready", "--timeout=60s")
			*out = append(*out, time.Since(t0))
		}
		d.must("delete", "sandboxes", fmt.Sprintf("i%d-0", i), fmt.Sprintf("i%d-1", i), "--wait", "--timeout=60s")
	}
	b.ReportMetric(ms(median(first)), "first-start-ms")
	b.ReportMetric(ms(median(cached)), "cached-start-ms")
	b.ReportMetric(float64(median(first))/float64(median(cached)), "first/cached")
}

// BenchmarkDiskTenSandboxes: disk used by 10 sandboxes of one registry image
// — the image layers once, plus one small writable layer each.
func BenchmarkDiskTenSandboxes(b *testing.B) {
	d := startDaemon(b, "--log-level", "warn")
	reg := newRegistry(b, d.netns)
	ref, _ := reg.Push(b, "disk/image:v1", layeredBusybox(b, 4, "d"))
	for i := 0; i < b.N; i++ {
		var docs []string
		for j := 0; j < 10; j++ {
			docs = append(docs, strings.Replace(sandboxYAML(fmt.Sprintf("disk%d-%d", i, j), "", "sh", "-c", "echo hi > /tmp/x; exec sleep 1000"), "oci:"+imageDir+":latest", ref, 1))
		}
		d.apply(strings.Join(docs, "---\n"))
		for j := 0; j < 10; j++ {
			d.must("wait", fmt.Sprintf("sandbox/disk%d-%d", i, j), "--for=condition=Ready", "--timeout=60s")
		}
		// Everything the image store holds (blobs, unpacked layers, metadata)
		// against the unpacked layers alone: one copy is the target.
		layers := duBytes(b, filepath.Join(d.stateDir, "images", "layers"))
		store := duBytes(b, filepath.Join(d.stateDir, "images"))
		b.ReportMetric(float64(store)/float64(layers), "imagestore/layers")
		uppers, _ := filepath.Glob(filepath.Join(d.stateDir, "sandboxes", "*", "upper"))
		var up int64
		for _, u := range uppers {
			up += duBytes(b, u)
		}
		b.ReportMetric(float64(layers)/(1<<20), "image-layers-MiB")
		b.ReportMetric(float64(up)/float64(len(uppers))/1024, "writable-per-sandbox-KiB")
		b.ReportMetric(float64(layers+up)/float64(layers), "total/one-copy")
		var names []string
		for j := 0; j < 10; j++ {
			names = append(names, fmt.Sprintf("disk%d-%d", i, j))
		}
		d.must(append([]string{"delete", "sandboxes"}, append(names, "--wait", "--timeout=120s")...)...)
	}
}

// duBytes is the disk space (allocated blocks) used below dir, counting
// hard-linked files once.
func duBytes(b *testing.B, dir string) int64 {
	out, err := exec.Command("du", "-s", "-B1", dir).Output()
	if err != nil {
		b.Fatalf("du %s: %v", dir, err)
	}
	var n int64
	fmt.Sscan(string(out), &n)
	return n
}

// BenchmarkApplyToReadyNetwork: apply → Ready with sandbox networking (a
// network namespace, veth, nft set element, rules in the Engine, resolv.conf
// and hosts) against the same without (msbd --network=false), interleaved,
// with bare `runc run` of the same rootfs as the baseline.
func BenchmarkApplyToReadyNetwork(b *testing.B) {
	withNet := startDaemon(b, "--log-level", "warn")
	without := startDaemon(b, "--log-level", "warn", "--network=false")
	for _, d := range []*daemon{withNet, without} {
		d.apply(sandboxYAML("warm", "", "sleep", "1000"))
		d.must("wait", "sandbox/warm", "--for=condition=Ready", "--timeout=60s")
	}
	baseRun := runcBaseline(b, layerDir(b, withNet))
	var base, net, nonet []time.Duration
	for i := 0; i < b.N; i++ {
		base = append(base, baseRun(i))
		name := fmt.Sprintf("n%d", i)
		net = append(net, applyToReady(b, withNet, name))
		nonet = append(nonet, applyToReady(b, without, name))
		withNet.must("delete", "sandbox", name, "--wait", "--timeout=60s")
		without.must("delete", "sandbox", name, "--wait", "--timeout=60s")
	}
	b.ReportMetric(ms(median(base)), "runc-run-ms")
	b.ReportMetric(ms(median(net)), "ready-network-ms")
	b.ReportMetric(ms(median(nonet)), "ready-no-network-ms")
	b.ReportMetric(float64(median(net))/float64(median(nonet)), "network/no-network")
	b.ReportMetric(float64(median(net))/float64(median(base)), "network/runc")
}

// applyToReady applies a `sleep` sandbox named name to d and returns the
// time from the apply until d's watch reports it Ready.
func applyToReady(b *testing.B, d *daemon, name string) time.Duration {
	f := filepath.Join(b.TempDir(), "m.yaml")
	os.WriteFile(f, []byte(sandboxYAML(name, "", "sleep", "1000")), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	events, err := client.New(d.socket).Watch(ctx, "sandbox", "default", "")
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	d.must("apply", "-f", f)
	return readyAt(b, events, name).Sub(t0)
}
