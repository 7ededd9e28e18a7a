// 128-bit random identifiers: archive ids, disk ids, tracker UUIDs.
#ifndef STRATA_ID128_H_
#define STRATA_ID128_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "strata/status.h"

namespace strata {

using Id128 = std::array<uint8_t, 16>;

// 16 bytes from the kernel's random pool (getrandom); never all zero.
Id128 RandomId128();
inline bool IsNullId128(const Id128& id) {
  for (uint8_t b : id) {
    if (b) return false;
  }
  return true;
}
// 32 lower-case hex digits and back (kInvalidArgument for anything else).
std::string Id128ToHex(const Id128& id);
Result<Id128> Id128FromHex(std::string_view hex);

}  // namespace strata

#endif  // STRATA_ID128_H_
