// Pure codecs of the tracker state directory: the MANIFEST and the intent
// log (docs/formats/tracker-state.md). No I/O here: the tracker reads and
// writes the bytes; these functions build and validate them, so every field
// read from disk is range-checked in one place.
#ifndef STRATA_ENGINE_TRACKER_STATE_FORMAT_H_
#define STRATA_ENGINE_TRACKER_STATE_FORMAT_H_

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "strata/status.h"

namespace strata::tracker_internal {

// §3 of docs/formats/tracker-state.md.
inline constexpr char kManifestMagic[8] = {'S', 'T', 'R', 'A', 'T', 'A', 'T', 'M'};
inline constexpr uint16_t kManifestVersion = 1;
inline constexpr uint16_t kManifestHeaderSize = 64;     // without the UUID (version 1 writers)
inline constexpr uint16_t kManifestHeaderSizeUuid = 80;  // with the UUID (compatible bit 0)
inline constexpr uint32_t kCompatUuid = 1;
inline constexpr uint32_t kManifestEntryFixedSize = 40;
inline constexpr uint32_t kMaxCheckpointName = 255;
inline constexpr uint32_t kMaxCheckpoints = 1u << 20;

// Manifest flags (byte 22).
inline constexpr uint8_t kFlagClean = 1;          // closed cleanly
inline constexpr uint8_t kFlagIntentLog = 2;      // intent log enabled
inline constexpr uint8_t kFlagActiveUnknown = 4;  // active generation lost
// Checkpoint entry flags.
inline constexpr uint32_t kEntryGenerationUnknown = 1;
inline constexpr uint32_t kEntryQuiesced = 2;  // taken inside a freeze window that held

struct ManifestEntry {
  uint64_t checkpoint_id = 0;
  uint64_t gen_file_id = 0;  // 0: no file (the generation is unknown)
  int64_t created_unix_ns = 0;
  uint64_t changed_bytes = 0;
  uint32_t flags = 0;
  std::string name;
  bool operator==(const ManifestEntry&) const = default;
};

struct Manifest {
  uint8_t granularity_shift = 16;
  uint8_t intent_region_shift = 26;
  uint8_t flags = 0;
  uint64_t disk_size = 0;
  uint64_t next_id = 1;          // next checkpoint / file id
  uint64_t intent_floor = 0;     // replay intent logs with epoch >= this
  uint64_t active_file_id = 0;   // 0: the flushed active generation is empty
  std::array<uint8_t, 16> uuid{};  // all zero: none (written before trackers had one)
  std::vector<ManifestEntry> checkpoints;  // oldest first
  bool operator==(const Manifest&) const = default;
};

std::string EncodeManifest(const Manifest& m);
// Validates magic, version, sizes, checksum and every field; kCorruption
// "<file>: manifest ... at byte 0x…" on any failure, kUnsupported for a
// newer version or unknown incompatible feature bits.
Result<Manifest> DecodeManifest(std::span<const uint8_t> bytes, const std::string& file);

// §4: intent log, version 2. The file is a sequence of 512-byte sectors:
// sector 0 is the header, sector k >= 1 holds the k-th group commit. Every
// sector is written whole at a sector-aligned offset (one sector write is
// atomic), so an acknowledged commit is a valid sector and a never-written
// one is all zero; anything else is damage.
inline constexpr char kIntentMagic[8] = {'S', 'T', 'R', 'A', 'T', 'A', 'I', 'L'};
inline constexpr uint16_t kIntentVersion = 2;
inline constexpr uint32_t kIntentSectorSize = 512;
inline constexpr uint32_t kIntentEntrySize = 12;          // LE64 first region, LE32 count
inline constexpr uint32_t kIntentSectorEntries = 40;      // (512 - 16 - 8) / 12
inline constexpr uint64_t kIntentInitialCapacity = 16;    // sectors, header included

struct IntentHeader {
  uint64_t epoch = 0;
  uint64_t disk_size = 0;
  uint8_t region_shift = 26;
  uint64_t capacity = 0;  // sectors the file is preallocated to, header included
};
// Regions [first, first + count) may have been written.
struct IntentRange {
  uint64_t first = 0;
  uint32_t count = 0;
  bool operator==(const IntentRange&) const = default;
};

// Regions of a disk of `disk_size` bytes at 2^shift bytes per region.
uint64_t IntentRegionCount(uint64_t disk_size, uint32_t shift);
// The largest capacity a log may need: one sector per commit and every
// commit records at least one region not recorded before in the epoch.
uint64_t IntentMaxCapacity(uint64_t disk_size, uint32_t shift);

// The 512-byte header sector.
std::vector<uint8_t> EncodeIntentHeader(const IntentHeader& h);
// Record sector number `seq` (>= 1) holding 1..kIntentSectorEntries ranges.
void EncodeIntentSector(uint64_t epoch, uint64_t seq, std::span<const IntentRange> ranges,
                        uint8_t out[kIntentSectorSize]);

struct IntentLogContents {
  IntentHeader header;
  std::vector<IntentRange> ranges;  // as recorded (may overlap)
  uint64_t commits = 0;             // valid record sectors
};

// Reads a log sector by sector (pure: the caller supplies the bytes), so a
// large log need not be held in memory. Every failure is kCorruption naming
// `file` and the byte offset, except a log of another version (kUnsupported:
// version 1 cannot tell a torn record from a damaged one, §4.5).
class IntentLogDecoder {
 public:
  // `first` holds the file's first min(size, 512) bytes.
  static Result<IntentLogDecoder> Start(std::span<const uint8_t> first, uint64_t file_size,
                                        const std::string& file);
  const IntentHeader& header() const { return c_.header; }
  // Feeds bytes at `offset` (a multiple of 512, consecutive from 512; the
  // last piece may end with a partial sector at end of file).
  Status Feed(uint64_t offset, std::span<const uint8_t> bytes);
  // After every byte of the file was fed.
  Result<IntentLogContents> Finish();

 private:
  IntentLogDecoder(IntentLogContents c, uint64_t size, std::string file);
  IntentLogContents c_;
  uint64_t file_size_;
  uint64_t regions_;
  std::string file_;
  uint64_t next_ = kIntentSectorSize;  // offset expected next
  uint64_t first_zero_ = 0;            // offset of the first never-written sector, 0: none yet
};
// The whole file at once (tests, small logs).
Result<IntentLogContents> DecodeIntentLog(std::span<const uint8_t> bytes, const std::string& file);

// File names inside the state directory (§2).
std::string GenFileName(uint64_t id);     // "gen-%016x.xset"
std::string ActiveFileName(uint64_t id);  // "active-%016x.xset"
std::string IntentFileName(uint64_t epoch);  // "intent-%016x.log"
// Parses "<prefix>%016x<suffix>"; false when `name` does not match.
bool ParseIdFileName(const std::string& name, const std::string& prefix,
                     const std::string& suffix, uint64_t* id);
// Whether `name` is a temporary of WriteFileAtomic for one of this
// directory's own files: "<file>.tmp.<12 hex>" (Env::WriteFileAtomic) or
// "<file>.tmp.<pid>.<number>" (writers before include/strata/env.h), where <file> is
// MANIFEST or a gen-/active-/intent- name above (§2).
bool IsOwnTemporaryName(const std::string& name);

}  // namespace strata::tracker_internal

#endif  // STRATA_ENGINE_TRACKER_STATE_FORMAT_H_
