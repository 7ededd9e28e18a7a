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

#include "extents/status.h"

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

// §4: intent log.
inline constexpr char kIntentMagic[8] = {'S', 'T', 'R', 'A', 'T', 'A', 'I', 'L'};
inline constexpr uint16_t kIntentVersion = 1;
inline constexpr uint16_t kIntentHeaderSize = 48;
inline constexpr uint32_t kIntentRecordSize = 16;

struct IntentHeader {
  uint64_t epoch = 0;
  uint64_t disk_size = 0;
  uint8_t region_shift = 26;
};
std::string EncodeIntentHeader(const IntentHeader& h);
// One record: region index and its checksum (bound to the epoch).
void EncodeIntentRecord(uint64_t epoch, uint64_t region, uint8_t out[kIntentRecordSize]);

struct IntentLogContents {
  IntentHeader header;
  std::vector<uint64_t> regions;  // as recorded (may repeat)
  uint64_t torn_tail_bytes = 0;   // bytes after the last valid record
};
// Torn tails (bad records or a partial record with nothing valid after them)
// are dropped: their fsync never completed, so no mark relied on them. A bad
// record followed by a valid one is kCorruption. A file shorter than a
// header, or exactly header-sized with an invalid header, was never in use:
// empty contents (its bytes counted as torn tail).
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
// "<file>.tmp.<pid>.<number>" (writers before formats/env.h), where <file> is
// MANIFEST or a gen-/active-/intent- name above (§2).
bool IsOwnTemporaryName(const std::string& name);

}  // namespace strata::tracker_internal

#endif  // STRATA_ENGINE_TRACKER_STATE_FORMAT_H_
