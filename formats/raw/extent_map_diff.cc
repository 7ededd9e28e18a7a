#include "formats/raw/extent_map_diff.h"

#include <algorithm>
#include <limits>
#include <vector>

namespace strata {
namespace {

// A stretch of one file with uniform meaning: the normalised map covers
// [0, size) with these, in order, without gaps or overlaps.
enum class Kind : uint8_t {
  kZero,    // a hole or an unwritten extent: reads as zeros
  kMapped,  // data at physical byte `phys` (for `start`), advancing with the offset
  kDoubt,   // nothing can be proven about these bytes
};

struct Segment {
  uint64_t start;
  uint64_t end;
  Kind kind;
  bool shared;
  uint64_t phys;
};

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

// Turns a FIEMAP answer into segments covering exactly [0, size).
std::vector<Segment> Normalize(std::span<const PhysicalExtent> map, uint64_t size) {
  std::vector<PhysicalExtent> sorted(map.begin(), map.end());
  // The kernel answers in ascending order; sorting (stable, so equal starts
  // keep their order) only matters for other input and is linear when sorted.
  if (!std::is_sorted(sorted.begin(), sorted.end(),
                      [](const auto& a, const auto& b) { return a.logical < b.logical; })) {
    std::stable_sort(sorted.begin(), sorted.end(),
                     [](const auto& a, const auto& b) { return a.logical < b.logical; });
  }
  std::vector<Segment> out;
  out.reserve(sorted.size() * 2 + 1);
  uint64_t cursor = 0;  // everything below is covered by `out`
  for (const PhysicalExtent& e : sorted) {
    if (e.length == 0 || e.logical >= size) continue;
    const uint64_t s = e.logical;
    const uint64_t t = std::min(size, e.length > kMax - s ? kMax : s + e.length);
    Kind kind;
    if ((e.flags & ~kExtentTrustedFlags) != 0) {
      kind = Kind::kDoubt;
    } else if (e.flags & kExtentUnwritten) {
      kind = Kind::kZero;  // "reads as zeros" (linux/fiemap.h); no address needed
    } else if (e.physical > kMax - e.length) {
      kind = Kind::kDoubt;  // an address range that wraps: nonsense, trust nothing
    } else {
      kind = Kind::kMapped;
    }
    const bool shared = (e.flags & kExtentShared) != 0;
    uint64_t from = s;
    if (s < cursor) {
      // Overlapping extents: two claims on [s, min(t, cursor)). Neither can
      // be trusted there, so that stretch becomes doubtful; the earlier
      // segments keep what lies before and after it. The kernel does not
      // overlap extents, so this costs nothing on real maps (and O(segments
      // after s) per overlap on crafted ones).
      const uint64_t ov_end = std::min(t, cursor);
      std::vector<Segment> after;  // segments from s on, last first
      while (!out.empty() && out.back().start >= s) {
        after.push_back(out.back());
        out.pop_back();
      }
      if (!out.empty() && out.back().end > s) {
        Segment tail = out.back();
        out.back().end = s;
        if (tail.kind == Kind::kMapped) tail.phys += s - tail.start;
        tail.start = s;
        after.push_back(tail);
      }
      out.push_back({s, ov_end, Kind::kDoubt, false, 0});
      for (auto it = after.rbegin(); it != after.rend(); ++it) {
        Segment seg = *it;
        if (seg.end <= ov_end) continue;
        if (seg.start < ov_end) {
          if (seg.kind == Kind::kMapped) seg.phys += ov_end - seg.start;
          seg.start = ov_end;
        }
        out.push_back(seg);
      }
      from = cursor;
    } else if (s > cursor) {
      out.push_back({cursor, s, Kind::kZero, false, 0});
    }
    if (t > from) {
      out.push_back({from, t, kind, shared, kind == Kind::kMapped ? e.physical + (from - s) : 0});
      cursor = t;
    }
  }
  if (cursor < size) out.push_back({cursor, size, Kind::kZero, false, 0});
  return out;
}

// Adds byte ranges to a set, merging contiguous ones first (fewer calls).
class RangeSink {
 public:
  explicit RangeSink(ExtentSet* set) : set_(set) {}
  Status Add(uint64_t start, uint64_t end) {
    if (start == end) return Status::Ok();
    if (len_ != 0 && start == start_ + len_) {
      len_ += end - start;
      return Status::Ok();
    }
    STRATA_RETURN_IF_ERROR(Flush());
    start_ = start;
    len_ = end - start;
    return Status::Ok();
  }
  Status Flush() {
    if (len_ == 0) return Status::Ok();
    Status s = set_->Add(start_, len_);
    len_ = 0;
    return s;
  }

 private:
  ExtentSet* set_;
  uint64_t start_ = 0, len_ = 0;
};

}  // namespace

Result<ExtentSet> CompareExtentMaps(std::span<const PhysicalExtent> old_map, uint64_t old_size,
                                    std::span<const PhysicalExtent> new_map, uint64_t new_size,
                                    Granularity g, ExtentMapDiffStats* stats) {
  if (old_size > kMaxDiskSize || new_size > kMaxDiskSize) {
    return Status::InvalidArgument("extent map comparison: file size " +
                                   std::to_string(std::max(old_size, new_size)) +
                                   " exceeds 2^63 bytes");
  }
  const uint64_t common = std::min(old_size, new_size);
  const uint64_t total = std::max(old_size, new_size);
  STRATA_ASSIGN_OR_RETURN(ExtentSet changed, ExtentSet::Create(total, g));
  ExtentMapDiffStats st;
  st.compared_bytes = common;
  st.tail_bytes = total - common;

  const std::vector<Segment> a = Normalize(old_map, common);
  const std::vector<Segment> b = Normalize(new_map, common);
  RangeSink sink(&changed);
  // Linear merge: both lists cover [0, common) in order, so each step ends
  // at the nearer segment end and advances at least one list.
  size_t i = 0, j = 0;
  uint64_t pos = 0;
  while (pos < common) {
    const Segment& x = a[i];
    const Segment& y = b[j];
    const uint64_t end = std::min(x.end, y.end);
    const uint64_t len = end - pos;
    uint64_t* reason;
    if (x.kind == Kind::kDoubt || y.kind == Kind::kDoubt) {
      reason = &st.doubtful_bytes;
    } else if (x.kind == Kind::kZero && y.kind == Kind::kZero) {
      reason = &st.equal_bytes;
    } else if (x.kind != y.kind) {
      reason = &st.hole_bytes;
    } else if (x.phys + (pos - x.start) != y.phys + (pos - y.start)) {
      // Both segments advance one physical byte per logical byte, so
      // agreement at `pos` means agreement on all of [pos, end).
      reason = &st.moved_bytes;
    } else if (!x.shared || !y.shared) {
      // One block in two files must be shared; if the file system does not
      // say so, its answer is not the one this comparison relies on.
      reason = &st.unshared_bytes;
    } else {
      reason = &st.equal_bytes;
    }
    *reason += len;
    if (reason != &st.equal_bytes) STRATA_RETURN_IF_ERROR(sink.Add(pos, end));
    pos = end;
    if (x.end == end) ++i;
    if (y.end == end) ++j;
  }
  STRATA_RETURN_IF_ERROR(sink.Add(common, total));
  STRATA_RETURN_IF_ERROR(sink.Flush());
  if (stats != nullptr) *stats = st;
  return changed;
}

}  // namespace strata
