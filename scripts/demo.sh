#!/usr/bin/env bash
# The main job on a built-in sample: installs what is missing, builds, then
# generates a sample disk, writes to it through the tracked-device helper,
# takes a full and two incremental backups, restores and verifies every
# point (strata demo), and checks strata's view of the image against QEMU's.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f s", b - a }'; }

t=$(now)
echo "== building (build/demo, Release)"
cmake -S . -B build/demo -DCMAKE_BUILD_TYPE=Release -DSTRATA_TESTS=OFF -DSTRATA_BENCH=OFF \
  > build-demo.log 2>&1 || { cat build-demo.log; exit 1; }
cmake --build build/demo -j"$(nproc)" >> build-demo.log 2>&1 || { tail -40 build-demo.log; exit 1; }
rm -f build-demo.log
echo "   built in $(elapsed "$t")"
bin=build/demo/tools

work=$(mktemp -d "${TMPDIR:-/tmp}/strata-demo-XXXXXX")
trap 'rm -rf "$work"' EXIT
img=$work/sample.raw

echo "== backup, restore and verify (strata demo --size ${DEMO_SIZE:-2G})"
"$bin/strata" demo --size "${DEMO_SIZE:-2G}" --dir "$work/demo"
rm -rf "$work/demo"

echo
echo "== generating a 4 GiB sample disk with 8% data"
"$bin/strata" generate --size 4G --fill 0.08 --seed 42 "$img"

echo "== allocation map (extent-dump, first lines)"
t=$(now)
"$bin/extent-dump" "$img" > "$work/map.txt"
dt=$(elapsed "$t")
head -8 "$work/map.txt"
echo "   ..."
tail -1 "$work/map.txt"
echo "   mapped in $dt"

echo "== checking against QEMU (qemu-img map --output=json)"
"$bin/extent-dump" --output json "$img" > "$work/ours.json"
qemu-img map -f raw --output=json "$img" > "$work/qemu.json"
if cmp -s "$work/ours.json" "$work/qemu.json"; then
  echo "   identical: $(wc -l < "$work/ours.json") map entries"
else
  echo "   MISMATCH between extent-dump and qemu-img map" >&2
  diff "$work/ours.json" "$work/qemu.json" | head >&2
  exit 1
fi
