// Extent-map comparison: which bytes may differ between two files, decided
// from their physical extent maps alone (no data is read).
//
// The maps are what FS_IOC_FIEMAP reports (formats/raw/reflink.h reads
// them). Two clones of one file made with FICLONE on XFS or btrfs share
// their physical extents until one of them is written, so the bytes at a
// logical offset are proven equal in both files only when:
//  - both map the offset to the same physical byte, both extents are flagged
//    SHARED and carry no flag that makes the physical address meaningless or
//    the data not yet final (see kExtentDoubtFlags); or
//  - both read as zeros: a hole (no extent) or an UNWRITTEN extent, again
//    without any doubt flag.
// Everything else is reported as changed: a different physical extent, an
// extent that is not shared, data on one side and a hole on the other, a
// compressed (ENCODED), inline, delalloc or unknown extent, overlapping
// extents, or bytes past the shorter file's end. The comparison over-reports
// and never under-reports; docs/design/reflink.md gives the reasoning.
//
// Pure code: no I/O. Thread safety: free functions over values.
#ifndef STRATA_FORMATS_RAW_EXTENT_MAP_DIFF_H_
#define STRATA_FORMATS_RAW_EXTENT_MAP_DIFF_H_

#include <cstdint>
#include <span>

#include "strata/extent_set.h"
#include "strata/status.h"
#include "strata/units.h"

namespace strata {

// One FIEMAP extent: bytes [logical, logical + length) of the file are at
// [physical, physical + length) on the device (for extents without doubt
// flags). `flags` are the FIEMAP_EXTENT_* bits, values as in <linux/fiemap.h>.
struct PhysicalExtent {
  uint64_t logical = 0;
  uint64_t physical = 0;
  uint64_t length = 0;
  uint32_t flags = 0;
  bool operator==(const PhysicalExtent&) const = default;
};

// FIEMAP_EXTENT_* values (kept here so pure code and tests need no kernel
// header; static_asserts in reflink.cc check them against <linux/fiemap.h>).
inline constexpr uint32_t kExtentLast = 0x00000001;
inline constexpr uint32_t kExtentUnknown = 0x00000002;
inline constexpr uint32_t kExtentDelalloc = 0x00000004;
inline constexpr uint32_t kExtentEncoded = 0x00000008;
inline constexpr uint32_t kExtentDataEncrypted = 0x00000080;
inline constexpr uint32_t kExtentNotAligned = 0x00000100;
inline constexpr uint32_t kExtentDataInline = 0x00000200;
inline constexpr uint32_t kExtentDataTail = 0x00000400;
inline constexpr uint32_t kExtentUnwritten = 0x00000800;
inline constexpr uint32_t kExtentMerged = 0x00001000;
inline constexpr uint32_t kExtentShared = 0x00002000;

// Flags that say nothing against comparing physical addresses. Any other
// bit, including ones a future kernel adds, makes the extent doubtful: its
// bytes are reported as changed whatever the other file holds.
inline constexpr uint32_t kExtentTrustedFlags =
    kExtentLast | kExtentUnwritten | kExtentMerged | kExtentShared;

// Why bytes were reported, for statistics and over-report analysis. Each
// changed byte is counted once, under the first reason that applies in this
// order.
struct ExtentMapDiffStats {
  uint64_t compared_bytes = 0;    // bytes below the shorter file's end
  uint64_t equal_bytes = 0;       // proven equal (shared or both zero)
  uint64_t doubtful_bytes = 0;    // a doubt flag or overlapping extents
  uint64_t unshared_bytes = 0;    // same physical byte but not flagged SHARED
  uint64_t moved_bytes = 0;       // different physical bytes on each side
  uint64_t hole_bytes = 0;        // zeros on one side, data on the other
  uint64_t tail_bytes = 0;        // between the two file sizes
};

// The blocks (at granularity `g`) holding any byte that may differ between a
// file of `old_size` bytes mapped by `old_map` and one of `new_size` bytes
// mapped by `new_map`. The set covers max(old_size, new_size) bytes; bytes
// between the two sizes are changed. Extents may come in any order, may
// extend past their file's size (the excess is ignored) and may overlap (the
// overlapped bytes are changed). Gaps between extents are holes.
//
// Errors: kInvalidArgument when a size exceeds 2^63.
// Cost: O(n log n) for n extents (a sort; already sorted input is O(n)),
// memory O(n); independent of the file sizes.
Result<ExtentSet> CompareExtentMaps(std::span<const PhysicalExtent> old_map, uint64_t old_size,
                                    std::span<const PhysicalExtent> new_map, uint64_t new_size,
                                    Granularity g, ExtentMapDiffStats* stats = nullptr);

}  // namespace strata

#endif  // STRATA_FORMATS_RAW_EXTENT_MAP_DIFF_H_
