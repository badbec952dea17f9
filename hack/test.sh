#!/usr/bin/env bash
# Runs the whole test suite: unit tests and end-to-end tests that build and
# run the real msbd, msbctl and msb-agent against real runc, overlayfs and bbolt.
# Needs root (namespaces, mounts, cgroups).
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/setup.sh
export PATH=$PATH:/usr/local/go/bin
go vet ./...
exec go test -count=1 -timeout 20m "$@" ./...
