#!/usr/bin/env bash
# Reflink change-set benchmark: how long the FIEMAP diff between two reflink
# clones of a large raw image takes (formats/raw/reflink.h, through
# `extent-dump --reflink-diff`), on a loop-mounted file system this script
# makes, mounts and removes again.
#
#   bench/reflink_bench.sh [VIRTUAL_SIZE] [DATA_FRACTION] [CHANGE_FRACTION] [FS]
#   defaults: 64G 0.125 (8 GiB of data) 0.01 (1% of the 64 KiB blocks) xfs
#   FS: xfs (mkfs.xfs -m reflink=1) or btrfs
#
# Steps: `strata generate` writes the image on the loop file system; a full
# `strata backup --reflink` (repository A, which clones it: snap1) and a full
# backup that ends at a tracker checkpoint (repository B) are taken;
# `strata scribble --tracker` rewrites CHANGE_FRACTION of its 64 KiB blocks,
# marking them; the image is cloned again (snap2) and the diff snap1 -> snap2
# is timed 5 times with the page cache dropped before each (cold) and 5 times
# without (warm), its reported bytes compared with the bytes scribble wrote.
# Then, each with the page cache dropped first, the same change is backed up
# three ways in one run: `--scan` (A), `--reflink` (A) and `--tracker` (B);
# then a second change of the same size is backed up by `--tracker` and
# `--reflink`, in the other order (see the note at the backups). Needs root
# (loop mount) and about
# DATA_FRACTION*VIRTUAL_SIZE + 2 GiB free under $WORK (default
# /var/tmp/strata-reflink-bench); the script checks before it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-64G}; FILL=${2:-0.125}; CHANGE=${3:-0.01}; FS=${4:-xfs}
WORK=${WORK:-/var/tmp/strata-reflink-bench}
RUNS=5
[ "$(id -u)" -eq 0 ] || { echo "reflink_bench: needs root for the loop mount" >&2; exit 1; }
scripts/setup.sh

bytes() { numfmt --from=iec "$1"; }
need=$(awk -v s="$(bytes "$SIZE")" -v f="$FILL" 'BEGIN { printf "%.0f", s * f * 1.1 + 2 * 2^30 }')
mkdir -p "$WORK"
avail=$(df --output=avail -B1 "$WORK" | tail -1)
echo "# free under $WORK: $(numfmt --to=iec "$avail"), need about $(numfmt --to=iec "$need")" >&2
if [ "$avail" -lt "$need" ]; then
  echo "reflink_bench: not enough free space under $WORK" >&2
  exit 1
fi

cmake -S . -B build/bench-reflink -DCMAKE_BUILD_TYPE=Release -DSTRATA_TESTS=OFF \
  -DSTRATA_BENCH=OFF >/dev/null
cmake --build build/bench-reflink -j2 --target strata extent-dump >/dev/null
BIN=$PWD/build/bench-reflink/tools

FSIMG=$WORK/fs.img
MNT=$WORK/mnt
DEV=""
cleanup() {
  cd /
  if mountpoint -q "$MNT"; then umount "$MNT" || umount -l "$MNT"; fi
  if [ -n "$DEV" ]; then losetup -d "$DEV"; fi
  rm -f "$FSIMG"
}
trap cleanup EXIT
rm -f "$FSIMG"
# The file system is sized like the virtual disk plus room; it is sparse,
# only what is written takes space.
truncate -s "$(( $(bytes "$SIZE") + (16 << 30) ))" "$FSIMG"
case "$FS" in
  xfs) mkfs.xfs -q -m reflink=1 "$FSIMG" ;;
  btrfs) mkfs.btrfs -q "$FSIMG" ;;
  *) echo "reflink_bench: FS must be xfs or btrfs" >&2; exit 2 ;;
esac
DEV=$(losetup -f --show "$FSIMG")
mkdir -p "$MNT"
mount "$DEV" "$MNT"
cd "$MNT"

now() { date +%s.%N; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) * 1000 }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }

echo "# machine: $(nproc) cores, $(uname -r), loop $FS on $(stat -f -c %T "$WORK") at $WORK, load $(cut -d" " -f1-3 /proc/loadavg)" >&2
t0=$(now)
"$BIN/strata" generate --size "$SIZE" --fill "$FILL" --seed 7 img.raw >&2
sync
t1=$(now)
"$BIN/strata" init repoA >/dev/null
"$BIN/strata" init repoB >/dev/null
"$BIN/strata" tracker init --tracker trk --size "$(stat -c %s img.raw)" >/dev/null
full=$("$BIN/strata" backup --json --repo repoA --full --reflink img.raw)
"$BIN/strata" backup --repo repoB --full --tracker trk img.raw >/dev/null
jget() { python3 -c 'import json, sys; d = json.loads(sys.argv[1]); print(eval("d" + sys.argv[2]))' "$1" "$2"; }
snap1=$(jget "$full" '["end"]["name"]')
t2=$(now)
scribble=$("$BIN/strata" scribble --tracker trk --fraction "$CHANGE" --seed 9 --json img.raw)
sync
t3=$(now)
cp --reflink=always img.raw snap2
t4=$(now)
written=$(jget "$scribble" '["bytes"]')
echo "# generate $(ms "$t0" "$t1") ms, two full backups $(ms "$t1" "$t2") ms, scribble $(ms "$t2" "$t3") ms" \
  "($written bytes), clone $(ms "$t3" "$t4") ms" >&2

