package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"msb.dev/msb/client"
	"msb.dev/msb/vmdriver/container"
	"msb.dev/msb/vmdriver/krun"
	"msb.dev/msb/vmdriver/krun/krunstandin"
)

// standInBenchEnv, when set, runs BenchmarkMicroVM against the libkrun
// stand-in: its figures then measure msb's own path (runner, mounts,
// agent) without a guest kernel, not a microVM.
const standInBenchEnv = "MSB_BENCH_KRUN_STANDIN"

// BenchmarkMicroVM: apply → Ready and the `msbctl exec NAME -- true` round
// trip of a microVM, beside a container of the same image in the same run
// (interleaved). It needs KVM that the sandboxes' uid may use, libkrun and
// libkrunfw (MSB_KRUN_LIB names a libkrun outside the loader's search), and
// skips saying what is missing.
func BenchmarkMicroVM(b *testing.B) {
	requireRoot(b)
	var args []string
	if os.Getenv(standInBenchEnv) != "" {
		lib := krunstandin.Build(b)
		args = []string{"--krun-lib", lib, "--kvm-device", krunstandin.Device(b, lib)}
		b.Log("against the libkrun stand-in: no guest kernel boots; these are not microVM figures")
	} else {
		f := krun.Probe(os.Getenv("MSB_KRUN_LIB"), "")
		f.RequireAccessSpan(container.DefaultHostID, container.DefaultHostID, container.DefaultIDMapSize)
		switch {
		case !f.Available():
			b.Skip("no microVMs here: " + f.Reason())
		case !f.KVMCharDevice || f.Libkrunfw == "":
			b.Skip("no microVMs here: no KVM character device or no libkrunfw")
		}
		args = []string{"--krun-lib", f.Library}
	}
	d := startDaemon(b, append(args, "--log-level", "warn")...)
	d.apply(sandboxYAML("warm", "  isolation: container\n", "sleep", "100000"))
	d.must("wait", "sandbox/warm", "--for=condition=Ready", "--timeout=60s")
	c := client.New(d.socket)

	// readyTime applies one sandbox of isolation iso and returns how long
	// until the daemon reported it Ready.
	readyTime := func(name, iso string) time.Duration {
		f := filepath.Join(b.TempDir(), name+".yaml")
		os.WriteFile(f, []byte(sandboxYAML(name, "  isolation: "+iso+"\n", "sleep", "100000")), 0o644)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		events, err := c.Watch(ctx, "sandbox", "default", "")
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		d.must("apply", "-f", f)
		return readyAt(b, events, name).Sub(t0)
	}
	execTime := func(name string) time.Duration {
		t0 := time.Now()
		d.must("exec", name, "--", "true")
		return time.Since(t0)
	}
	var vmReady, ctrReady, vmExec, ctrExec []time.Duration
	for i := 0; i < b.N; i++ {
		vm, ctr := fmt.Sprintf("vm%d", i), fmt.Sprintf("ctr%d", i)
		vmReady = append(vmReady, readyTime(vm, "microvm"))
		ctrReady = append(ctrReady, readyTime(ctr, "container"))
		d.must("exec", vm, "--", "true") // the agent answers: later execs are round trips
		d.must("exec", ctr, "--", "true")
		for j := 0; j < 5; j++ {
			vmExec = append(vmExec, execTime(vm))
			ctrExec = append(ctrExec, execTime(ctr))
		}
		d.must("delete", "sandbox", vm, ctr, "--wait", "--timeout=60s")
	}
	b.ReportMetric(ms(median(vmReady)), "microvm-ready-ms")
	b.ReportMetric(ms(median(ctrReady)), "container-ready-ms")
	b.ReportMetric(float64(median(vmReady))/float64(median(ctrReady)), "ready-vm/ctr")
	b.ReportMetric(ms(median(vmExec)), "microvm-exec-ms")
	b.ReportMetric(ms(median(ctrExec)), "container-exec-ms")
	b.ReportMetric(float64(median(vmExec))/float64(median(ctrExec)), "exec-vm/ctr")
}
