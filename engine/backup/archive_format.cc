#include "engine/backup/archive_format.h"

#include <cstring>
#include <random>

#include "extents/endian.h"
#include "extents/units.h"

namespace strata {

namespace {
constexpr char kHeaderMagic[8] = {'S', 'T', 'R', 'A', 'T', 'A', 'A', 'R'};
constexpr char kFooterMagic[8] = {'S', 'T', 'R', 'A', 'T', 'A', 'F', 'T'};
constexpr char kIndexMagic[8] = {'S', 'T', 'R', 'A', 'T', 'A', 'I', 'X'};
constexpr uint16_t kVersion = 1;
constexpr size_t kFixedHeader = 96;  // fields before the source name
constexpr size_t kMaxSourceName = 1023;
constexpr uint32_t kMinChunk = 4096, kMaxChunk = 64u << 20;

Status Corrupt(const std::string& file, uint64_t offset, const std::string& what) {
  return Status::Corruption(file + ": archive " + what + " at byte " + Hex(offset));
}
uint64_t Align8(uint64_t v) { return (v + 7) & ~uint64_t{7}; }
}  // namespace

const char* SourceKindName(SourceKind k) {
  switch (k) {
    case SourceKind::kFull: return "full";
    case SourceKind::kBitmap: return "bitmap";
    case SourceKind::kSnapshot: return "snapshot";
    case SourceKind::kTracker: return "tracker";
    case SourceKind::kScan: return "scan";
    case SourceKind::kMerge: return "merge";
  }
  return "unknown";
}

std::string IdToHex(const ArchiveId& id) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (uint8_t b : id) {
    s += d[b >> 4];
    s += d[b & 15];
  }
  return s;
}

Result<ArchiveId> IdFromHex(const std::string& hex) {
  ArchiveId id{};
  if (hex.size() != 32) return Status::InvalidArgument("'" + hex + "' is not a backup id (32 hex digits)");
  for (size_t i = 0; i < 32; ++i) {
    char c = hex[i];
    int v = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    if (v < 0) return Status::InvalidArgument("'" + hex + "' is not a backup id (32 hex digits)");
    id[i / 2] = static_cast<uint8_t>(id[i / 2] << 4 | v);
  }
  return id;
}

ArchiveId NewArchiveId() {
  std::random_device rd;
  ArchiveId id;
  for (size_t i = 0; i < id.size(); i += 4) {
    uint32_t v = rd();
    std::memcpy(id.data() + i, &v, 4);
  }
  return id;
}

uint64_t IdentityCheck(const ArchiveHeader& h) {
  uint8_t b[33];
  std::memcpy(b, h.id.data(), 16);
  StoreLE64(b + 16, h.created_unix_ns);
  StoreLE64(b + 24, h.disk_size);
  b[32] = static_cast<uint8_t>(h.granularity_shift);
  return Xxh3_64(b, sizeof b);
}

// ---- header (§3) ----

std::string EncodeHeader(const ArchiveHeader& h) {
  const uint64_t size = Align8(kFixedHeader + h.source_name.size()) + 8;
  std::string out(size, '\0');
  uint8_t* p = reinterpret_cast<uint8_t*>(out.data());
  std::memcpy(p, kHeaderMagic, 8);
  StoreLE16(p + 8, kVersion);
  StoreLE16(p + 10, static_cast<uint16_t>(size));
  StoreLE32(p + 12, 0);  // incompatible flags
  StoreLE32(p + 16, 0);  // compatible flags
  std::memcpy(p + 24, h.id.data(), 16);
  std::memcpy(p + 40, h.parent_id.data(), 16);
  StoreLE64(p + 56, h.parent_identity);
  StoreLE64(p + 64, h.disk_size);
  p[72] = static_cast<uint8_t>(h.granularity_shift);
  p[73] = h.compression;
  p[74] = static_cast<uint8_t>(h.level);
  p[75] = static_cast<uint8_t>(h.source);
  StoreLE32(p + 76, h.chunk_size);
  StoreLE64(p + 80, h.created_unix_ns);
  StoreLE16(p + 88, static_cast<uint16_t>(h.source_name.size()));
  std::memcpy(p + kFixedHeader, h.source_name.data(), h.source_name.size());
  StoreLE64(p + size - 8, Xxh3_64(p, size - 8));
  return out;
}

