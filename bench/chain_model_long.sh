#!/usr/bin/env bash
# The long run of the chain model (tests/chain_model_test.cc, issue 10):
# randomized histories over four disks in one repository, every backup
# restored and compared with a model of its disk after every step.
#
#   bench/chain_model_long.sh [HISTORIES] [STEPS] [FIRST_SEED]
#
# Defaults: 40 histories x 250 steps = 10,000 steps from seed 1. Needs a
# release build in build/release (scripts/test.sh makes one). Prints the
# test's summary line (backups made and refused by kind, merges, restores
# compared) and exits non-zero on the first violation, with its seed and a
# shrunk operation list.
set -euo pipefail
cd "$(dirname "$0")/.."
histories=${1:-40}
steps=${2:-250}
seed=${3:-1}
bin=build/release/tests/chain_model_test
[ -x "$bin" ] || { echo "build first: cmake --build build/release --target chain_model_test strata" >&2; exit 1; }
# Run against a copy of the tools, so rebuilding meanwhile does not disturb it.
tools=$(mktemp -d -p "$PWD/build")
trap 'rm -rf "$tools"' EXIT
cp build/release/tools/strata build/release/tools/extent-dump "$tools/"
cp "$bin" "$tools/chain_model_test"
start=$(date +%s)
set +e
STRATA_TOOLS_DIR=$tools STRATA_MODEL_SEED=$seed STRATA_MODEL_RUNS=$histories STRATA_MODEL_STEPS=$steps \
  "$tools/chain_model_test" --gtest_color=no 2>&1 | grep -v '^Killed$'
rc=${PIPESTATUS[0]}
set -e
echo "chain model long run: $histories histories x $steps steps from seed $seed, $(( $(date +%s) - start )) s, exit $rc"
exit "$rc"
