// Codecs for docs/formats/tracker-state.md (section numbers cited inline).
#include "engine/tracker/state_format.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "strata/checksum.h"
#include "extents/endian.h"
#include "strata/units.h"

namespace strata::tracker_internal {

namespace {
Status Corrupt(const std::string& file, uint64_t offset, const std::string& what) {
  return Status::Corruption(file + ": " + what + " at byte " + Hex(offset));
}
}  // namespace

std::string EncodeManifest(const Manifest& m) {
  std::string out;
  bool has_uuid = false;
  for (uint8_t b : m.uuid) has_uuid |= b != 0;
  out.append(kManifestMagic, 8);
  AppendLE16(&out, kManifestVersion);
  AppendLE16(&out, has_uuid ? kManifestHeaderSizeUuid : kManifestHeaderSize);
  AppendLE32(&out, 0);  // incompatible features
  AppendLE32(&out, has_uuid ? kCompatUuid : 0);  // compatible features
  out.push_back(static_cast<char>(m.granularity_shift));
  out.push_back(static_cast<char>(m.intent_region_shift));
  out.push_back(static_cast<char>(m.flags));
  out.push_back(0);
  AppendLE64(&out, m.disk_size);
  AppendLE64(&out, m.next_id);
  AppendLE64(&out, m.intent_floor);
  AppendLE64(&out, m.active_file_id);
  AppendLE32(&out, static_cast<uint32_t>(m.checkpoints.size()));
  AppendLE32(&out, 0);
  if (has_uuid) out.append(reinterpret_cast<const char*>(m.uuid.data()), m.uuid.size());
  for (const ManifestEntry& e : m.checkpoints) {
    AppendLE64(&out, e.checkpoint_id);
    AppendLE64(&out, e.gen_file_id);
    AppendLE64(&out, static_cast<uint64_t>(e.created_unix_ns));
    AppendLE64(&out, e.changed_bytes);
    AppendLE32(&out, e.flags);
    AppendLE32(&out, static_cast<uint32_t>(e.name.size()));
    out.append(e.name);
  }
  AppendLE64(&out, Xxh3_64(out.data(), out.size()));
  return out;
}

Result<Manifest> DecodeManifest(std::span<const uint8_t> in, const std::string& file) {
  const uint8_t* p = in.data();
  const uint64_t n = in.size();
  if (n < kManifestHeaderSize + 8) {
    return Corrupt(file, 0, "manifest truncated (" + std::to_string(n) + " bytes, need at least " +
                                std::to_string(kManifestHeaderSize + 8) + ")");
  }
  if (std::memcmp(p, kManifestMagic, 8) != 0) return Corrupt(file, 0, "bad manifest magic");
  uint16_t version = LoadLE16(p + 8);
  if (version > kManifestVersion) {
    return Status::Unsupported(file + ": manifest version " + std::to_string(version) +
                               " is newer than this reader (" +
                               std::to_string(kManifestVersion) + ")");
  }
  if (version == 0) return Corrupt(file, 8, "manifest version 0");
  uint16_t header_size = LoadLE16(p + 10);
  if (header_size < kManifestHeaderSize || header_size > n - 8) {
    return Corrupt(file, 10, "bad manifest header size " + std::to_string(header_size));
  }
  // The checksum comes first: a flipped byte anywhere is reported as such.
  uint64_t want = LoadLE64(p + n - 8);
  uint64_t got = Xxh3_64(p, n - 8);
  if (want != got) {
    return Corrupt(file, n - 8, "manifest checksum mismatch (stored " + Hex(want) +
                                    ", computed " + Hex(got) + ")");
  }
  uint32_t incompat = LoadLE32(p + 12);
  if (incompat != 0) {
    return Status::Unsupported(file + ": unknown incompatible manifest features " + Hex(incompat));
  }
  Manifest m;
  if ((LoadLE32(p + 16) & kCompatUuid) && header_size >= kManifestHeaderSizeUuid) {
    std::memcpy(m.uuid.data(), p + kManifestHeaderSize, 16);
  }
  m.granularity_shift = p[20];
  m.intent_region_shift = p[21];
  m.flags = p[22];
  m.disk_size = LoadLE64(p + 24);
  m.next_id = LoadLE64(p + 32);
  m.intent_floor = LoadLE64(p + 40);
  m.active_file_id = LoadLE64(p + 48);
  uint32_t count = LoadLE32(p + 56);
  if (m.granularity_shift < Granularity::kMinShift || m.granularity_shift > Granularity::kMaxShift) {
    return Corrupt(file, 20, "bad granularity shift " + std::to_string(m.granularity_shift));
  }
  if (m.intent_region_shift < m.granularity_shift || m.intent_region_shift > 40) {
    return Corrupt(file, 21, "bad intent region shift " + std::to_string(m.intent_region_shift));
  }
  if (m.disk_size > kMaxDiskSize) return Corrupt(file, 24, "disk size " + Hex(m.disk_size) + " too large");
  if (m.active_file_id >= m.next_id && m.active_file_id != 0) {
    return Corrupt(file, 48, "active file id " + Hex(m.active_file_id) + " not below next id");
  }
  if (count > kMaxCheckpoints) return Corrupt(file, 56, "checkpoint count " + std::to_string(count) + " too large");
  uint64_t at = header_size;
  const uint64_t end = n - 8;
  m.checkpoints.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    if (end - at < kManifestEntryFixedSize) {
      return Corrupt(file, at, "checkpoint entry " + std::to_string(i) + " truncated");
    }
    ManifestEntry e;
    e.checkpoint_id = LoadLE64(p + at);
    e.gen_file_id = LoadLE64(p + at + 8);
    e.created_unix_ns = static_cast<int64_t>(LoadLE64(p + at + 16));
    e.changed_bytes = LoadLE64(p + at + 24);
    e.flags = LoadLE32(p + at + 32);
    uint32_t len = LoadLE32(p + at + 36);
    if (len == 0 || len > kMaxCheckpointName || end - at - kManifestEntryFixedSize < len) {
      return Corrupt(file, at + 36, "checkpoint entry " + std::to_string(i) + " bad name length " +
                                        std::to_string(len));
    }
    if (e.checkpoint_id == 0 || e.checkpoint_id >= m.next_id ||
        (i > 0 && e.checkpoint_id <= m.checkpoints.back().checkpoint_id)) {
      return Corrupt(file, at, "checkpoint entry " + std::to_string(i) + " bad id " +
                                   std::to_string(e.checkpoint_id));
    }
    if (e.gen_file_id >= m.next_id) {
      return Corrupt(file, at + 8, "checkpoint entry " + std::to_string(i) + " bad file id");
    }
    if (e.changed_bytes > m.disk_size) {
      return Corrupt(file, at + 24, "checkpoint entry " + std::to_string(i) + " changed bytes past disk size");
    }
    e.name.assign(reinterpret_cast<const char*>(p + at + kManifestEntryFixedSize), len);
    for (const ManifestEntry& prev : m.checkpoints) {
      if (prev.name == e.name) return Corrupt(file, at, "duplicate checkpoint name '" + e.name + "'");
    }
    at += kManifestEntryFixedSize + len;
    m.checkpoints.push_back(std::move(e));
  }
  if (at != end) return Corrupt(file, at, "trailing bytes after checkpoint entries");
  return m;
}

