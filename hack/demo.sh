#!/usr/bin/env bash
# The msb demo, offline, on a fresh Debian 12 machine (as root):
#   installs runc and busybox-static if missing, builds msbd, msbctl and the
#   static msb-agent into ./bin, builds a busybox image as an OCI layout
#   (no registry, no network), starts msbd, applies manifests/examples/, waits
#   for Ready, runs commands in the sandbox, then cleans everything up.
# Pass --keep to leave msbd and the sandbox running (clean up later with:
#   bin/msbctl delete -f manifests/examples/ --wait; kill $(cat _out/demo/msbd.pid)).
#
# It writes only inside the repository (bin/, _out/demo/) and msbd's state
# directory, and removes _out/demo/ again. Environment it reads:
#   MSB_STATE_DIR  state directory of the msbd it starts (default /var/lib/msb)
#   MSB_SOCKET     msbd's API socket (default /run/msb/msbd.sock). When an msbd
#                  already answers there, the demo uses it (its objects are
#                  deleted at the end) and starts none: two msbd in one network
#                  namespace would fight over its nftables table and ports.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/setup.sh
export PATH=$PATH:/usr/local/go/bin
keep=false
[ "${1:-}" = "--keep" ] && keep=true

OUT=$PWD/_out/demo
STATE=${MSB_STATE_DIR:-/var/lib/msb}
export MSB_SOCKET=${MSB_SOCKET:-/run/msb/msbd.sock}
IMAGE=$OUT/busybox
mkdir -p bin "$OUT"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

# The examples name the image at /var/lib/msb-images/busybox; the demo keeps
# its copy in $OUT and points the manifests there.
examples() {
	for f in manifests/examples/*.yaml; do
		sed "s#oci:/var/lib/msb-images/busybox#oci:$IMAGE#" "$f"
		echo ---
	done
}

step "building msbd, msbctl and the static msb-agent into ./bin"
go build -o bin/ ./cmd/msbd
CGO_ENABLED=0 go build -o bin/ ./cmd/msbctl
CGO_ENABLED=0 go build -ldflags="-s -w" -o bin/ ./cmd/msb-agent

step "building the demo image offline (busybox-static) at $IMAGE"
go run ./hack/mkimage -o "$IMAGE" -tag latest

started=false
if ! bin/msbctl version >/dev/null 2>&1; then
	step "starting msbd (state in $STATE, API on $MSB_SOCKET, log in $OUT/msbd.log)"
	bin/msbd --state-dir "$STATE" --socket "$MSB_SOCKET" >"$OUT/msbd.log" 2>&1 &
	echo $! >"$OUT/msbd.pid"
	started=true
	for _ in $(seq 100); do bin/msbctl version >/dev/null 2>&1 && break; sleep 0.1; done
fi
cleanup() {
	if ! $keep; then
		step "cleaning up"
		bin/msbctl delete -f manifests/examples/ --wait --timeout=60s || true
		if $started; then
			kill "$(cat "$OUT/msbd.pid")" && wait "$(cat "$OUT/msbd.pid")" 2>/dev/null || true
			# What msbd leaves for sandboxes that outlive it: its nftables
			# table and the mount holding their network namespaces.
			nft delete table inet msb 2>/dev/null || true
			umount "$STATE/netns" 2>/dev/null || true
		fi
		# What the demo made in the repository besides bin/; msbd's state
		# directory is msbd's and stays.
		rm -rf "$OUT"
		rmdir _out 2>/dev/null || true
	fi
}
trap cleanup EXIT
bin/msbctl version

step "msbctl apply -f manifests/examples/   (image path pointed at $IMAGE)"
examples | bin/msbctl apply -f -

step "msbctl wait sandbox/demo --for=condition=Ready"
bin/msbctl wait sandbox/demo --for=condition=Ready --timeout=60s

step "msbctl get sandboxes -o wide"
bin/msbctl get sandboxes -o wide

step "msbctl exec demo -- ...   (the secret is only a placeholder inside)"
bin/msbctl exec demo -- sh -c 'echo "uname: $(uname -n), uid $(id -u), MODE=$MODE"; echo "API_KEY=$API_KEY"; for i in $(seq 50); do wget -qO- http://127.0.0.1:8000/ 2>/dev/null && break; sleep 0.1; done'

step "msbctl logs demo"
bin/msbctl logs demo

step "msbctl describe sandbox demo"
bin/msbctl describe sandbox demo

step "msbctl get secret demo-api -o yaml   (values are never printed)"
bin/msbctl get secret demo-api -o yaml

if $keep; then
	echo
	echo "msbd and the demo sandbox are still running. Clean up with:"
	echo "  bin/msbctl delete -f manifests/examples/ --wait && kill \$(cat _out/demo/msbd.pid)"
fi
