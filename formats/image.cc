#include "formats/image.h"

#include <string>

namespace strata {

namespace {
// qemu-img.c entry_mergeable(): same flags and depth, and offsets that either
// continue each other or are both absent.
bool Mergeable(const MapEntry& a, const MapEntry& b) {
  if (a.length == 0) return false;
  if (a.zero != b.zero || a.data != b.data || a.depth != b.depth || a.present != b.present) {
    return false;
  }
  if (a.has_offset != b.has_offset) return false;
  if (a.has_offset && a.offset + a.length != b.offset) return false;
  return true;
}

// Guest bytes per BlockStatus call: bounds the entries buffered at once.
constexpr uint64_t kMapStep = uint64_t{1} << 30;
}  // namespace

Status MapImage(Image& image, const std::function<Status(const MapEntry&)>& emit) {
  const uint64_t size = image.size();
  MapEntry cur;
  bool have = false;
  std::vector<MapEntry> batch;
  uint64_t pos = 0;
  while (pos < size) {
    batch.clear();
    uint64_t len = std::min(kMapStep, size - pos);
    STRATA_RETURN_IF_ERROR(image.BlockStatus(pos, len, &batch));
    if (batch.empty()) {
      return Status::Corruption(image.name() + ": block status made no progress at " +
                                std::to_string(pos));
    }
    for (const MapEntry& e : batch) {
      if (e.start != pos || e.length == 0 || e.length > size - pos) {
        return Status::Corruption(image.name() + ": block status returned a bad entry at " +
                                  std::to_string(pos));
      }
      pos += e.length;
      if (have && Mergeable(cur, e)) {
        cur.length += e.length;
        continue;
      }
      if (have) STRATA_RETURN_IF_ERROR(emit(cur));
      cur = e;
      have = true;
    }
  }
  if (have) STRATA_RETURN_IF_ERROR(emit(cur));
  return Status::Ok();
}

Result<ExtentSet> AllocatedExtents(Image& image, Granularity g, bool include_backing) {
  STRATA_ASSIGN_OR_RETURN(ExtentSet set, ExtentSet::Create(image.size(), g));
  Status s = MapImage(image, [&](const MapEntry& e) -> Status {
    if (!e.data || !e.present) return Status::Ok();
    if (e.depth > 0 && !include_backing) return Status::Ok();
    return set.Add(e.start, e.length);
  });
  STRATA_RETURN_IF_ERROR(s);
  set.Optimize();
  return set;
}

std::string MapEntryJson(const MapEntry& e) {
  std::string s = "{ \"start\": " + std::to_string(e.start) +
                  ", \"length\": " + std::to_string(e.length) +
                  ", \"depth\": " + std::to_string(e.depth) +
                  ", \"present\": " + (e.present ? "true" : "false") +
                  ", \"zero\": " + (e.zero ? "true" : "false") +
                  ", \"data\": " + (e.data ? "true" : "false");
  if (e.has_offset) s += ", \"offset\": " + std::to_string(e.offset);
  s += "}";
  return s;
}

}  // namespace strata
