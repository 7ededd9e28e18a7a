#include "strata/checksum.h"

// The header-only form: Debian's shared libxxhash exports an SSE2 build of
// XXH3 (~19 GB/s); inlining lets the compiler use the build's target flags.
// Either way hashing is far from the pipeline's wall (shared/reference/limits.md).
#define XXH_INLINE_ALL
#include <xxhash.h>

namespace strata {

uint64_t Xxh3_64(const void* data, size_t n) { return XXH3_64bits(data, n); }

Hash128 Xxh3_128(const void* data, size_t n) {
  XXH128_hash_t h = XXH3_128bits(data, n);
  return {h.low64, h.high64};
}

}  // namespace strata
