#include "fuzz/qcow2_fuzz_one.h"

#include <algorithm>
#include <vector>

#include "strata/qcow2_image.h"

namespace strata::fuzz {

namespace {
// Work bounds so one input stays in the milliseconds.
constexpr uint64_t kMapBytes = uint64_t{64} << 20;
constexpr uint64_t kReadBytes = uint64_t{256} << 10;

void Exercise(Image& img) {
  std::vector<MapEntry> entries;
  uint64_t end = std::min(img.size(), kMapBytes);
  for (uint64_t pos = 0; pos < end;) {
    entries.clear();
    if (!img.BlockStatus(pos, end - pos, &entries).ok() || entries.empty()) break;
    pos = entries.back().start + entries.back().length;
  }
  std::vector<uint8_t> buf(std::min(img.size(), kReadBytes));
  if (buf.empty()) return;
  (void)img.Read(0, buf);
  if (img.size() > buf.size()) (void)img.Read(img.size() - buf.size(), buf);
}
}  // namespace

int Qcow2FuzzOne(const uint8_t* data, size_t size) {
  auto file = std::make_unique<MemFile>("fuzz.qcow2");
  if (size == 0 || !file->Write(0, std::span<const uint8_t>(data, size)).ok()) return 0;
  auto q = OpenQcow2Image(std::move(file));
  if (!q) return 0;
  Qcow2Image& img = **q;
  Exercise(img);
  const uint64_t cs = img.info().cluster_size;
  if (auto bitmaps = img.Bitmaps()) {
    for (const Qcow2Bitmap& b : *bitmaps) {
      // Table entries QEMU would need: skip the few that mean a lot of work.
      uint64_t bits = img.size() / b.granularity + 1;
      if (bits / 8 / cs > 64) continue;
      (void)img.LoadBitmap(b.name, true);
      (void)img.LoadBitmap(b.name, false);
    }
  }
  for (const Qcow2Snapshot& s : img.Snapshots()) {
    if (auto v = img.OpenSnapshot(s.id)) Exercise(**v);
    if (img.size() <= kMapBytes) (void)img.SnapshotDiff(s.id);
  }
  if (img.size() <= kMapBytes) (void)img.LayerDiff(1);
  return 0;
}

}  // namespace strata::fuzz