diff_once() {  # -> milliseconds; the JSON goes to diff.json
  local a b
  a=$(now)
  "$BIN/extent-dump" --reflink-diff "$snap1" snap2 --output json > "$WORK/diff.json"
  b=$(now)
  ms "$a" "$b"
}
cold=(); warm=()
for _ in $(seq $RUNS); do drop; cold+=("$(diff_once)"); done
for _ in $(seq $RUNS); do warm+=("$(diff_once)"); done
human=$("$BIN/extent-dump" --reflink-diff "$snap1" snap2)
reported=$(awk -F'"length": |}' '{ s += $2 } END { printf "%.0f", s }' "$WORK/diff.json")
runs=$(grep -c start "$WORK/diff.json" || true)
extents=$(grep -o 'extents [0-9]* -> [0-9]*' <<<"$human")
# The process alone (start, exit, nothing to compare): what the figures include.
a=$(now); "$BIN/extent-dump" --help >/dev/null; b=$(now); startup=$(ms "$a" "$b")
rm -f snap2
# The whole incremental, three ways, the same change, cold each time.
timed() {  # LABEL ARGS... -> "ms changed_bytes"
  local a b out
  drop
  a=$(now)
  out=$("$BIN/strata" backup --json "$@")
  b=$(now)
  # The phases of the command (backup --json), on stderr.
  python3 -c 'import json, sys
d = json.loads(sys.argv[1])
print("# " + sys.argv[2] + ": " + ", ".join("%s %.0f ms" % (p["name"], p["seconds"] * 1000) for p in d.get("phases", [])))' \
    "$out" "$*" >&2
  echo "$(ms "$a" "$b") $(jget "$out" '["changed_bytes"]')"
}
# Two backups of the same change read the same blocks one after the other;
# in some runs the first reader was slower, so there are two rounds of the
# same size of change, the reflink backup first in round 1 and second in
# round 2, and the ratio is also given over both.
read -r scan_ms scan_changed <<<"$(timed --repo repoA --scan img.raw)"
read -r refl_ms refl_changed <<<"$(timed --repo repoA --reflink img.raw)"
read -r trk_ms trk_changed <<<"$(timed --repo repoB --tracker trk img.raw)"
"$BIN/strata" scribble --tracker trk --fraction "$CHANGE" --seed 10 img.raw >/dev/null
sync
extents2=$(filefrag img.raw | grep -o '[0-9]* extents')
read -r trk2_ms trk2_changed <<<"$(timed --repo repoB --tracker trk img.raw)"
read -r refl2_ms refl2_changed <<<"$(timed --repo repoA --reflink img.raw)"

echo
echo "| what ($SIZE virtual, fill $FILL, $CHANGE of 64 KiB blocks rewritten, loop $FS) | figure |"
echo "|---|---|"
echo "| clone (\`cp --reflink=always\`) after the change | $(ms "$t3" "$t4") ms |"
echo "| \`extent-dump --reflink-diff\`, page cache dropped, median of $RUNS (all) | $(printf '%s\n' "${cold[@]}" | median) ms (${cold[*]}) |"
echo "| same, warm, median of $RUNS (all) | $(printf '%s\n' "${warm[@]}" | median) ms (${warm[*]}) |"
echo "| load average at the end | $(cut -d" " -f1-3 /proc/loadavg) |"
echo "| process start and exit alone (\`extent-dump --help\`) | $startup ms |"
echo "| FIEMAP extents old -> new | ${extents#extents } |"
echo "| bytes rewritten / reported (runs) | $written / $reported ($runs runs), $(awk -v r="$reported" -v w="$written" 'BEGIN { printf "%.3f", (w > 0 ? r / w : 0) }')x |"
echo "| round 1, whole incremental, cold: \`backup --scan\` (read everything) | $scan_ms ms |"
echo "| round 1 (reflink first): \`backup --reflink\` (clone, diff, read the clone) / \`--tracker\` (checkpoint, read) | $refl_ms / $trk_ms ms, $refl_changed / $trk_changed bytes changed |"
echo "| round 2 (tracker first, image at $extents2): \`--reflink\` / \`--tracker\` | $refl2_ms / $trk2_ms ms, $refl2_changed / $trk2_changed bytes changed |"
echo "| reflink / tracker: round 1, round 2, both | $(awk -v a="$refl_ms" -v b="$trk_ms" -v c="$refl2_ms" -v d="$trk2_ms" 'BEGIN { printf "%.2fx, %.2fx, %.2fx", a / b, c / d, (a + c) / (b + d) }') |"
rm -f "$WORK/diff.json"
