#!/usr/bin/env bash
# The walls at every size (issue 16): full backup, restore, tracked
# incremental, no-change incremental and verify of whole `strata` commands,
# each next to the wall it is measured against, measured in the same run on
# the same data, cold cache (caches dropped before every timed command).
#
#   sudo bench/walls.sh [SIZES...]        default: 256M 2G 8G 1T
#
# A size up to 64G is a dense image of that many bytes of generated VM-like
# data (`strata generate --fill 1.0`); 1T is a sparse 1 TiB disk holding 1%
# data. Each size: a full backup (median of 3), 1% of 64 KiB blocks
# rewritten through a tracker, a one-step tracked incremental, a no-change
# incremental, a restore of the chain of 2 (median of 3) compared with the
# image, and a verify of the repository. Walls: fio sequential read of the
# image (O_DIRECT, io_uring QD16, 1 MiB), fio sequential write + fsync of the
# same size (O_DIRECT), and `zstd -b1 -T2` (compress and decompress) on the
# image itself and on the changed bytes. Prints one markdown table.
#
# Needs root (drop_caches), fio and zstd, and about 3x the largest data size
# free under $WORK (default /var/tmp/strata-walls). STRATA (default
# build/release/tools/strata) is the binary measured.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=("$@"); [ ${#SIZES[@]} -gt 0 ] || SIZES=(256M 2G 8G 1T)
WORK=${WORK:-/var/tmp/strata-walls}
S=$(realpath "${STRATA:-build/release/tools/strata}")
[ -x "$S" ] || { echo "build first: cmake --build build/release --target strata" >&2; exit 1; }
for t in fio zstd python3; do command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 1; }; done
rm -rf "$WORK"; mkdir -p "$WORK"; cd "$WORK"
trap 'cd /; rm -rf "$WORK"' EXIT

now() { date +%s.%N; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
timed() {  # CMD... -> seconds on stdout; the command's stdout goes to last.json
  local t0 t1
  drop; t0=$(now); "$@" > last.json; t1=$(now)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}
sparse_cmp() {  # A B: same size and bytes, reading only where either has data
  # (cmp reads every hole of a 1 TiB sparse image: ~10 min on this machine).
  python3 - "$1" "$2" <<'PY'
import os, sys
fa, fb = (os.open(p, os.O_RDONLY) for p in sys.argv[1:3])
end = os.fstat(fa).st_size
if os.fstat(fb).st_size != end: sys.exit(1)
def runs(fd):
    off, out = 0, []
    while off < end:
        try: d = os.lseek(fd, off, os.SEEK_DATA)
        except OSError: break
        h = os.lseek(fd, d, os.SEEK_HOLE); out.append((d, h)); off = h
    return out
spans = sorted(runs(fa) + runs(fb))
merged = []
for d, h in spans:
    if merged and d <= merged[-1][1]: merged[-1][1] = max(merged[-1][1], h)
    else: merged.append([d, h])
for d, h in merged:
    off = d
    while off < h:
        n = min(h - off, 16 << 20)
        if os.pread(fa, n, off) != os.pread(fb, n, off): sys.exit(1)
        off += n
PY
}
phases() {  # WHAT WALL-SECONDS: the phases of last.json on stderr, and what the process spent outside them
  python3 - "$1" "$2" <<'PY' >&2
import json, sys
d = json.load(open("last.json"))
ph = d.get("phases", [])
inside = sum(p["seconds"] for p in ph)
print(f"# {sys.argv[1]}: " + ", ".join(f"{p['name']} {p['seconds'] * 1000:.1f} ms" for p in ph if p["seconds"] >= 0.0005) +
      f"; outside the phases (process start, opening, exit) {(float(sys.argv[2]) - inside) * 1000:.0f} ms")
PY
}
jget() { python3 -c "import json,sys; d=json.load(open('$1')); print(d$2)"; }
fio_gbps() {  # read|write FILE SIZE -> GB/s (O_DIRECT, io_uring QD16, 1 MiB; writes end with fsync)
  local col=7; [ "$1" = write ] && col=48
  drop
  fio --name=w --filename="$2" --rw="$1" --bs=1M --iodepth=16 --ioengine=io_uring --direct=1 \
    --size="$3" --end_fsync=1 --output-format=terse --terse-version=3 2>/dev/null |
    awk -F';' -v c=$col '{printf "%.3f", $c * 1024 / 1e9}'
}
zstd_gbps() {  # FILE -> "compress decompress" in GB/s, zstd -b1 -T2 in memory
  zstd -b1 -T2 -i2 "$1" 2>&1 | tr '\r' '\n' | grep -o '[0-9.]* MB/s' | tail -2 |
    awk '{v[NR] = $1 / 1000} END {printf "%.3f %.3f", v[1], v[2]}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f%%", (b > 0 ? 100 * a / b : 0) }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.3f", (s > 0 ? n / s / 1e9 : 0) }'; }
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b ? a : b) }'; }

