#!/usr/bin/env bash
# End-to-end backup benchmark: strata against the walls (disk read bandwidth
# by fio, zstd's own speed) and against the tools users would otherwise run
# (borg, restic, zstd -T2, qemu-img convert -c), on one large sparse image
# after the same change. Prints a markdown table for docs/benchmarks.md.
#
#   bench/backup_compare.sh [VIRTUAL_SIZE] [DATA_FRACTION] [CHANGE_FRACTION]
#   defaults: 64G 0.125 (8 GiB of data) 0.01 (1% of the 64 KiB blocks)
#
# Needs root for apt (fio, borgbackup, restic are installed if missing) and
# about 3x the data size free under $WORK (default /var/tmp/strata-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-64G}; FILL=${2:-0.125}; CHANGE=${3:-0.01}
WORK=${WORK:-/var/tmp/strata-bench}
for p in fio borgbackup restic python3; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >&2
done
scripts/setup.sh
cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DSTRATA_TESTS=OFF -DSTRATA_BENCH=ON >/dev/null
cmake --build build/bench -j"$(nproc)" >/dev/null
S=$PWD/build/bench/tools/strata
rm -rf "$WORK"; mkdir -p "$WORK"; cd "$WORK"

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f%%", (b > 0 ? 100 * a / b : 0) }'; }
gbps() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.2f", (s > 0 ? n / s / 1e9 : 0) }'; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }

echo "# machine: $(nproc) cores, $(uname -r), $(stat -f -c %T .) at $WORK" >&2
"$S" generate --size "$SIZE" --fill "$FILL" --seed 7 img.raw >&2
alloc=$("$(dirname "$S")/extent-dump" --json img.raw |
  awk -F'"length": |, "depth"' '/"data": true/ {s += $2} END {print s}')
echo "allocated bytes: $alloc" >&2

# The walls, measured in this run: fio on a dense 2 GiB file (the disk) and
# on the sparse image itself (what a whole-image read costs: holes are free).
fio_read() {  # FILE -> GB/s
  fio --name=seqread --filename="$1" --rw=read --bs=1M --iodepth=16 --ioengine=io_uring \
    --direct=1 --output-format=terse --terse-version=3 2>/dev/null |
    awk -F';' '{printf "%.2f", $7 * 1024 / 1e9}'   # KiB/s -> GB/s
}
fio_write() {  # DIRECT(0|1) -> GB/s: 2 GiB sequential 1 MiB writes ending in fsync
  rm -f wtest.raw
  fio --name=seqwrite --filename=wtest.raw --rw=write --bs=1M --size=2G --end_fsync=1 \
    --iodepth=16 --ioengine=io_uring --direct="$1" --output-format=terse --terse-version=3 \
    2>/dev/null | awk -F';' '{printf "%.2f", $48 * 1024 / 1e9}'
  rm -f wtest.raw
}
"$S" generate --size 2G --fill 1.0 --seed 3 dense.raw >/dev/null
disk_bw=$(fio_read dense.raw)
# What a restore can write: through the page cache, and with O_DIRECT as
# strata does; the faster of the two is the write wall.
write_buf=$(fio_write 0)
write_dir=$(fio_write 1)
write_bw=$(awk -v a="$write_buf" -v b="$write_dir" 'BEGIN{print (a > b ? a : b)}')
img_bw=$(fio_read img.raw)
rm -f dense.raw

# zstd's own speed at level 1 on 2 threads, in memory, on the image's data
# itself (its first 4 GiB of allocated bytes): the compressor wall of the full
# backup and the decompression wall of the restore.
"$(dirname "$S")/extent-dump" --json img.raw > map.json
python3 - img.raw map.json > data.bin <<'PY'
import json, sys
src, left = open(sys.argv[1], 'rb'), 4 << 30
for e in json.load(open(sys.argv[2])):
    if not e['data'] or left <= 0: continue
    src.seek(e['start']); n = min(e['length'], left); left -= n
    while n:
        b = src.read(min(n, 16 << 20)); sys.stdout.buffer.write(b); n -= len(b)
PY
zstd_speed() {  # FILE -> "compress decompress" in GB/s
  zstd -b1 -T2 -i3 "$1" 2>&1 | tr '\r' '\n' | grep -o '[0-9.]* MB/s' | tail -2 |
    awk '{v[NR] = $1 / 1000} END {printf "%.2f %.2f", v[1], v[2]}'
}
read -r zfull_c zfull_d <<<"$(zstd_speed data.bin)"
rm -f data.bin

# The 1% change: random 64 KiB blocks rewritten, recorded by a tracker.
"$S" tracker init --tracker trk --size "$(stat -c %s img.raw)" >/dev/null
"$S" checkpoint --tracker trk base >/dev/null
"$S" init repo >/dev/null
median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
# The full backup three times from a cold cache (median); the last is kept.
for i in 1 2 3; do
  [ "$i" = 1 ] || { rm -rf repo; "$S" init repo >/dev/null; }
  drop
  t0=$(now); "$S" backup --repo repo --full --json img.raw > full.json; t1=$(now)
  secs "$t0" "$t1"; echo
