#!/usr/bin/env bash
# Installs every Debian package strata needs to build, test and benchmark.
# Idempotent: does nothing (and touches no network) when all are present.
# Needs root for apt-get; prints what it installs.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git libmount-dev
  liburing-dev libxxhash-dev libroaring-dev libzstd-dev zlib1g-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev nlohmann-json3-dev libcli11-dev
  qemu-utils libnbd-bin zstd xxhash
  e2fsprogs xfsprogs btrfs-progs util-linux qemu-guest-agent
  qemu-system-x86 qemu-system-common libnbd-dev nbdkit
  libvirt-dev libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients virtnbdbackup
  nbdkit-plugin-dev libfuse3-dev fuse3 libblkid-dev fdisk fio python3-libnbd
  help2man man-db python3-jsonschema
)

# The live tests (label "live") run their own libvirtd, which needs the
# libvirt-qemu user and, without systemd, no cgroup controllers. Only a
# missing qemu.conf is written; an existing one is never changed.
libvirt_prep() {
  [ "$(id -u)" -eq 0 ] || return 0
  getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
  getent passwd libvirt-qemu >/dev/null || useradd -r -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
  mkdir -p /var/log/libvirt/qemu /etc/libvirt
  [ -e /etc/libvirt/qemu.conf ] || echo 'cgroup_controllers = [ ]' > /etc/libvirt/qemu.conf
}
trap libvirt_prep EXIT

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