// ---------------------------------------------------------------------------
// §4: intent log, version 2.

uint64_t IntentRegionCount(uint64_t disk_size, uint32_t shift) {
  return (disk_size >> shift) + ((disk_size & ((uint64_t{1} << shift) - 1)) != 0);
}

uint64_t IntentMaxCapacity(uint64_t disk_size, uint32_t shift) {
  return std::max<uint64_t>(2, 1 + IntentRegionCount(disk_size, shift));
}

std::vector<uint8_t> EncodeIntentHeader(const IntentHeader& h) {
  std::vector<uint8_t> out(kIntentSectorSize, 0);
  std::memcpy(out.data(), kIntentMagic, 8);
  StoreLE16(out.data() + 8, kIntentVersion);
  StoreLE16(out.data() + 10, static_cast<uint16_t>(kIntentSectorSize));
  StoreLE32(out.data() + 12, 0);  // incompatible features
  out[16] = h.region_shift;
  StoreLE64(out.data() + 24, h.epoch);
  StoreLE64(out.data() + 32, h.disk_size);
  StoreLE64(out.data() + 40, h.capacity);
  StoreLE64(out.data() + 504, Xxh3_64(out.data(), 504));
  return out;
}

namespace {

// XXH3-64 of LE64(epoch) || sector bytes 0..503 (§4.3): binds a commit to
// its log, so the bytes of another log's sector never validate here.
uint64_t SectorCheck(uint64_t epoch, const uint8_t* sector) {
  uint8_t b[8 + 504];
  StoreLE64(b, epoch);
  std::memcpy(b + 8, sector, 504);
  return Xxh3_64(b, sizeof b);
}

bool AllZero(std::span<const uint8_t> b) {
  for (uint8_t x : b) {
    if (x != 0) return false;
  }
  return true;
}

}  // namespace

