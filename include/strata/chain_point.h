// ChainPoint: a point in a source's history that a backup's content starts
// from or ends at (docs/formats/archive.md §3.2). One type carries start and
// end points from the change source into the archive header, the catalog
// and the parent lookup; nothing compares names elsewhere.
#ifndef STRATA_CHAIN_POINT_H_
#define STRATA_CHAIN_POINT_H_

#include <cstdint>
#include <string>

#include "strata/id128.h"

namespace strata {

enum class PointKind : uint8_t {
  kNone = 0,           // no point a change source can continue from
  kTracker = 1,        // a strata tracker checkpoint: source = tracker UUID, seq = checkpoint id
  kQcow2Bitmap = 2,    // a qcow2 persistent bitmap recording writes since the point:
                       // source = disk id, name = bitmap name
  kQcow2Snapshot = 3,  // a qcow2 internal snapshot: source = disk id, seq = its
                       // creation time (ns since the epoch), name = its name
  kReflinkClone = 4,   // a reflink clone of a raw image: source = disk id, seq =
                       // fingerprint of the clone file (inode, size, times),
                       // name = its absolute path
};
inline constexpr uint8_t kMaxPointKind = 4;
const char* PointKindName(PointKind k);

struct ChainPoint {
  PointKind kind = PointKind::kNone;
  Id128 source{};
  uint64_t seq = 0;
  std::string name;  // at most kMaxPointName bytes

  bool is_none() const { return kind == PointKind::kNone; }
  bool operator==(const ChainPoint&) const = default;
  // "checkpoint 'c1' (#4) of tracker 3f2a…", "qcow2 bitmap 'strata-…'",
  // "internal snapshot 's1'", "no point".
  std::string Describe() const;
};
inline constexpr size_t kMaxPointName = 1023;

}  // namespace strata

#endif  // STRATA_CHAIN_POINT_H_
