// The body of the qcow2 fuzz target, shared by the libFuzzer binary
// (qcow2_fuzz.cc) and the corpus replay in the ordinary test suite
// (tests/qcow2_fuzz_replay_test.cc).
#ifndef STRATA_FUZZ_QCOW2_FUZZ_ONE_H_
#define STRATA_FUZZ_QCOW2_FUZZ_ONE_H_

#include <cstddef>
#include <cstdint>

namespace strata::fuzz {

// Opens `data` as a qcow2 image (in memory, no backing files) and exercises
// the header, extension, L1/L2, snapshot-table and bitmap parsers with
// bounded work. Returns 0 (libFuzzer's convention); crashes are the bugs.
int Qcow2FuzzOne(const uint8_t* data, size_t size);

}  // namespace strata::fuzz

#endif  // STRATA_FUZZ_QCOW2_FUZZ_ONE_H_
