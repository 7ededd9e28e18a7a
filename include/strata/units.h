// Units: byte extents, block ranges and the granularity that converts them.
//
// Mixing byte offsets and block indices is the classic silent data-loss bug of
// change tracking, so conversions go through Granularity's named functions
// and the two kinds of range are distinct types.
#ifndef STRATA_UNITS_H_
#define STRATA_UNITS_H_

#include <cstdint>

#include "strata/status.h"

namespace strata {

// Bytes [offset, offset + length) of a disk.
struct ByteExtent {
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t end() const { return offset + length; }
  bool operator==(const ByteExtent&) const = default;
};

// Blocks [first, first + count) at some granularity.
struct BlockRange {
  uint64_t first = 0;
  uint64_t count = 0;
  uint64_t end() const { return first + count; }
  bool operator==(const BlockRange&) const = default;
};

// Largest disk strata addresses: 2^63 bytes.
inline constexpr uint64_t kMaxDiskSize = uint64_t{1} << 63;

// A power-of-two block size between 512 B and 64 MiB.
class Granularity {
 public:
  static constexpr uint32_t kMinShift = 9;   // 512 B
  static constexpr uint32_t kMaxShift = 26;  // 64 MiB
  static constexpr uint64_t kDefaultBytes = 64 * 1024;

  // kInvalidArgument unless `bytes` is a power of two in [512, 64 MiB].
  static Result<Granularity> FromBytes(uint64_t bytes);
  static Result<Granularity> FromShift(uint32_t shift);
  static Granularity Default() { return Granularity(16); }

  uint32_t shift() const { return shift_; }
  uint64_t bytes() const { return uint64_t{1} << shift_; }

  // Block holding byte `offset`.
  uint64_t BlockOf(uint64_t offset) const { return offset >> shift_; }
  // First byte of block `block`.
  uint64_t OffsetOf(uint64_t block) const { return block << shift_; }
  // Blocks needed to cover `size` bytes: ceil(size / bytes()), no overflow.
  uint64_t BlocksFor(uint64_t size) const {
    return (size >> shift_) + ((size & (bytes() - 1)) != 0);
  }
  // Blocks touched by a non-empty byte extent (rounded outward).
  BlockRange Cover(ByteExtent e) const {
    uint64_t first = BlockOf(e.offset);
    uint64_t last = BlockOf(e.offset + e.length - 1);
    return {first, last - first + 1};
  }

  bool operator==(const Granularity&) const = default;

 private:
  explicit Granularity(uint32_t shift) : shift_(shift) {}
  uint32_t shift_;
};

// kInvalidArgument if offset + length overflows 64 bits or passes `size`.
Status CheckRange(uint64_t offset, uint64_t length, uint64_t size);

// "512 B", "64 KiB", "1.5 GiB": binary units, at most one decimal.
std::string FormatBytes(uint64_t bytes);

}  // namespace strata

#endif  // STRATA_UNITS_H_