void EncodeIntentSector(uint64_t epoch, uint64_t seq, std::span<const IntentRange> ranges,
                        uint8_t out[kIntentSectorSize]) {
  std::memset(out, 0, kIntentSectorSize);
  StoreLE64(out, seq);
  StoreLE16(out + 8, static_cast<uint16_t>(ranges.size()));
  uint8_t* e = out + 16;
  for (const IntentRange& r : ranges) {
    StoreLE64(e, r.first);
    StoreLE32(e + 8, r.count);
    e += kIntentEntrySize;
  }
  StoreLE64(out + 504, SectorCheck(epoch, out));
}

IntentLogDecoder::IntentLogDecoder(IntentLogContents c, uint64_t size, std::string file)
    : c_(std::move(c)), file_size_(size),
      regions_(IntentRegionCount(c_.header.disk_size, c_.header.region_shift)), file_(std::move(file)) {}

Result<IntentLogDecoder> IntentLogDecoder::Start(std::span<const uint8_t> in, uint64_t size,
                                                 const std::string& file) {
  const uint8_t* p = in.data();
  // A log is published (renamed into place) only after its header and its
  // whole capacity are durable (§4.4), so every defect below is damage.
  if (in.size() < 10 || std::memcmp(p, kIntentMagic, 8) != 0) {
    return Corrupt(file, 0, "bad intent log magic (" + std::to_string(size) + "-byte file)");
  }
  const uint16_t version = LoadLE16(p + 8);
  if (version != kIntentVersion) {
    return Status::Unsupported(file + ": intent log version " + std::to_string(version) +
                               (version == 1 ? " cannot tell a torn record from a damaged one"
                                             : " is not known to this reader"));
  }
  if (size < kIntentSectorSize || in.size() < kIntentSectorSize) {
    return Corrupt(file, size, "intent log truncated (" + std::to_string(size) +
                                   " bytes, shorter than its 512-byte header)");
  }
  const uint64_t want = LoadLE64(p + 504), got = Xxh3_64(p, 504);
  if (want != got) {
    return Corrupt(file, 504, "intent log header checksum mismatch (stored " + Hex(want) + ", computed " +
                                  Hex(got) + ")");
  }
  if (LoadLE16(p + 10) != kIntentSectorSize) return Corrupt(file, 10, "bad intent log header size");
  if (LoadLE32(p + 12) != 0) {
    return Status::Unsupported(file + ": unknown incompatible intent log features " + Hex(LoadLE32(p + 12)));
  }
  IntentLogContents c;
  c.header.region_shift = p[16];
  c.header.epoch = LoadLE64(p + 24);
  c.header.disk_size = LoadLE64(p + 32);
  c.header.capacity = LoadLE64(p + 40);
  if (c.header.region_shift < Granularity::kMinShift || c.header.region_shift > 40) {
    return Corrupt(file, 16, "bad intent region shift " + std::to_string(c.header.region_shift));
  }
  if (c.header.disk_size > kMaxDiskSize) return Corrupt(file, 32, "bad disk size");
  const uint64_t max_cap = IntentMaxCapacity(c.header.disk_size, c.header.region_shift);
  if (c.header.capacity < 2 || c.header.capacity > max_cap) {
    return Corrupt(file, 40, "bad intent log capacity " + std::to_string(c.header.capacity) + " sectors");
  }
  if (size / kIntentSectorSize < c.header.capacity) {
    return Corrupt(file, size, "intent log truncated (" + std::to_string(size) + " bytes, its header records " +
                                   std::to_string(c.header.capacity * kIntentSectorSize) + ")");
  }
  return IntentLogDecoder(std::move(c), size, file);
}

