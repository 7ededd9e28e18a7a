#!/usr/bin/env bash
# Writes the qcow2 seed corpus (images made by qemu-img/qemu-io, never
# checked in) into DIR: one small image per feature the reader handles.
# Used by the fuzz target (fuzz/README.md) and by the replay test.
set -euo pipefail
dir=${1:?usage: make_corpus.sh DIR}
mkdir -p "$dir"
cd "$dir"
q() { qemu-io -f qcow2 "$@" >/dev/null; }
qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 1M
q -c 'write -P 1 0 64k' -c 'write -P 2 512k 4k' v2.qcow2
qemu-img create -q -f qcow2 v3.qcow2 2M
q -c 'write -P 1 0 64k' -c 'write -z 64k 64k' -c 'write -z -u 256k 64k' -c 'write -P 3 1M 1k' v3.qcow2
qemu-img create -q -f qcow2 -o cluster_size=512 c512.qcow2 256k
q -c 'write -P 1 0 4k' -c 'write -z 8k 1k' -c 'write -P 2 100k 512' c512.qcow2
qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=16k xl2.qcow2 1M
q -c 'write -P 1 1k 1k' -c 'write -z 16k 2k' -c 'write -P 2 64k 16k' xl2.qcow2
qemu-img create -q -f raw src.raw 1M
qemu-io -f raw -c 'write -P 0x61 0 512k' -c 'write -P 0x62 600k 64k' src.raw >/dev/null
qemu-img convert -c -O qcow2 -o cluster_size=4096 src.raw zlib.qcow2
qemu-img convert -c -O qcow2 -o compression_type=zstd,cluster_size=4096 src.raw zstd.qcow2
rm -f src.raw
qemu-img create -q -f qcow2 snap.qcow2 1M
q -c 'write -P 1 0 128k' snap.qcow2
qemu-img snapshot -c one snap.qcow2
q -c 'write -P 2 64k 64k' snap.qcow2
qemu-img snapshot -c two snap.qcow2
qemu-img create -q -f qcow2 bitmaps.qcow2 1M
qemu-img bitmap --add -g 4096 bitmaps.qcow2 fine
qemu-img bitmap --add bitmaps.qcow2 coarse
q -c 'write 4k 8k' -c 'write 700k 64k' bitmaps.qcow2
qemu-img bitmap --disable bitmaps.qcow2 coarse
cp bitmaps.qcow2 inuse.qcow2
(qemu-io -f qcow2 -c 'write 0 4k' -c 'sigraise 9' inuse.qcow2) >/dev/null 2>&1 || true
