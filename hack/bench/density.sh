#!/usr/bin/env bash
# Density: N idle busybox `sleep` sandboxes applied at once, for each N of
# MSB_BENCH_DENSITY (default 100,1000), each on a fresh msbd: time to all
# Ready beside sequential bare `runc run -d` of the same rootfs (same run),
# PSS per sandbox, MemAvailable drop per sandbox, msbd RSS per sandbox, msbd's
# idle CPU over MSB_BENCH_IDLE (30s), `msbctl get sb -A` latency, delete
# --all --wait. See BenchmarkDensity in hack/e2e/density_bench_test.go.
set -euo pipefail
cd "$(dirname "$0")/../.."
source hack/setup.sh
export PATH=$PATH:/usr/local/go/bin
export MSB_BENCH_DENSITY=${MSB_BENCH_DENSITY:-100,1000}
go test -run '^$' -bench Density -benchtime 1x -timeout 60m ./hack/e2e/ "$@"
