#!/usr/bin/env bash
# Builds the libFuzzer target with clang in its own build directory
# (build/fuzz), in one command: fuzz/build.sh. Needs Debian's clang.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang++ >/dev/null || { echo "fuzz/build.sh: clang++ not found (apt-get install clang)" >&2; exit 1; }
# -Wno-unknown-warning-option: clang lacks GCC's -Wno-restrict.
CC=clang CXX=clang++ cmake -S . -B build/fuzz -DSTRATA_BENCH=OFF \
  -DSTRATA_SANITIZE=address,undefined,fuzzer-no-link \
  -DCMAKE_CXX_FLAGS=-Wno-unknown-warning-option >/dev/null
cmake --build build/fuzz --target qcow2_fuzz -j"${JOBS:-2}"
echo "built build/fuzz/fuzz/qcow2_fuzz"
