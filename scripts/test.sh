#!/usr/bin/env bash
# The whole test suite: installs what is missing, then builds and runs the
# GoogleTest suite twice: an optimised build, and a Debug build under
# AddressSanitizer + UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

jobs=$(nproc)
run_suite() {  # NAME CTEST-LABEL-REGEX BUILD-TARGETS ('' = all) CMAKE-ARGS...
  local name=$1 label=$2 targets=$3; shift 3
  echo "=== strata tests: $name build ==="
  cmake -S . -B "build/$name" -DSTRATA_BENCH=OFF "$@" > "build/$name.configure.log" 2>&1 \
    || { cat "build/$name.configure.log"; return 1; }
  if ! cmake --build "build/$name" -j"$jobs" ${targets:+--target $targets} \
       > "build/$name.build.log" 2>&1; then
    grep -E -A5 'error|Error' "build/$name.build.log" | head -60
    return 1
  fi
  local log="build/$name.ctest.log" rc=0
  ctest --test-dir "build/$name" --output-on-failure -j"$jobs" --timeout 900 -L "$label" \
    2>&1 | tee "$log" || rc=1
  # "100% tests passed, 0 tests failed out of 116" -> running totals.
  local line total failed
  line=$(grep -E 'tests passed, [0-9]+ tests failed out of [0-9]+' "$log" | tail -1)
  total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$line")
  failed=$(sed -E 's/.*passed, ([0-9]+) tests failed.*/\1/' <<<"$line")
  all_total=$((all_total + ${total:-0}))
  all_failed=$((all_failed + ${failed:-0}))
  return $rc
}
all_total=0
all_failed=0

mkdir -p build
# Every test in the optimised build; unit tests (label "unit") under sanitizers.
run_suite release '.*' '' -DCMAKE_BUILD_TYPE=RelWithDebInfo
run_suite asan 'unit' '' -DCMAKE_BUILD_TYPE=Debug -DSTRATA_SANITIZE=address,undefined
# Concurrency tests (label "tsan") under ThreadSanitizer: only their binaries.
run_suite tsan 'tsan' 'tracker_concurrency_test tracker_control_test quiesce_concurrency_test frame_cache_test' -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTRATA_SANITIZE=thread
echo "tests: $((all_total - all_failed)) passed, $all_failed failed"