Result<ArchiveHeader> DecodeHeader(std::span<const uint8_t> b, const std::string& file,
                                   uint64_t* header_size, uint64_t* header_checksum) {
  if (b.size() < kFixedHeader + 8) return Corrupt(file, 0, "truncated header");
  const uint8_t* p = b.data();
  if (std::memcmp(p, kHeaderMagic, 8) != 0) return Corrupt(file, 0, "bad magic (not a strata archive)");
  uint16_t version = LoadLE16(p + 8);
  if (version != kVersion) {
    return Status::Unsupported(file + ": archive version " + std::to_string(version) +
                               " (this reader knows 1)");
  }
  uint64_t size = LoadLE16(p + 10);
  if (size < kFixedHeader + 8 || size % 8 != 0 || size > b.size()) {
    return Corrupt(file, 10, "header size " + std::to_string(size));
  }
  uint64_t stored = LoadLE64(p + size - 8);
  if (stored != Xxh3_64(p, size - 8)) return Corrupt(file, size - 8, "header checksum mismatch");
  if (uint32_t f = LoadLE32(p + 12); f != 0) {
    return Status::Unsupported(file + ": archive uses unknown incompatible features " + Hex(f));
  }
  // Reserved bytes (§3) must be zero.
  if (LoadLE32(p + 20) != 0) return Corrupt(file, 20, "reserved bytes not zero");
  for (int i = 90; i < 96; ++i) {
    if (p[i] != 0) return Corrupt(file, static_cast<uint64_t>(i), "reserved bytes not zero");
  }
  ArchiveHeader h;
  std::memcpy(h.id.data(), p + 24, 16);
  std::memcpy(h.parent_id.data(), p + 40, 16);
  h.parent_identity = LoadLE64(p + 56);
  h.disk_size = LoadLE64(p + 64);
  h.granularity_shift = p[72];
  h.compression = p[73];
  h.level = static_cast<int8_t>(p[74]);
  h.source = static_cast<SourceKind>(p[75]);
  h.chunk_size = LoadLE32(p + 76);
  h.created_unix_ns = LoadLE64(p + 80);
  uint16_t name_len = LoadLE16(p + 88);
  if (h.disk_size > kMaxDiskSize) return Corrupt(file, 64, "disk size beyond 2^63");
  if (!Granularity::FromShift(h.granularity_shift).has_value()) {
    return Corrupt(file, 72, "granularity shift " + std::to_string(h.granularity_shift));
  }
  if (h.compression != 1) return Status::Unsupported(file + ": unknown compression " + std::to_string(h.compression));
  if (p[75] > static_cast<uint8_t>(SourceKind::kMerge)) return Corrupt(file, 75, "unknown source kind");
  if (h.chunk_size < kMinChunk || h.chunk_size > kMaxChunk) return Corrupt(file, 76, "chunk size");
  if (name_len > kMaxSourceName || Align8(kFixedHeader + name_len) + 8 != size) {
    return Corrupt(file, 88, "source name length " + std::to_string(name_len));
  }
  if (IsNullId(h.parent_id) && h.parent_identity != 0) {
    return Corrupt(file, 56, "parent checksum without a parent");
  }
  h.source_name.assign(reinterpret_cast<const char*>(p + kFixedHeader), name_len);
  *header_size = size;
  *header_checksum = stored;
  return h;
}

// ---- index (§4) ----

std::string EncodeIndex(const ArchiveIndex& x) {
  std::string out;
  out.append(kIndexMagic, 8);
  AppendLE64(&out, x.frames.size());
  AppendLE64(&out, x.extents.size());
  for (const FrameRecord& f : x.frames) {
    AppendLE64(&out, f.file_offset);
    AppendLE32(&out, f.compressed_size);
    AppendLE32(&out, f.raw_size);
    AppendLE64(&out, f.compressed_xxh3);
  }
  for (const ExtentRecord& e : x.extents) {
    AppendLE64(&out, e.guest_offset);
    AppendLE32(&out, e.length);
    AppendLE32(&out, e.frame);
    AppendLE32(&out, e.offset_in_frame);
    AppendLE32(&out, 0);
    AppendLE64(&out, e.hash.low);
    AppendLE64(&out, e.hash.high);
  }
  return out;
}

