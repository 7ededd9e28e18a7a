#include "strata/archive_format.h"

#include <cstring>

#include "extents/endian.h"
#include "strata/units.h"

namespace strata {

namespace {
constexpr char kHeaderMagic[8] = {'S', 'T', 'R', 'A', 'T', 'A', 'A', 'R'};
constexpr char kFooterMagic[8] = {'S', 'T', 'R', 'A', 'T', 'A', 'F', 'T'};
constexpr char kIndexMagic[8] = {'S', 'T', 'R', 'A', 'T', 'A', 'I', 'X'};
constexpr size_t kFixedHeaderV1 = 96;   // fields before the names (§3)
constexpr size_t kFixedHeaderV2 = 184;  // §3.2
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
    case SourceKind::kReflink: return "reflink";
  }
  return "unknown";
}

Result<ArchiveId> IdFromHex(const std::string& hex) {
  auto id = Id128FromHex(hex);
  if (!id) return Status::InvalidArgument("'" + hex + "' is not a backup id (32 hex digits)");
  return *id;
}

const char* DiskFormatName(DiskFormat f) {
  switch (f) {
    case DiskFormat::kUnknown: return "unknown";
    case DiskFormat::kRaw: return "raw";
    case DiskFormat::kQcow2: return "qcow2";
  }
  return "unknown";
}

const char* PointKindName(PointKind k) {
  switch (k) {
    case PointKind::kNone: return "none";
    case PointKind::kTracker: return "tracker";
    case PointKind::kQcow2Bitmap: return "qcow2-bitmap";
    case PointKind::kQcow2Snapshot: return "qcow2-snapshot";
    case PointKind::kReflinkClone: return "reflink-clone";
  }
  return "unknown";
}

std::string ChainPoint::Describe() const {
  switch (kind) {
    case PointKind::kNone: return "no point";
    case PointKind::kTracker:
      return "checkpoint '" + name + "' (#" + std::to_string(seq) + ") of tracker " +
             Id128ToHex(source).substr(0, 8);
    case PointKind::kQcow2Bitmap: return "qcow2 bitmap '" + name + "'";
    case PointKind::kQcow2Snapshot: return "internal snapshot '" + name + "'";
    case PointKind::kReflinkClone: return "reflink clone " + name;
  }
  return "point of unknown kind " + std::to_string(static_cast<int>(kind));
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
  const size_t names = h.source_name.size() + h.disk_name.size() + h.start.name.size() +
                       h.end.name.size();
  const uint64_t size = Align8(kFixedHeaderV2 + names) + 8;
  std::string out(size, '\0');
  uint8_t* p = reinterpret_cast<uint8_t*>(out.data());
  std::memcpy(p, kHeaderMagic, 8);
  StoreLE16(p + 8, kArchiveVersion);
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
  // §3.2
  std::memcpy(p + 96, h.disk_id.data(), 16);
  StoreLE64(p + 112, h.content_unix_ns);
  p[120] = static_cast<uint8_t>(h.disk_format);
  p[121] = static_cast<uint8_t>((h.quiesced ? 1 : 0) | (h.merged ? 2 : 0));
  p[122] = static_cast<uint8_t>(h.start.kind);
  p[123] = static_cast<uint8_t>(h.end.kind);
  StoreLE16(p + 124, static_cast<uint16_t>(h.disk_name.size()));
  StoreLE16(p + 126, static_cast<uint16_t>(h.start.name.size()));
  StoreLE16(p + 128, static_cast<uint16_t>(h.end.name.size()));
  std::memcpy(p + 136, h.start.source.data(), 16);
  StoreLE64(p + 152, h.start.seq);
  std::memcpy(p + 160, h.end.source.data(), 16);
  StoreLE64(p + 176, h.end.seq);
  size_t at = kFixedHeaderV2;
  for (const std::string* n : {&h.source_name, &h.disk_name, &h.start.name, &h.end.name}) {
    std::memcpy(p + at, n->data(), n->size());
    at += n->size();
  }
  StoreLE64(p + size - 8, Xxh3_64(p, size - 8));
  return out;
}

