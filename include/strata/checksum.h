// XXH3 checksums used by every persistent format strata owns.
#ifndef STRATA_CHECKSUM_H_
#define STRATA_CHECKSUM_H_

#include <cstddef>
#include <cstdint>

namespace strata {

// XXH3-64 (seed 0) of `n` bytes.
uint64_t Xxh3_64(const void* data, size_t n);

struct Hash128 {
  uint64_t low = 0, high = 0;
  bool operator==(const Hash128&) const = default;
};
// XXH3-128 (seed 0) of `n` bytes.
Hash128 Xxh3_128(const void* data, size_t n);

}  // namespace strata

#endif  // STRATA_CHECKSUM_H_