Result<ArchiveIndex> DecodeIndex(std::span<const uint8_t> b, const ArchiveHeader& h,
                                 uint64_t data_start, uint64_t data_end,
                                 const std::string& file) {
  // Offsets in messages are file offsets: the index starts at data_end.
  const uint64_t base = data_end;
  if (b.size() < 24 || std::memcmp(b.data(), kIndexMagic, 8) != 0) {
    return Corrupt(file, base, "bad index magic");
  }
  uint64_t nf = LoadLE64(b.data() + 8), ne = LoadLE64(b.data() + 16);
  uint64_t avail = b.size() - 24;
  if (nf > avail / kArchiveFrameRecordSize ||
      ne > (avail - nf * kArchiveFrameRecordSize) / kArchiveExtentRecordSize ||
      nf * kArchiveFrameRecordSize + ne * kArchiveExtentRecordSize != avail) {
    return Corrupt(file, base + 8, "index record counts do not match its size");
  }
  ArchiveIndex x;
  x.frames.resize(nf);
  x.extents.resize(ne);
  const uint8_t* p = b.data() + 24;
  uint64_t expect_offset = data_start;
  for (uint64_t i = 0; i < nf; ++i, p += kArchiveFrameRecordSize) {
    FrameRecord& f = x.frames[i];
    f.file_offset = LoadLE64(p);
    f.compressed_size = LoadLE32(p + 8);
    f.raw_size = LoadLE32(p + 12);
    f.compressed_xxh3 = LoadLE64(p + 16);
    uint64_t at = base + 24 + i * kArchiveFrameRecordSize;
    if (f.file_offset != expect_offset || f.compressed_size == 0 ||
        f.compressed_size > data_end - f.file_offset) {
      return Corrupt(file, at, "frame " + std::to_string(i) + " lies outside the data area");
    }
    if (f.raw_size == 0 || f.raw_size > h.chunk_size) {
      return Corrupt(file, at, "frame " + std::to_string(i) + " size " + std::to_string(f.raw_size));
    }
    expect_offset = f.file_offset + f.compressed_size;
  }
  if (expect_offset != data_end) return Corrupt(file, expect_offset, "unaccounted bytes in the data area");
  uint64_t prev_end = 0;
  for (uint64_t i = 0; i < ne; ++i, p += kArchiveExtentRecordSize) {
    ExtentRecord& e = x.extents[i];
    e.guest_offset = LoadLE64(p);
    e.length = LoadLE32(p + 8);
    e.frame = LoadLE32(p + 12);
    e.offset_in_frame = LoadLE32(p + 16);
    e.hash.low = LoadLE64(p + 24);
    e.hash.high = LoadLE64(p + 32);
    uint64_t at = base + 24 + nf * kArchiveFrameRecordSize + i * kArchiveExtentRecordSize;
    if (LoadLE32(p + 20) != 0) return Corrupt(file, at + 20, "reserved bytes not zero");
    if (e.length == 0 || e.guest_offset < prev_end || e.guest_offset > h.disk_size ||
        e.length > h.disk_size - e.guest_offset) {
      return Corrupt(file, at, "extent " + std::to_string(i) + " out of order or past the disk");
    }
    if (!e.is_zero()) {
      if (e.frame >= nf || e.offset_in_frame > x.frames[e.frame].raw_size ||
          e.length > x.frames[e.frame].raw_size - e.offset_in_frame) {
        return Corrupt(file, at, "extent " + std::to_string(i) + " points outside its frame");
      }
    } else if (e.offset_in_frame != 0) {
      return Corrupt(file, at, "zero extent with a frame offset");
    }
    prev_end = e.guest_offset + e.length;
  }
  return x;
}

// ---- footer (§5) ----

std::string EncodeFooter(const ArchiveFooter& f) {
  std::string out;
  out.append(kFooterMagic, 8);
  AppendLE64(&out, f.index_offset);
  AppendLE64(&out, f.index_size);
  AppendLE64(&out, f.index_checksum);
  AppendLE64(&out, f.header_checksum);
  AppendLE64(&out, Xxh3_64(out.data(), out.size()));
  return out;
}

Result<ArchiveFooter> DecodeFooter(std::span<const uint8_t> b, uint64_t file_size,
                                   const std::string& file) {
  const uint64_t at = file_size - kArchiveFooterSize;
  if (b.size() != kArchiveFooterSize) return Corrupt(file, 0, "truncated (no footer)");
  if (std::memcmp(b.data(), kFooterMagic, 8) != 0) {
    return Corrupt(file, at, "bad footer magic (truncated or unfinished archive)");
  }
  if (LoadLE64(b.data() + 40) != Xxh3_64(b.data(), 40)) return Corrupt(file, at + 40, "footer checksum mismatch");
  ArchiveFooter f;
  f.index_offset = LoadLE64(b.data() + 8);
  f.index_size = LoadLE64(b.data() + 16);
  f.index_checksum = LoadLE64(b.data() + 24);
  f.header_checksum = LoadLE64(b.data() + 32);
  if (f.index_offset > at || f.index_size != at - f.index_offset) {
    return Corrupt(file, at + 8, "index location does not end at the footer");
  }
  return f;
}

}  // namespace strata
