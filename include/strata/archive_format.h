// The archive format (docs/formats/archive.md): pure encode/decode of the
// header, index and footer. No I/O here; every size and offset is checked.
#ifndef STRATA_ARCHIVE_FORMAT_H_
#define STRATA_ARCHIVE_FORMAT_H_

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "strata/chain_point.h"
#include "strata/checksum.h"
#include "strata/id128.h"
#include "strata/status.h"

namespace strata {

using ArchiveId = Id128;

// "3f2a…" (32 hex digits) and back.
inline std::string IdToHex(const ArchiveId& id) { return Id128ToHex(id); }
Result<ArchiveId> IdFromHex(const std::string& hex);
inline ArchiveId NewArchiveId() { return RandomId128(); }
inline bool IsNullId(const ArchiveId& id) { return IsNullId128(id); }

enum class SourceKind : uint8_t {
  kFull = 0,      // allocated extents of the image
  kBitmap = 1,    // a qcow2 persistent dirty bitmap
  kSnapshot = 2,  // a qcow2 internal snapshot diff
  kTracker = 3,   // a strata tracker checkpoint
  kScan = 4,      // read everything, keep chunks whose hash changed
  kMerge = 5,     // made offline by strata merge (version 1 archives)
  kReflink = 6,   // changed extents between two reflink clones (FIEMAP)
};
inline constexpr uint8_t kMaxSourceKind = 6;
const char* SourceKindName(SourceKind k);

// How the disk was read (§3): the format a repository remembers per disk.
enum class DiskFormat : uint8_t { kUnknown = 0, kRaw = 1, kQcow2 = 2 };
inline constexpr uint8_t kMaxDiskFormat = 2;
const char* DiskFormatName(DiskFormat f);  // "unknown", "raw", "qcow2"

inline constexpr uint16_t kArchiveVersion = 2;  // what writers write; 1 is still read

// §3 of the spec.
struct ArchiveHeader {
  // As decoded (1 or 2); encoders always write kArchiveVersion. Version 1
  // archives carry no disk identity and no points (all left empty).
  uint16_t version = kArchiveVersion;
  ArchiveId id{};
  ArchiveId parent_id{};           // all zero: a full backup
  // IdentityCheck() of the parent: ties the child to exactly that parent
  // (id, creation time, geometry) and survives offline merges that rewrite
  // the parent's data under the same identity.
  uint64_t parent_identity = 0;
  uint64_t disk_size = 0;
  uint32_t granularity_shift = 16;
  uint8_t compression = 1;         // 1 = zstd
  int8_t level = 1;
  SourceKind source = SourceKind::kFull;
  uint32_t chunk_size = 1 << 20;
  uint64_t created_unix_ns = 0;
  std::string source_name;         // checkpoint, bitmap or snapshot name (≤ 1023 bytes)
  // §3.2, version 2: which disk, and where in the source's history the
  // content starts (incrementals) and ends.
  Id128 disk_id{};                 // stable identity of the disk in its repository
  std::string disk_name;           // the disk's name (by default its absolute path)
  DiskFormat disk_format = DiskFormat::kUnknown;
  uint64_t content_unix_ns = 0;    // when the content was read (the end point's time)
  bool quiesced = false;           // the end point was taken inside a freeze window
  bool merged = false;             // rewritten by an offline merge (§8)
  ChainPoint start;                // equals the parent's end point (none for a full backup)
  ChainPoint end;                  // the state of the source this archive's view equals

  bool is_full() const { return IsNullId(parent_id); }
};

// XXH3-64 over id, created_unix_ns, disk_size and granularity_shift (§3.1).
uint64_t IdentityCheck(const ArchiveHeader& h);

// §4: one zstd frame.
struct FrameRecord {
  uint64_t file_offset = 0;
  uint32_t compressed_size = 0;
  uint32_t raw_size = 0;
  uint64_t compressed_xxh3 = 0;  // XXH3-64 of the compressed bytes
};

// §4: a guest range this archive defines.
struct ExtentRecord {
  static constexpr uint32_t kZeroFrame = 0xffffffff;
  uint64_t guest_offset = 0;
  uint32_t length = 0;
  uint32_t frame = kZeroFrame;  // kZeroFrame: reads as zeros, no data
  uint32_t offset_in_frame = 0;
  Hash128 hash;                 // XXH3-128 of the guest bytes (of zeros for zero extents)
  bool is_zero() const { return frame == kZeroFrame; }
};

struct ArchiveIndex {
  std::vector<FrameRecord> frames;
  std::vector<ExtentRecord> extents;  // ascending guest_offset, non-overlapping
};

struct ArchiveFooter {
  uint64_t index_offset = 0;
  uint64_t index_size = 0;
  uint64_t index_checksum = 0;   // XXH3-64 of the index bytes
  uint64_t header_checksum = 0;  // copy of the header's checksum
};

inline constexpr size_t kArchiveFooterSize = 48;
inline constexpr size_t kArchiveFrameRecordSize = 24;
inline constexpr size_t kArchiveExtentRecordSize = 40;

// Encoded header (multiple of 8, ending with its checksum).
std::string EncodeHeader(const ArchiveHeader& h);
// Decodes a header from the start of a file; `bytes` may be longer.
// *header_size receives the encoded size. Errors are kCorruption/kUnsupported
// and name `file` and the byte offset.
Result<ArchiveHeader> DecodeHeader(std::span<const uint8_t> bytes, const std::string& file,
                                   uint64_t* header_size, uint64_t* header_checksum);

std::string EncodeIndex(const ArchiveIndex& index);
// Validates every record against the header and the file layout: frames lie
// in [data_start, data_end) in order without overlap, extents are sorted,
// non-overlapping, inside the disk, and inside their frame.
Result<ArchiveIndex> DecodeIndex(std::span<const uint8_t> bytes, const ArchiveHeader& h,
                                 uint64_t data_start, uint64_t data_end,
                                 const std::string& file);

std::string EncodeFooter(const ArchiveFooter& f);
Result<ArchiveFooter> DecodeFooter(std::span<const uint8_t> bytes, uint64_t file_size,
                                   const std::string& file);

}  // namespace strata

#endif  // STRATA_ARCHIVE_FORMAT_H_
