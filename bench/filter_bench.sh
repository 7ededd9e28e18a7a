#!/usr/bin/env bash
# Overhead of the tracking filter (docs/benchmarks.md, issue 15): writes into
# a raw file through `nbdkit file` without and with `--filter=strata`,
# measured side by side in one run, alternating (the machine is shared and
# noisy): medians of RUNS runs with min-max. Prints a markdown table.
#
#   bench/filter_bench.sh [DATA_SIZE]      default 2G, RUNS=5, FIO_SECS=10
#
# 1. nbdcopy of DATA_SIZE of random data (a file, page cache warm) into a
#    fresh sparse file of the same size: each run a new file, a new tracker
#    (64 KiB blocks, intent log on: the default);
# 2. random 4 KiB writes with fio's nbd engine at queue depth 1 and 32 into
#    a preallocated file of DATA_SIZE, IOPS and p50/p99 completion latency.
#    Every run starts with a fresh tracker, so the first write to each
#    64 MiB intent region pays one intent-log fsync.
#
# Needs nbdkit, nbdcopy (libnbd-bin), fio (scripts/setup.sh) and about twice
# DATA_SIZE free under $WORK (default /var/tmp/strata-filter-bench, removed
# at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-2G}
RUNS=${RUNS:-5}; FIO_SECS=${FIO_SECS:-10}
WORK=${WORK:-/var/tmp/strata-filter-bench}
BUILD=${BUILD:-build/release}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTRATA_BENCH=OFF >/dev/null
nice cmake --build "$BUILD" -j2 --target nbdkit-strata-filter >/dev/null
FILTER=$PWD/$BUILD/plugins/nbdkit/nbdkit-strata-filter.so
rm -rf "$WORK"; mkdir -p "$WORK"; cd "$WORK"

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
median() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
range() { sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {print lo "-" hi}'; }
PID=
stop() {  # stops the nbdkit this script started, by its pid
  [ -n "$PID" ] || return 0
  kill "$PID" 2>/dev/null || true
  for _ in $(seq 200); do kill -0 "$PID" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$PID" 2>/dev/null && { echo "nbdkit $PID did not stop" >&2; exit 1; }
  PID=
}
URI=
start() {  # DISK MODE(plain|strata): nbdkit in the background; sets PID and URI
  # (called directly, never in $(...): PID must reach stop)
  rm -f nbd.sock nbd.pid; rm -rf trk
  local filter=()
  [ "$2" = strata ] && filter=(--filter="$FILTER")
  nbdkit -U "$WORK/nbd.sock" -P "$WORK/nbd.pid" "${filter[@]}" file "$1" \
    $([ "$2" = strata ] && echo "tracker=$WORK/trk")
  for _ in $(seq 200); do [ -S nbd.sock ] && [ -s nbd.pid ] && break; sleep 0.02; done
  PID=$(cat nbd.pid)
  URI="nbd+unix:///?socket=$WORK/nbd.sock"
}
trap 'stop; cd /; rm -rf "$WORK"' EXIT

echo "# machine: $(nproc) cores, $(uname -r), $(stat -f -c %T .) at $WORK, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
head -c "$SIZE" /dev/urandom > src.raw
bytes=$(stat -c %s src.raw)

# ---- 1. nbdcopy sequential writes ----
: > copy_plain.txt; : > copy_strata.txt
for _ in $(seq "$RUNS"); do
  for mode in plain strata; do
    rm -f dst.raw; truncate -s "$bytes" dst.raw; sync
    start dst.raw "$mode"
    t0=$(now); nbdcopy src.raw "$URI"; t1=$(now)
    stop
    echo "$(secs "$t0" "$t1")" >> "copy_$mode.txt"
  done
done
cmp src.raw dst.raw  # the last copy (through the filter) is complete

# ---- 2. random 4 KiB writes ----
fio_run() {  # URI IODEPTH -> "kiops p50_us p99_us"
  fio --name=randw --ioengine=nbd --uri="$1" --rw=randwrite --bs=4k --iodepth="$2" --size="$bytes" \
    --time_based --runtime="$FIO_SECS" --norandommap --randrepeat=0 --output-format=json 2>/dev/null |
    /usr/bin/python3 -c 'import json,sys; t=sys.stdin.read(); w=json.loads(t[t.index("{"):])["jobs"][0]["write"]; p=w["clat_ns"]["percentile"]
print("%.2f %.0f %.0f" % (w["iops"]/1e3, p["50.000000"]/1e3, p["99.000000"]/1e3))'
}
rm -f dst.raw; fallocate -l "$bytes" dst.raw
: > rand.txt
for _ in $(seq "$RUNS"); do
  for qd in 1 32; do
    for mode in plain strata; do
      start dst.raw "$mode"
      echo "$mode $qd $(fio_run "$URI" "$qd")" >> rand.txt
      stop
    done
  done
done

# ---- the table ----
p=$(median < copy_plain.txt); s=$(median < copy_strata.txt)
gbs() { awk -v n="$bytes" -v t="$1" 'BEGIN { printf "%.2f", n / t / 1e9 }'; }
ovh() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.1f%%", 100 * (b - a) / a }'; }
col() {  # MODE QD FIELD -> median (min-max)
  local v; v=$(awk -v m="$1" -v q="$2" -v f="$3" '$1 == m && $2 == q {print $f}' rand.txt)
  echo "$(median <<<"$v") ($(range <<<"$v"))"
}
med() { awk -v m="$1" -v q="$2" -v f="$3" '$1 == m && $2 == q {print $f}' rand.txt | median; }
cat <<TABLE
| writes through nbdkit file ($(awk -v b="$bytes" 'BEGIN{printf "%.1f", b/2^30}') GiB; medians of $RUNS, min-max) | without filter | with --filter=strata | overhead | target |
|---|---|---|---|---|
| \`nbdcopy\` of random data into a sparse file | $p s ($(range < copy_plain.txt)), $(gbs "$p") GB/s | $s s ($(range < copy_strata.txt)), $(gbs "$s") GB/s | $(ovh "$p" "$s") time | ≤ 5% |
TABLE
for qd in 1 32; do
  echo "| fio random 4 KiB writes, QD$qd, kIOPS | $(col plain $qd 3) | $(col strata $qd 3) | $(ovh "$(med strata $qd 3)" "$(med plain $qd 3)") time per write | |"
  echo "| fio random 4 KiB writes, QD$qd, p50 / p99 µs | $(med plain $qd 4) / $(med plain $qd 5) | $(med strata $qd 4) / $(med strata $qd 5) | | |"
done
