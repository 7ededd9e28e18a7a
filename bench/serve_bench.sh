#!/usr/bin/env bash
# strata serve benchmarks (docs/benchmarks.md, issue 15). Prints a markdown
# table. Everything compared is measured in the same run (the machine is
# shared and noisy): medians of RUNS runs with min-max.
#
#   bench/serve_bench.sh [VIRTUAL_SIZE] [DATA_FRACTION]
#   defaults: 64G 0.125 (8 GiB of data), RUNS=3, FIO_SECS=15
#
# 1. time from starting `strata serve` to the first byte read by a libnbd
#    client (python3-libnbd), at an offset holding data;
# 2. sequential read of the whole point: nbdcopy to a file and to null:
#    against `strata restore` to a file, page cache dropped before each;
# 3. random 4 KiB reads with fio's nbd engine, p50/p99 completion latency at
#    queue depth 1 and 32, with the frame cache (256 MiB) and without, over
#    a second point holding 4 GiB of the image's data end to end (on the
#    64 GiB point 7 reads in 8 would hit holes), uniformly over all of it and
#    over a 128 MiB hot region that fits the cache; and the same data backed
#    up in 64 KiB frames (--chunk-size 64K).
#
# Needs root (drop_caches), nbdkit, libnbd-bin, fio, Debian's python3 with
# python3-libnbd
# (scripts/setup.sh), and about 2.5x the data size free under $WORK
# (default /var/tmp/strata-serve-bench; the repositories are kept there and
# reused by the next run unless FRESH=1).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-64G}; FILL=${2:-0.125}
RUNS=${RUNS:-3}; FIO_SECS=${FIO_SECS:-15}
WORK=${WORK:-/var/tmp/strata-serve-bench}
BUILD=${BUILD:-build/release}
scripts/setup.sh
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTRATA_BENCH=OFF >/dev/null
nice cmake --build "$BUILD" -j2 --target strata extent-dump >/dev/null
S=$PWD/$BUILD/tools/strata
[ "${FRESH:-0}" = 1 ] && rm -rf "$WORK"
mkdir -p "$WORK"; cd "$WORK"

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
median() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
range() { sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {print lo "-" hi}'; }
stop() {  # PIDFILE: stops that process by its pid
  [ -f "$1" ] || return 0
  local pid; pid=$(cat "$1")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  rm -f "$1"
}
serve() {  # REPO CACHE SOCKET PIDFILE -> prints the URI
  rm -f "$3"
  "$S" serve --daemon --pid-file "$4" --repo "$1" --cache "$2" --socket "$3"
}
trap 'stop "$WORK/srv.pid"; stop "$WORK/dense.pid"' EXIT

echo "# machine: $(nproc) cores, $(uname -r), $(stat -f -c %T .) at $WORK, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
if [ ! -f repo/catalog ] || [ ! -f dense/catalog ] || [ ! -f dense64k/catalog ]; then
  rm -rf repo dense dense64k img.raw dense.raw
  "$S" generate --size "$SIZE" --fill "$FILL" --seed 7 img.raw >&2
  "$S" init repo >/dev/null
  "$S" backup --repo repo --full img.raw >&2
  "$(dirname "$S")/extent-dump" --json img.raw > map.json
  # The random-read point: 4 GiB of the image's data laid end to end, so
  # every read hits data (the image itself is 7/8 holes).
  /usr/bin/python3 - img.raw map.json dense.raw <<'PY'
import json, sys
src, out, left = open(sys.argv[1], 'rb'), open(sys.argv[3], 'wb'), 4 << 30
for e in json.load(open(sys.argv[2])):
    if not e['data'] or left <= 0: continue
    src.seek(e['start']); n = min(e['length'], left); left -= n
    while n:
        b = src.read(min(n, 16 << 20)); out.write(b); n -= len(b)
PY
  for r in dense dense64k; do "$S" init "$r" >/dev/null; done
  "$S" backup --repo dense --full dense.raw >&2
  # The same bytes in 64 KiB frames (--chunk-size 64K at backup time): what
  # a point meant for random access costs.
  "$S" backup --repo dense64k --full --chunk-size 64K dense.raw >&2
  rm -f img.raw dense.raw  # the backups are what is served; keep the disk space
fi
data=$(awk -F'"length": |, "depth"' '/"data": true/ {s += $2} END {print s}' map.json)
first_data=$(awk -F'"start": |, "length"' '/"data": true/ {print $2; exit}' map.json)
echo "point: $SIZE virtual, $data bytes of data, first data at $first_data" >&2

# ---- 1. time to first byte ----
for _ in $(seq "$RUNS"); do
  rm -f ttfb.sock
  /usr/bin/python3 - "$S" "$WORK/repo" "$WORK/ttfb.sock" "$first_data" <<'PY'
import subprocess, sys, time, nbd
strata, repo, sock, off = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
h = nbd.NBD()
t0 = time.monotonic()
p = subprocess.Popen([strata, "serve", "--repo", repo, "--socket", sock], stdout=subprocess.PIPE)
uri = p.stdout.readline().decode().strip()   # printed once nbdkit listens
h.connect_uri(uri)
buf = h.pread(4096, off)
t1 = time.monotonic()
assert any(buf), "the first data block read as zeros"
h.shutdown()
p.terminate(); p.wait()
print("%.1f" % ((t1 - t0) * 1000))
PY
done > ttfb.txt

# ---- 2. sequential read of the whole point ----
uri=$(serve repo 256M "$WORK/srv.sock" "$WORK/srv.pid")
: > restore.txt; : > copy_file.txt; : > copy_null.txt
for _ in $(seq "$RUNS"); do
  rm -f out.raw; drop
  t0=$(now); "$S" restore --repo repo out.raw >/dev/null; t1=$(now); secs "$t0" "$t1" >> restore.txt; echo >> restore.txt
  rm -f out.raw; drop
  t0=$(now); nbdcopy "$uri" out.raw; t1=$(now); secs "$t0" "$t1" >> copy_file.txt; echo >> copy_file.txt
  rm -f out.raw; drop
  t0=$(now); nbdcopy "$uri" null:; t1=$(now); secs "$t0" "$t1" >> copy_null.txt; echo >> copy_null.txt
done
rm -f out.raw
stop "$WORK/srv.pid"

# ---- 3. random 4 KiB reads ----
fio_run() {  # URI IODEPTH SIZE -> "p50_us p99_us kiops" (the nbd engine prints a line before the JSON)
  fio --name=rand --ioengine=nbd --uri="$1" --rw=randread --bs=4k --iodepth="$2" --size="$3" \
    --time_based --runtime="$FIO_SECS" --ramp_time=2 --norandommap --randrepeat=0 \
    --output-format=json 2>/dev/null |
    /usr/bin/python3 -c 'import json,sys; t=sys.stdin.read(); r=json.loads(t[t.index("{"):])["jobs"][0]["read"]; p=r["clat_ns"]["percentile"]
print("%.0f %.0f %.1f" % (p["50.000000"]/1e3, p["99.000000"]/1e3, r["iops"]/1e3))'
}
: > random.txt
for repo in dense dense64k; do
  for cache in 256M 0; do
    u=$(serve "$repo" "$cache" "$WORK/dense.sock" "$WORK/dense.pid")
    for region in 4G 128M; do
      [ "$repo" = dense64k ] && [ "$region" = 128M ] && continue
      for qd in 1 32; do
        echo "$repo $cache $region $qd $(fio_run "$u" "$qd" "$region")" >> random.txt
      done
    done
    stop "$WORK/dense.pid"
  done
done

# ---- the table ----
gbs() { awk -v n="$data" -v s="$1" 'BEGIN { printf "%.2f", n / s / 1e9 }'; }
r_s=$(median < restore.txt); f_s=$(median < copy_file.txt); n_s=$(median < copy_null.txt)
cat <<TABLE
| what ($SIZE point, $(awk -v a="$data" 'BEGIN{printf "%.1f", a/1e9}') GB of data; medians of $RUNS, min-max) | result | target |
|---|---|---|
| \`strata serve\` started to first 4 KiB of data read (libnbd) | $(median < ttfb.txt) ms ($(range < ttfb.txt)) | ≤ 100 ms |
| \`strata restore\` to a file, cold cache | $r_s s ($(range < restore.txt)), $(gbs "$r_s") GB/s | |
| \`nbdcopy\` of the export to a file, cold cache | $f_s s ($(range < copy_file.txt)), $(gbs "$f_s") GB/s: $(awk -v a="$r_s" -v b="$f_s" 'BEGIN{printf "%.0f%%", 100*a/b}') of restore | ≥ 80% |
| \`nbdcopy\` of the export to null:, cold cache | $n_s s ($(range < copy_null.txt)), $(gbs "$n_s") GB/s: $(awk -v a="$r_s" -v b="$n_s" 'BEGIN{printf "%.0f%%", 100*a/b}') of restore | |
TABLE
echo
echo "| random 4 KiB reads (fio nbd engine, ${FIO_SECS} s), 4 GiB point of data only | frames | frame cache | QD | p50 µs | p99 µs | kIOPS |"
echo "|---|---|---|---|---|---|---|"
while read -r repo cache region qd p50 p99 kiops; do
  where=$([ "$region" = 4G ] && echo "uniform over 4 GiB" || echo "uniform over a 128 MiB hot region")
  frames=$([ "$repo" = dense64k ] && echo "64 KiB" || echo "1 MiB")
  echo "| $where | $frames | $([ "$cache" = 0 ] && echo none || echo "$cache") | $qd | $p50 | $p99 | $kiops |"
done < random.txt
