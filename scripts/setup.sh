#!/usr/bin/env bash
# Installs every Debian package strata needs to build, test and benchmark.
# Idempotent: does nothing (and touches no network) when all are present.
# Needs root for apt-get; prints what it installs.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git libmount-dev
  liburing-dev libxxhash-dev libroaring-dev libzstd-dev zlib1g-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev nlohmann-json3-dev
  qemu-utils libnbd-bin zstd xxhash
  e2fsprogs xfsprogs btrfs-progs util-linux qemu-guest-agent
  nbdkit nbdkit-plugin-dev libfuse3-dev fuse3 libblkid-dev qemu-system-x86 fdisk fio python3-libnbd
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "setup: installing ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
  echo "setup: these packages are missing and installing them needs root: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
echo "setup: done" >&2
