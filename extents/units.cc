#include "strata/units.h"

#include <bit>
#include <cstdio>
#include <string>

namespace strata {

Result<Granularity> Granularity::FromBytes(uint64_t bytes) {
  if (!std::has_single_bit(bytes) || bytes < (uint64_t{1} << kMinShift) ||
      bytes > (uint64_t{1} << kMaxShift)) {
    return Status::InvalidArgument(
        "granularity " + std::to_string(bytes) +
        " must be a power of two between 512 and 67108864 bytes");
  }
  return Granularity(static_cast<uint32_t>(std::countr_zero(bytes)));
}

Result<Granularity> Granularity::FromShift(uint32_t shift) {
  if (shift < kMinShift || shift > kMaxShift) {
    return Status::InvalidArgument("granularity shift " +
                                   std::to_string(shift) +
                                   " is outside 9..26");
  }
  return Granularity(shift);
}

Status CheckRange(uint64_t offset, uint64_t length, uint64_t size) {
  if (length > UINT64_MAX - offset) {
    return Status::InvalidArgument("range offset " + std::to_string(offset) +
                                   " + length " + std::to_string(length) +
                                   " overflows 64 bits");
  }
  if (offset + length > size) {
    return Status::InvalidArgument(
        "range [" + std::to_string(offset) + ", " +
        std::to_string(offset + length) + ") passes the disk size " +
        std::to_string(size));
  }
  return Status::Ok();
}

std::string FormatBytes(uint64_t bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int unit = 0;
  double v = static_cast<double>(bytes);
  while (v >= 1024.0 && unit < 6) {
    v /= 1024.0;
    ++unit;
  }
  char buf[32];
  if (unit == 0 || v == static_cast<double>(static_cast<uint64_t>(v))) {
    std::snprintf(buf, sizeof buf, "%.0f %s", v, kUnits[unit]);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[unit]);
  }
  return buf;
}

}  // namespace strata
