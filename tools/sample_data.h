// Deterministic sample content for generated disks and scribbled changes:
// text-like compressible chunks (like OS files) and random chunks (like
// compressed media), so benchmarks see VM-like compression ratios.
#ifndef STRATA_TOOLS_SAMPLE_DATA_H_
#define STRATA_TOOLS_SAMPLE_DATA_H_

#include <cstddef>
#include <cstdint>
#include <random>

namespace strata::cli {

// Fills p[0, n) with `random` bytes or text-like bytes from `rng`.
void FillSample(std::mt19937_64& rng, bool random, uint8_t* p, size_t n);

}  // namespace strata::cli

#endif  // STRATA_TOOLS_SAMPLE_DATA_H_
