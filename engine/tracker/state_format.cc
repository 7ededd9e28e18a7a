// Codecs for docs/formats/tracker-state.md (section numbers cited inline).
#include "engine/tracker/state_format.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "extents/checksum.h"
#include "extents/endian.h"
#include "extents/units.h"

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

std::string EncodeIntentHeader(const IntentHeader& h) {
  std::string out;
  out.append(kIntentMagic, 8);
  AppendLE16(&out, kIntentVersion);
  AppendLE16(&out, kIntentHeaderSize);
  AppendLE32(&out, 0);
  out.push_back(static_cast<char>(h.region_shift));
  out.append(7, '\0');
  AppendLE64(&out, h.epoch);
  AppendLE64(&out, h.disk_size);
  AppendLE64(&out, Xxh3_64(out.data(), out.size()));
  return out;
}

namespace {
uint64_t RecordCheck(uint64_t epoch, uint64_t region) {
  uint8_t b[16];
  StoreLE64(b, epoch);
  StoreLE64(b + 8, region);
  return Xxh3_64(b, sizeof b);
}
}  // namespace

void EncodeIntentRecord(uint64_t epoch, uint64_t region, uint8_t out[kIntentRecordSize]) {
  StoreLE64(out, region);
  StoreLE64(out + 8, RecordCheck(epoch, region));
}

Result<IntentLogContents> DecodeIntentLog(std::span<const uint8_t> in, const std::string& file) {
  const uint8_t* p = in.data();
  const uint64_t n = in.size();
  // The header is written and fsynced (and the directory fsynced) before
  // any mark depends on the log (§4.3). A crash before that leaves a short
  // file, or a header-sized one whose bytes never reached the disk: such a
  // log was never in use and holds nothing.
  IntentLogContents unused;
  unused.torn_tail_bytes = n;
  if (n < kIntentHeaderSize) return unused;
  bool header_ok = std::memcmp(p, kIntentMagic, 8) == 0 && LoadLE64(p + 40) == Xxh3_64(p, 40);
  if (!header_ok && n == kIntentHeaderSize) return unused;
  if (std::memcmp(p, kIntentMagic, 8) != 0) return Corrupt(file, 0, "bad intent log magic");
  uint64_t want = LoadLE64(p + 40), got = Xxh3_64(p, 40);
  if (want != got) return Corrupt(file, 40, "intent log header checksum mismatch");
  uint16_t version = LoadLE16(p + 8);
  if (version != kIntentVersion) {
    return Status::Unsupported(file + ": intent log version " + std::to_string(version));
  }
  if (LoadLE16(p + 10) != kIntentHeaderSize) return Corrupt(file, 10, "bad intent log header size");
  if (LoadLE32(p + 12) != 0) return Status::Unsupported(file + ": unknown intent log features");
  IntentLogContents c;
  c.header.region_shift = p[16];
  c.header.epoch = LoadLE64(p + 24);
  c.header.disk_size = LoadLE64(p + 32);
  if (c.header.region_shift < Granularity::kMinShift || c.header.region_shift > 40) {
    return Corrupt(file, 16, "bad intent region shift " + std::to_string(c.header.region_shift));
  }
  if (c.header.disk_size > kMaxDiskSize) return Corrupt(file, 32, "bad disk size");
  uint64_t regions = (c.header.disk_size >> c.header.region_shift) +
                     ((c.header.disk_size & ((uint64_t{1} << c.header.region_shift) - 1)) != 0);
  uint64_t at = kIntentHeaderSize;
  uint64_t first_bad = 0;
  bool have_bad = false;
  for (; at + kIntentRecordSize <= n; at += kIntentRecordSize) {
    uint64_t region = LoadLE64(p + at);
    bool ok = LoadLE64(p + at + 8) == RecordCheck(c.header.epoch, region) && region < regions;
    if (!ok) {
      if (!have_bad) first_bad = at;
      have_bad = true;
      continue;
    }
    if (have_bad) {
      return Corrupt(file, first_bad, "bad intent record followed by a valid one");
    }
    c.regions.push_back(region);
  }
  uint64_t valid_end = have_bad ? first_bad : at;
  c.torn_tail_bytes = n - valid_end;
  return c;
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
