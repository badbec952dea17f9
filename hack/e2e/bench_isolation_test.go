package e2e

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkApplyToReadyIsolation: apply→Ready of a sandbox with its own
// host id range (idmapped layers, a user namespace msbd makes for it) and a
// 10Gi disk quota (sparse ext4 on a loop device), beside an msbd whose
// sandboxes share one range and have no disk limit (--uid-size 65536
// --default-disk 0: the shape before per-sandbox ranges), and bare
// `runc run` of the same rootfs, interleaved in one run.
func BenchmarkApplyToReadyIsolation(b *testing.B) {
	own := startDaemon(b, "--log-level", "warn")
	shared := startDaemon(b, "--log-level", "warn", "--uid-size", "65536", "--default-disk", "0")
	for _, d := range []*daemon{own, shared} {
		d.apply(sandboxYAML("warm", "", "sleep", "1000"))
		d.must("wait", "sandbox/warm", "--for=condition=Ready", "--timeout=60s")
	}
	baseRun := runcBaseline(b, layerDir(b, own))
	var base, withIso, without, del, delShared []time.Duration
	for i := 0; i < b.N; i++ {
		base = append(base, baseRun(i))
		name := fmt.Sprintf("i%d", i)
		withIso = append(withIso, applyToReady(b, own, name))
		without = append(without, applyToReady(b, shared, name))
		t0 := time.Now()
		own.must("delete", "sandbox", name, "--wait", "--timeout=60s")
		del = append(del, time.Since(t0))
		t0 = time.Now()
		shared.must("delete", "sandbox", name, "--wait", "--timeout=60s")
		delShared = append(delShared, time.Since(t0))
	}
	b.ReportMetric(ms(median(base)), "runc-run-ms")
	b.ReportMetric(ms(median(withIso)), "ready-own-range+disk-ms")
	b.ReportMetric(ms(median(without)), "ready-shared-nodisk-ms")
	b.ReportMetric(float64(median(withIso))/float64(median(base)), "own+disk/runc")
	b.ReportMetric(float64(median(without))/float64(median(base)), "shared/runc")
	b.ReportMetric(float64(median(withIso))/float64(median(without)), "own+disk/shared")
	b.ReportMetric(ms(median(del)), "delete-own+disk-ms")
	b.ReportMetric(ms(median(delShared)), "delete-shared-ms")
}
