#!/usr/bin/env bash
# End-to-end benchmarks: apply→Ready, apply→first exec output and the exec
# round trip, each beside bare `runc run` of the same rootfs in the same run.
set -euo pipefail
cd "$(dirname "$0")/../.."
source hack/setup.sh
export PATH=$PATH:/usr/local/go/bin
go test -run '^$' -bench . -benchtime "${BENCHTIME:-20x}" ./hack/e2e/ "$@"