Status IntentLogDecoder::Feed(uint64_t offset, std::span<const uint8_t> bytes) {
  if (offset != next_) return Corrupt(file_, offset, "intent log read out of order");
  const uint64_t cap_end = c_.header.capacity * kIntentSectorSize;
  for (size_t at = 0; at < bytes.size(); at += kIntentSectorSize) {
    const uint64_t off = offset + at;
    std::span<const uint8_t> sec = bytes.subspan(at, std::min<size_t>(kIntentSectorSize, bytes.size() - at));
    if (off >= cap_end) {
      // Zeros past the capacity are an extension whose header update a
      // crash cut off (§4.4); records are never written there.
      if (!AllZero(sec)) return Corrupt(file_, off, "non-zero bytes past the intent log's recorded capacity");
      continue;
    }
    if (AllZero(sec)) {  // never written
      if (first_zero_ == 0) first_zero_ = off;
      continue;
    }
    const uint64_t seq = off / kIntentSectorSize;
    const uint8_t* p = sec.data();
    const uint32_t n = LoadLE16(p + 8);
    bool ok = sec.size() == kIntentSectorSize && LoadLE64(p + 504) == SectorCheck(c_.header.epoch, p) &&
              LoadLE64(p) == seq && n >= 1 && n <= kIntentSectorEntries;
    std::vector<IntentRange> got;
    for (uint32_t i = 0; ok && i < n; ++i) {
      IntentRange r{LoadLE64(p + 16 + i * kIntentEntrySize), LoadLE32(p + 16 + i * kIntentEntrySize + 8)};
      ok = r.count >= 1 && r.first < regions_ && r.count <= regions_ - r.first;
      got.push_back(r);
    }
    if (!ok) {
      return Corrupt(file_, off, "damaged intent record sector " + std::to_string(seq) +
                                     " (neither a valid commit nor never written)");
    }
    if (first_zero_ != 0) {
      return Corrupt(file_, first_zero_, "zeroed intent record sector before the valid commit at " + Hex(off));
    }
    c_.ranges.insert(c_.ranges.end(), got.begin(), got.end());
    ++c_.commits;
  }
  next_ = offset + bytes.size();
  return Status::Ok();
}

Result<IntentLogContents> IntentLogDecoder::Finish() {
  if (next_ < file_size_) return Corrupt(file_, next_, "intent log not read to its end");
  return std::move(c_);
}

Result<IntentLogContents> DecodeIntentLog(std::span<const uint8_t> in, const std::string& file) {
  STRATA_ASSIGN_OR_RETURN(IntentLogDecoder d,
                          IntentLogDecoder::Start(in.first(std::min<size_t>(in.size(), kIntentSectorSize)),
                                                  in.size(), file));
  if (in.size() > kIntentSectorSize) STRATA_RETURN_IF_ERROR(d.Feed(kIntentSectorSize, in.subspan(kIntentSectorSize)));
  return d.Finish();
}

std::string GenFileName(uint64_t id) {
  char b[40];
  std::snprintf(b, sizeof b, "gen-%016" PRIx64 ".xset", id);
  return b;
}
std::string ActiveFileName(uint64_t id) {
  char b[40];
  std::snprintf(b, sizeof b, "active-%016" PRIx64 ".xset", id);
  return b;
}
std::string IntentFileName(uint64_t epoch) {
  char b[40];
  std::snprintf(b, sizeof b, "intent-%016" PRIx64 ".log", epoch);
  return b;
}

bool ParseIdFileName(const std::string& name, const std::string& prefix, const std::string& suffix,
                     uint64_t* id) {
  if (name.size() != prefix.size() + 16 + suffix.size()) return false;
  if (name.compare(0, prefix.size(), prefix) != 0) return false;
  if (name.compare(prefix.size() + 16, suffix.size(), suffix) != 0) return false;
  uint64_t v = 0;
  for (size_t i = prefix.size(); i < prefix.size() + 16; ++i) {
    char ch = name[i];
    int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
    if (d < 0) return false;
    v = v << 4 | static_cast<uint64_t>(d);
  }
  *id = v;
  return true;
}

bool IsOwnTemporaryName(const std::string& name) {
  const size_t at = name.find(".tmp.");
  if (at == std::string::npos) return false;
  const std::string base = name.substr(0, at), tail = name.substr(at + 5);
  uint64_t id;
  if (base != "MANIFEST" && !ParseIdFileName(base, "gen-", ".xset", &id) &&
      !ParseIdFileName(base, "active-", ".xset", &id) && !ParseIdFileName(base, "intent-", ".log", &id)) {
    return false;
  }
  auto all_of = [](const std::string& t, bool hex) {
    if (t.empty()) return false;
    for (char c : t) {
      if (!(c >= '0' && c <= '9') && !(hex && c >= 'a' && c <= 'f')) return false;
    }
    return true;
  };
  if (tail.size() == 12 && all_of(tail, true)) return true;
  const size_t dot = tail.find('.');
  return dot != std::string::npos && all_of(tail.substr(0, dot), false) &&
         all_of(tail.substr(dot + 1), false);
}

}  // namespace strata::tracker_internal