echo "# $(nproc) cores, $(uname -r), $(stat -f -c %T .) at $WORK, load $(cut -d' ' -f1 /proc/loadavg), $(date -u +%FT%TZ)" >&2
rows=()
for size in "${SIZES[@]}"; do
  rm -rf ./*
  if [ "$size" = 1T ]; then
    "$S" generate --size 1T --fill 0.01 --seed 7 img.raw >&2
  else
    "$S" generate --size "$size" --fill 1.0 --seed 7 img.raw >&2
  fi
  vsize=$(stat -c %s img.raw)
  alloc=$(( $(stat -c %b img.raw) * 512 ))
  # Walls on this data.
  read_wall=$(fio_gbps read img.raw "$alloc")
  write_wall=$(fio_gbps write wtest.raw "$(( alloc < (4 << 30) ? alloc : (4 << 30) ))"); rm -f wtest.raw
  if [ "$size" = 1T ]; then  # zstd on the allocated data only
    python3 - img.raw > data.bin <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY); end = os.fstat(fd).st_size; off = 0
out = sys.stdout.buffer
while off < end:
    try: d = os.lseek(fd, off, os.SEEK_DATA)
    except OSError: break
    h = os.lseek(fd, d, os.SEEK_HOLE); off = d
    while off < h:
        b = os.pread(fd, min(h - off, 16 << 20), off); out.write(b); off += len(b)
    off = h
PY
    read -r zc zd <<<"$(zstd_gbps data.bin)"; rm -f data.bin
  else
    read -r zc zd <<<"$(zstd_gbps img.raw)"
  fi
  # Full backup: median of 3 from a cold cache; the tracker's checkpoint
  # comes with the last one.
  "$S" tracker init --tracker trk --size "$vsize" >/dev/null
  fulls=()
  for i in 1 2 3; do
    rm -rf repo; "$S" init repo >/dev/null
    fulls+=("$(timed "$S" backup --repo repo --full --tracker trk --json img.raw)")
  done
  full_s=$(printf '%s\n' "${fulls[@]}" | median)
  full_bytes=$(jget last.json "['read_bytes']")
  # 1% of the 64 KiB blocks of the data rewritten through the tracker.
  "$S" scribble --tracker trk --bytes $(( alloc / 100 / 65536 * 65536 )) --seed 11 --save changed.bin \
    --json img.raw > scribble.json
  changed=$(stat -c %s changed.bin)
  read -r ic id <<<"$(zstd_gbps changed.bin)"
  inc_s=$(timed "$S" backup --repo repo --tracker trk --json img.raw)
  phases "$size tracked incremental" "$inc_s"
  inc_read=$(jget last.json "['read_bytes']")
  none_s=$(timed "$S" backup --repo repo --tracker trk --json img.raw)
  # Restore of the chain (full, incremental, empty incremental): median of 3.
  rests=()
  for i in 1 2 3; do
    rm -f out.raw
    rests+=("$(timed "$S" restore --repo repo --json out.raw)")
  done
  rest_s=$(printf '%s\n' "${rests[@]}" | median)
  rest_data=$(jget last.json "['data_bytes']")
  phases "$size restore (the last of 3)" "$(printf '%s\n' "${rests[@]}" | tail -1)"
  sparse_cmp img.raw out.raw && same=identical || same=DIFFERENT
  rm -f out.raw
  ver_s=$(timed "$S" verify --repo repo --json)
  stored=$(du -sb repo/archives | cut -f1)
  logical=$("$S" list --repo repo --json | python3 -c "
import json, sys
d = json.load(sys.stdin)
d = d.get('backups', d) if isinstance(d, dict) else d
print(sum(e['logical_bytes'] for e in d))")
  # Rates: bytes each step processes over its time.
  full_r=$(rate "$full_bytes" "$full_s")
  inc_r=$(rate "$changed" "$inc_s")
  inc_fixed=$(awk -v t="$inc_s" -v n="$changed" -v z="$ic" 'BEGIN { printf "%.0f", 1000 * (t - n / (z * 1e9)) }')
  rest_r=$(rate "$rest_data" "$rest_s")
  ver_r=$(rate "$logical" "$ver_s")
  rows+=("| $size | full backup | ${full_s} s, $full_r GB/s | min(read $read_wall, zstd $zc) GB/s | $(ratio "$full_r" "$(min "$read_wall" "$zc")") |")
  rows+=("| $size | restore, chain of 3 ($same) | ${rest_s} s, $rest_r GB/s | min(write $write_wall, zstd -d $zd) GB/s | $(ratio "$rest_r" "$(min "$write_wall" "$zd")") |")
  rows+=("| $size | tracked incremental, $(( changed >> 20 )) MiB changed ($(( inc_read >> 20 )) MiB read) | ${inc_s} s, $inc_r GB/s | zstd $ic GB/s on the changed bytes | $(ratio "$inc_r" "$ic"), fixed cost ${inc_fixed} ms |")
  rows+=("| $size | no-change incremental | ${none_s} s | 0.030 s | |")
  rows+=("| $size | verify, $(( logical >> 20 )) MiB in 3 archives, $(( stored >> 20 )) MiB stored | ${ver_s} s, $ver_r GB/s | zstd -d $zd GB/s | $(ratio "$ver_r" "$zd") |")
  printf '%s\n' "${rows[@]: -5}" >&2
done
echo "| size | step | strata | wall | ratio |"
echo "| --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
