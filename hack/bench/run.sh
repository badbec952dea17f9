#!/usr/bin/env bash
# Benchmarks, each beside its baseline measured in the same run:
#   - end to end: apply→Ready (with and without sandbox networking), apply→first
#     exec output and the exec round trip, beside bare `runc run` of the same rootfs;
#   - apply→Ready with a host id range and disk quota per sandbox, beside an msbd
#     whose sandboxes share one range without disk limit, and bare `runc run`;
#   - MCP: sandbox_exec of `true` through `msbctl mcp`, beside `msbctl exec`;
#   - msbctl cp of 200 MiB in and out, beside tar through `msbctl exec -i`;
#   - the egress proxy: added latency of an HTTP request and 100 MB download
#     throughput, beside the same request straight to the upstream;
#   - the DNS filter: queries/s for an allowed cached name, beside the upstream;
#   - microVMs (only where KVM, libkrun and libkrunfw are; skips saying why):
#     apply→Ready and the exec round trip, beside a container in the same run.
# Extra arguments go to the end-to-end `go test` (e.g. -bench ApplyToReady).
set -euo pipefail
cd "$(dirname "$0")/../.."
source hack/setup.sh
export PATH=$PATH:/usr/local/go/bin
go test -run '^$' -bench . -benchtime "${BENCHTIME:-20x}" ./hack/e2e/ "$@"
if [ $# -eq 0 ]; then
	go test -run '^$' -bench . ./netpolicy/proxy/ ./netpolicy/dnsfilter/
fi
