package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkMCPExecTrue: sandbox_exec of `true` through one `msbctl mcp`
// session over stdio (how agent apps use it: the process stays), beside
// `msbctl exec NAME -- true` (a process per command), interleaved.
func BenchmarkMCPExecTrue(b *testing.B) {
	d := startDaemon(b, "--log-level", "warn")
	d.apply(mcpLabelled(sandboxYAML("mx", "", "sleep", "1000")))
	d.must("wait", "sandbox/mx", "--for=condition=Ready", "--timeout=60s")
	cs := mcpSession(b, d)
	args := map[string]any{"name": "mx", "command": []string{"true"}}
	call(b, cs, "sandbox_exec", args, nil) // warm the agent connection
	var viaMCP, viaCLI []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if txt, isErr := call(b, cs, "sandbox_exec", args, nil); isErr {
			b.Fatal(txt)
		}
		viaMCP = append(viaMCP, time.Since(t0))
		t0 = time.Now()
		d.must("exec", "mx", "--", "true")
		viaCLI = append(viaCLI, time.Since(t0))
	}
	b.StopTimer()
	b.ReportMetric(ms(median(viaMCP)), "mcp-exec-median-ms")
	b.ReportMetric(ms(median(viaCLI)), "msbctl-exec-median-ms")
	b.ReportMetric(float64(median(viaMCP))/float64(median(viaCLI)), "mcp/msbctl")
}

// BenchmarkCopy200MiB: `msbctl cp` of a 200 MiB file into and out of a
// sandbox, beside the same file through `tar | msbctl exec -i -- tar -x`
// (and `msbctl exec -- tar -c | tar -x` out), interleaved. Each round moves
// 800 MiB, so at most 5 rounds run whatever -benchtime says.
func BenchmarkCopy200MiB(b *testing.B) {
	d := startDaemon(b, "--log-level", "warn")
	d.apply(sandboxYAML("cx", "", "sleep", "1000"))
	d.must("wait", "sandbox/cx", "--for=condition=Ready", "--timeout=60s")
	dir := b.TempDir()
	src := filepath.Join(dir, "src")
	os.Mkdir(src, 0o755)
	f, err := os.Create(filepath.Join(src, "big"))
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := range 200 {
		for j := range chunk {
			chunk[j] = byte(i*131 + j*7)
		}
		f.Write(chunk)
	}
	f.Close()
	const size = 200 << 20
	sh := func(script string) time.Duration {
		b.Helper()
		cmd := exec.Command("bash", "-o", "pipefail", "-c", script)
		cmd.Env = append(os.Environ(), "MSB_SOCKET="+d.socket, "MSBCTL="+filepath.Join(binDir, "msbctl"))
		t0 := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%s: %v\n%s", script, err, out)
		}
		return time.Since(t0)
	}
	var cpIn, tarIn, cpOut, tarOut []time.Duration
	rounds := min(b.N, 5)
	b.ResetTimer()
	for i := 0; i < rounds; i++ {
		d.must("exec", "cx", "--", "sh", "-c", "rm -rf /work && mkdir -p /work/cp /work/tar")
		out := filepath.Join(dir, fmt.Sprint("out", i))
		os.MkdirAll(filepath.Join(out, "cp"), 0o755)
		os.MkdirAll(filepath.Join(out, "tar"), 0o755)
		cpIn = append(cpIn, sh(`"$MSBCTL" cp `+src+`/big cx:/work/cp/big`))
		tarIn = append(tarIn, sh(`tar -C `+src+` -cf - big | "$MSBCTL" exec -i cx -- tar -xf - -C /work/tar`))
		cpOut = append(cpOut, sh(`"$MSBCTL" cp cx:/work/cp/big `+out+`/cp/big`))
		tarOut = append(tarOut, sh(`"$MSBCTL" exec cx -- tar -cf - -C /work/tar big | tar -xf - -C `+out+`/tar`))
		os.RemoveAll(out)
	}
	b.StopTimer()
	mbps := func(d time.Duration) float64 { return float64(size) / (1 << 20) / d.Seconds() }
	b.ReportMetric(mbps(median(cpIn)), "cp-in-MiB/s")
	b.ReportMetric(mbps(median(tarIn)), "tar-exec-in-MiB/s")
	b.ReportMetric(mbps(median(cpOut)), "cp-out-MiB/s")
	b.ReportMetric(mbps(median(tarOut)), "tar-exec-out-MiB/s")
	b.ReportMetric(float64(median(tarIn))/float64(median(cpIn)), "cp/tar-in")
	b.ReportMetric(float64(median(tarOut))/float64(median(cpOut)), "cp/tar-out")
}