Result<ArchiveHeader> DecodeHeader(std::span<const uint8_t> b, const std::string& file,
                                   uint64_t* header_size, uint64_t* header_checksum) {
  if (b.size() < kFixedHeaderV1 + 8) return Corrupt(file, 0, "truncated header");
  const uint8_t* p = b.data();
  if (std::memcmp(p, kHeaderMagic, 8) != 0) return Corrupt(file, 0, "bad magic (not a strata archive)");
  uint16_t version = LoadLE16(p + 8);
  if (version != 1 && version != 2) {
    return Status::Unsupported(file + ": archive version " + std::to_string(version) +
                               " (this reader knows 1 and 2)");
  }
  const size_t fixed = version == 1 ? kFixedHeaderV1 : kFixedHeaderV2;
  uint64_t size = LoadLE16(p + 10);
  if (size < fixed + 8 || size % 8 != 0 || size > b.size()) {
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
  h.version = version;
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
  if (p[75] > kMaxSourceKind) return Corrupt(file, 75, "unknown source kind");
  if (h.chunk_size < kMinChunk || h.chunk_size > kMaxChunk) return Corrupt(file, 76, "chunk size");
  if (name_len > kMaxSourceName) return Corrupt(file, 88, "source name length " + std::to_string(name_len));
  if (IsNullId(h.parent_id) && h.parent_identity != 0) {
    return Corrupt(file, 56, "parent checksum without a parent");
  }
  if (version == 1) {
    if (Align8(kFixedHeaderV1 + name_len) + 8 != size) {
      return Corrupt(file, 88, "source name length " + std::to_string(name_len));
    }
    h.source_name.assign(reinterpret_cast<const char*>(p + kFixedHeaderV1), name_len);
    h.content_unix_ns = h.created_unix_ns;
  } else {
    std::memcpy(h.disk_id.data(), p + 96, 16);
    h.content_unix_ns = LoadLE64(p + 112);
    if (p[120] > kMaxDiskFormat) return Corrupt(file, 120, "unknown disk format " + std::to_string(p[120]));
    h.disk_format = static_cast<DiskFormat>(p[120]);
    if (p[121] > 3) return Corrupt(file, 121, "unknown flags " + Hex(p[121]));
    h.quiesced = p[121] & 1;
    h.merged = p[121] & 2;
    if (p[122] > kMaxPointKind) return Corrupt(file, 122, "unknown start point kind");
    if (p[123] > kMaxPointKind) return Corrupt(file, 123, "unknown end point kind");
    h.start.kind = static_cast<PointKind>(p[122]);
    h.end.kind = static_cast<PointKind>(p[123]);
    uint16_t disk_len = LoadLE16(p + 124), start_len = LoadLE16(p + 126), end_len = LoadLE16(p + 128);
    for (int i = 130; i < 136; ++i) {
      if (p[i] != 0) return Corrupt(file, static_cast<uint64_t>(i), "reserved bytes not zero");
    }
    if (disk_len > kMaxPointName || start_len > kMaxPointName || end_len > kMaxPointName ||
        Align8(kFixedHeaderV2 + name_len + disk_len + start_len + end_len) + 8 != size) {
      return Corrupt(file, 124, "name lengths do not match the header size");
    }
    std::memcpy(h.start.source.data(), p + 136, 16);
    h.start.seq = LoadLE64(p + 152);
    std::memcpy(h.end.source.data(), p + 160, 16);
    h.end.seq = LoadLE64(p + 176);
    const char* names = reinterpret_cast<const char*>(p + kFixedHeaderV2);
    h.source_name.assign(names, name_len);
    h.disk_name.assign(names + name_len, disk_len);
    h.start.name.assign(names + name_len + disk_len, start_len);
    h.end.name.assign(names + name_len + disk_len + start_len, end_len);
    if (h.is_full() && !h.start.is_none()) return Corrupt(file, 122, "a full backup with a start point");
    // Padding after the names is zero (every byte has a meaning or is zero).
    for (uint64_t i = kFixedHeaderV2 + name_len + disk_len + start_len + end_len; i < size - 8; ++i) {
      if (p[i] != 0) return Corrupt(file, i, "header padding not zero");
    }
  }
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