done > full_times.txt
full_s=$(median < full_times.txt)
"$S" scribble --tracker trk --fraction "$CHANGE" --seed 11 --save changed.bin --json img.raw > scribble.json
changed=$(grep -o '"bytes": [0-9]*' scribble.json | grep -o '[0-9]*$')
drop
t0=$(now); "$S" backup --repo repo --tracker trk --since base --json img.raw > inc.json; t1=$(now)
inc_s=$(secs "$t0" "$t1")
drop
t0=$(now); "$S" backup --repo repo --scan --json img.raw > scan.json; t1=$(now)
scan_s=$(secs "$t0" "$t1")
for i in 1 2 3; do  # three cold restores, median
  rm -f out.raw; drop
  t0=$(now); "$S" restore --repo repo --json out.raw > restore.json; t1=$(now)
  secs "$t0" "$t1"; echo
done > restore_times.txt
restore_s=$(median < restore_times.txt)
cmp img.raw out.raw && restore_ok=identical || restore_ok=DIFFERENT
rm -f out.raw

# zstd on the changed bytes only (what the incremental compresses).
read -r zstd_c zstd_d <<<"$(zstd_speed changed.bin)"

# The tools users would otherwise run, after the same change (image re-read).
export BORG_PASSPHRASE="" BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes RESTIC_PASSWORD=bench
borg init -e none borg >/dev/null 2>&1
restic init -r restic >/dev/null 2>&1
borg create --compression zstd,1 borg::a img.raw >/dev/null 2>&1
restic -r restic backup --quiet img.raw >/dev/null 2>&1
"$S" scribble --fraction "$CHANGE" --seed 12 img.raw > /dev/null
drop; t0=$(now); borg create --compression zstd,1 borg::b img.raw >/dev/null 2>&1; t1=$(now); borg_s=$(secs "$t0" "$t1")
drop; t0=$(now); restic -r restic backup --quiet img.raw >/dev/null 2>&1; t1=$(now); restic_s=$(secs "$t0" "$t1")
drop; t0=$(now); qemu-img convert -c -O qcow2 -o compression_type=zstd img.raw conv.qcow2; t1=$(now); qemu_s=$(secs "$t0" "$t1")
rm -f conv.qcow2

inc_read=$(grep -o '"read_bytes": [0-9]*' inc.json | grep -o '[0-9]*$')
full_read=$(grep -o '"changed_bytes": [0-9]*' full.json | grep -o '[0-9]*$')  # what zstd compresses too
cat <<TABLE
| step ($SIZE virtual, $(awk -v a="$alloc" 'BEGIN{printf "%.1f", a/2^30}') GiB data, $CHANGE of blocks changed = $(awk -v a="$changed" 'BEGIN{printf "%.0f", a/2^20}') MiB) | time | throughput | reference |
|---|---|---|---|
| fio sequential read of a dense file, O_DIRECT, io_uring QD16, 1 MiB | | $disk_bw GB/s | the disk wall |
| fio sequential read of the sparse image itself (same settings) | | $img_bw GB/s | whole-image read |
| fio sequential write + fsync, 1 MiB QD16: buffered / O_DIRECT | | $write_buf / $write_dir GB/s | the restore write wall: $write_bw |
| zstd -b1 -T2 on the image's data (in memory) | | $zfull_c GB/s compress, $zfull_d GB/s decompress | the compressor wall |
| zstd -b1 -T2 on the changed bytes (in memory) | | $zstd_c GB/s compress, $zstd_d GB/s decompress | |
| strata backup --full (median of 3, cold) | ${full_s} s | $(gbps "$full_read" "$full_s") GB/s | $(pct "$(gbps "$full_read" "$full_s")" "$(awk -v a="$disk_bw" -v b="$zfull_c" 'BEGIN{print (a < b ? a : b)}')") of the slower of disk and zstd |
| strata backup --tracker (incremental) | ${inc_s} s | $(gbps "$inc_read" "$inc_s") GB/s | |
| strata backup --scan (no tracking) | ${scan_s} s | $(gbps "$(stat -c %s img.raw)" "$scan_s") GB/s of disk | $(pct "$(gbps "$(stat -c %s img.raw)" "$scan_s")" "$disk_bw") of the disk wall |
| strata restore, chain of 3 (median of 3, cold) | ${restore_s} s | $(gbps "$alloc" "$restore_s") GB/s of data | $(pct "$(gbps "$alloc" "$restore_s")" "$(awk -v a="$write_bw" -v b="$zfull_d" 'BEGIN{print (a < b ? a : b)}')") of the slower of write and zstd -d; $restore_ok |
| borg create (incremental, zstd 1) | ${borg_s} s | | |
| restic backup (incremental) | ${restic_s} s | | |
| qemu-img convert -c (zstd) | ${qemu_s} s | | |
TABLE
