#!/usr/bin/env bash
# Long run of the qcow2 differential test against QEMU (issue 13): random
# QEMU operation sequences for a range of seeds, every answer compared with
# QEMU's, failures shrunk and printed as shell scripts.
#
#   bench/qcow2_differential.sh FIRST COUNT [JOBS] [BUILD_DIR]
#   e.g. bench/qcow2_differential.sh 100000 20000 2
#
# Runs the test binary of BUILD_DIR (default build/release) at nice 19 in
# JOBS parallel chunks (default 1), checking every bitmap and snapshot
# (STRATA_QCOW2_DIFF_ALL=1), and prints one summary line per chunk plus the
# totals. Logs: $LOG_DIR (default /tmp/qcow2-differential-FIRST). Exit 1 on
# any disagreement.
set -euo pipefail
cd "$(dirname "$0")/.."
first=${1:?usage: $0 FIRST COUNT [JOBS] [BUILD_DIR]}
count=${2:?usage: $0 FIRST COUNT [JOBS] [BUILD_DIR]}
jobs=${3:-1}
build=${4:-build/release}
bin=$build/tests/qcow2_differential_test
[ -x "$bin" ] || { echo "$0: $bin not built (cmake --build $build --target qcow2_differential_test extent-dump)" >&2; exit 1; }
logs=${LOG_DIR:-/tmp/qcow2-differential-$first}
mkdir -p "$logs"
per=$(( (count + jobs - 1) / jobs ))
start=$(date +%s)
pids=()
for ((j = 0; j < jobs; j++)); do
  f=$(( first + j * per ))
  n=$(( per < first + count - f ? per : first + count - f ))
  [ "$n" -gt 0 ] || break
  STRATA_QCOW2_DIFF_FIRST=$f STRATA_QCOW2_DIFF_COUNT=$n STRATA_QCOW2_DIFF_ALL=1 \
    nice -n 19 "$bin" --gtest_filter='Qcow2Differential.*' > "$logs/chunk-$j.log" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
grep -h '^qcow2 differential' "$logs"/chunk-*.log || true
seqs=0; fails=0; hung=0; changed=0
while read -r s h c f; do
  seqs=$((seqs + s)); hung=$((hung + h)); changed=$((changed + c)); fails=$((fails + f))
done < <(grep -h '^qcow2 differential:' "$logs"/chunk-*.log |
  sed -E 's/.*: ([0-9]+) sequences, .* ([0-9]+) with a QEMU step killed.* ([0-9]+) maps QEMU changed.* ([0-9]+) with disagreements.*/\1 \2 \3 \4/')
echo "total: $seqs sequences, $fails with disagreements, $hung with a QEMU step killed by its timeout," \
  "$changed maps QEMU changed to ours when asked again, $(( $(date +%s) - start )) s, $jobs jobs; logs in $logs"
grep -h "class '" "$logs"/chunk-*.log | grep -v '^#' | sed -E "s/.*class '([^']*)'.*/\1/" | sort | uniq -c || true
exit $rc
