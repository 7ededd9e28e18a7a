// libFuzzer target for the qcow2 parsers (built when the compiler is clang;
// see fuzz/README.md). Seed corpus: fuzz/make_corpus.sh.
#include <cstddef>
#include <cstdint>

#include "fuzz/qcow2_fuzz_one.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return strata::fuzz::Qcow2FuzzOne(data, size);
}
