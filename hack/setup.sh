#!/usr/bin/env bash
# Installs what msb needs on a Debian 12 host: runc (the container driver),
# busybox-static (the offline demo and test images), nftables and iproute2
# (network policy). Idempotent: does nothing when everything is present.
set -euo pipefail
need=()
command -v runc >/dev/null || need+=(runc)
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || need+=(busybox-static)
command -v nft >/dev/null || need+=(nftables)
command -v ip >/dev/null || need+=(iproute2)
command -v gcc >/dev/null || need+=(gcc)
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "setup: need root to install: ${need[*]}" >&2
		exit 1
	fi
	echo "setup: installing ${need[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	# Another apt run (unattended-upgrades on a fresh machine) may hold the
	# lock: wait for it instead of failing.
	apt-get -o DPkg::Lock::Timeout=300 update -qq
	apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v go >/dev/null; then
	if [ -x /usr/local/go/bin/go ]; then
		export PATH=$PATH:/usr/local/go/bin
	else
		echo "setup: Go 1.26+ is required (https://go.dev/dl); not found in PATH" >&2
		exit 1
	fi
fi
