// Serialisation of ExtentSet: docs/formats/extent-set.md.
#include <roaring/roaring.h>

#include <cstring>
#include <string>

#include "strata/checksum.h"
#include "extents/endian.h"
#include "strata/extent_set.h"

namespace strata {

namespace {
// §2 of docs/formats/extent-set.md.
constexpr char kMagic[8] = {'S', 'T', 'R', 'A', 'T', 'A', 'X', 'S'};
constexpr uint16_t kVersion = 1;
constexpr uint16_t kHeaderSize = 48;
constexpr size_t kTrailerSize = 8;  // XXH3-64
constexpr size_t kShardHeaderSize = 8;

Status Corrupt(uint64_t offset, const std::string& what) {
  return Status::Corruption("extent set at byte " + Hex(offset) + ": " + what);
}
}  // namespace

std::string ExtentSet::Serialize() const {
  std::string out;
  out.append(kMagic, 8);
  AppendLE16(&out, kVersion);
  AppendLE16(&out, kHeaderSize);
  AppendLE32(&out, 0);  // incompatible feature flags
  out.push_back(static_cast<char>(granularity_.shift()));
  out.append(3, '\0');
  AppendLE32(&out, static_cast<uint32_t>(shards_.size()));
  AppendLE64(&out, disk_size_);
  AppendLE64(&out, BlockCount());
  size_t payload_size_at = out.size();
  AppendLE64(&out, 0);  // payload size, patched below
  size_t payload_start = out.size();
  for (const auto& [key, bm] : shards_) {
    size_t n = roaring_bitmap_portable_size_in_bytes(bm.get());
    AppendLE32(&out, key);
    AppendLE32(&out, static_cast<uint32_t>(n));
    size_t at = out.size();
    out.resize(at + n);
    size_t written = roaring_bitmap_portable_serialize(bm.get(), out.data() + at);
    out.resize(at + written);
    StoreLE32(reinterpret_cast<uint8_t*>(out.data()) + at - 4, static_cast<uint32_t>(written));
  }
  StoreLE64(reinterpret_cast<uint8_t*>(out.data()) + payload_size_at,
            out.size() - payload_start);
  AppendLE64(&out, Xxh3_64(out.data(), out.size()));
  return out;
}

Result<ExtentSet> ExtentSet::Deserialize(std::span<const uint8_t> in) {
  const uint8_t* p = in.data();
  const size_t n = in.size();
  if (n < kHeaderSize + kTrailerSize) {
    return Corrupt(0, "truncated: " + std::to_string(n) + " bytes, need at least " +
                          std::to_string(kHeaderSize + kTrailerSize));
  }
  if (std::memcmp(p, kMagic, 8) != 0) return Corrupt(0, "bad magic (not an extent set)");
  uint16_t version = LoadLE16(p + 8);
  if (version != kVersion) {
    return Status::Unsupported("extent set at byte 0x8: version " + std::to_string(version) +
                               " (this reader knows 1)");
  }
  uint16_t header_size = LoadLE16(p + 10);
  if (header_size != kHeaderSize) {
    return Corrupt(10, "header size " + std::to_string(header_size) + " (expected 48)");
  }
  uint64_t payload_size = LoadLE64(p + 40);
  if (payload_size != n - kHeaderSize - kTrailerSize) {
    return Corrupt(40, "payload size " + std::to_string(payload_size) + " does not match " +
                           std::to_string(n - kHeaderSize - kTrailerSize) +
                           " bytes present (truncated or extended)");
  }
  uint64_t stored_sum = LoadLE64(p + n - kTrailerSize);
  uint64_t actual_sum = Xxh3_64(p, n - kTrailerSize);
  if (stored_sum != actual_sum) {
    return Corrupt(n - kTrailerSize, "checksum mismatch (stored " + Hex(stored_sum) +
                                         ", computed " + Hex(actual_sum) + ")");
  }
  uint32_t flags = LoadLE32(p + 12);
  if (flags != 0) {
    return Status::Unsupported("extent set at byte 0xc: unknown incompatible flags " +
                               Hex(flags));
  }
  if (p[17] != 0 || p[18] != 0 || p[19] != 0) return Corrupt(17, "reserved bytes not zero");
  auto g = Granularity::FromShift(p[16]);
  if (!g) return Corrupt(16, g.error().message());
  uint32_t shard_count = LoadLE32(p + 20);
  uint64_t disk_size = LoadLE64(p + 24);
  uint64_t block_count = LoadLE64(p + 32);
  if (disk_size > kMaxDiskSize) return Corrupt(24, "disk size exceeds 2^63");
  ExtentSet set(disk_size, *g);

  size_t pos = kHeaderSize;
  const size_t end = n - kTrailerSize;
  uint64_t total = 0;
  bool have_prev = false;
  uint32_t prev_key = 0;
  for (uint32_t i = 0; i < shard_count; ++i) {
    if (end - pos < kShardHeaderSize) return Corrupt(pos, "shard " + std::to_string(i) + " header truncated");
    uint32_t key = LoadLE32(p + pos);
    uint32_t len = LoadLE32(p + pos + 4);
    if (have_prev && key <= prev_key) return Corrupt(pos, "shard keys not ascending");
    if (set.disk_blocks_ == 0 || (uint64_t{key} << 32) >= set.disk_blocks_) {
      return Corrupt(pos, "shard key " + std::to_string(key) + " lies past the disk's " +
                              std::to_string(set.disk_blocks_) + " blocks");
    }
    pos += kShardHeaderSize;
    if (len > end - pos) return Corrupt(pos - 4, "shard length " + std::to_string(len) + " passes the end");
    const char* data = reinterpret_cast<const char*>(p + pos);
    if (roaring_bitmap_portable_deserialize_size(data, len) != len) {
      return Corrupt(pos, "shard " + std::to_string(i) + " is not a valid Roaring bitmap of " +
                              std::to_string(len) + " bytes");
    }
    roaring_bitmap_t* bm = roaring_bitmap_portable_deserialize_safe(data, len);
    if (bm == nullptr) return Corrupt(pos, "shard " + std::to_string(i) + " fails to decode");
    internal::Bitmap32 owned(bm);
    if (roaring_bitmap_is_empty(bm)) return Corrupt(pos, "shard " + std::to_string(i) + " is empty");
    uint64_t max_block = (uint64_t{key} << 32) | roaring_bitmap_maximum(bm);
    if (max_block >= set.disk_blocks_) {
      return Corrupt(pos, "block " + std::to_string(max_block) + " lies past the disk's " +
                              std::to_string(set.disk_blocks_) + " blocks");
    }
    total += roaring_bitmap_get_cardinality(bm);
    set.shards_.emplace(key, std::move(owned));
    pos += len;
    prev_key = key;
    have_prev = true;
  }
  if (pos != end) return Corrupt(pos, std::to_string(end - pos) + " stray bytes after the last shard");
  if (total != block_count) {
    return Corrupt(32, "block count " + std::to_string(block_count) + " but shards hold " +
                           std::to_string(total));
  }
  return set;
}

}  // namespace strata
