// qcow2 codec: pure functions from on-disk bytes to validated structures.
//
// Nothing here does I/O (STYLE §5): the driver (qcow2_image.cc) reads bytes
// and hands them over, so every parser can be fuzzed byte for byte
// (fuzz/qcow2_fuzz.cc). Every offset, size and count read from disk is checked
// here, against QEMU 7.2's own limits (docs/formats/qcow2-support.md and
// /work/shared/reference/qcow2.md §10), before the driver uses it. Errors are
// kCorruption / kUnsupported with "<image>: <structure> at 0x<offset>: <why>".
//
// Internal header: not part of the library's public API.
#ifndef STRATA_FORMATS_QCOW2_QCOW2_FORMAT_H_
#define STRATA_FORMATS_QCOW2_QCOW2_FORMAT_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "strata/status.h"

namespace strata::qcow2 {

inline constexpr uint32_t kMagic = 0x514649fb;  // "QFI\xfb"
inline constexpr uint32_t kMinClusterBits = 9;
inline constexpr uint32_t kMaxClusterBits = 21;
inline constexpr uint64_t kMaxL1Bytes = 32u << 20;          // QCOW_MAX_L1_SIZE
inline constexpr uint64_t kMaxRefTableBytes = 8u << 20;     // QCOW_MAX_REFTABLE_SIZE
inline constexpr uint32_t kMaxSnapshots = 65536;            // QCOW_MAX_SNAPSHOTS
inline constexpr uint64_t kMaxSnapshotTableBytes = 64u << 20;
inline constexpr uint32_t kMaxSnapshotExtra = 1024;
inline constexpr uint32_t kMaxBitmaps = 65535;
inline constexpr uint64_t kMaxBitmapDirBytes = 1024ull * 65535;
inline constexpr uint64_t kMaxBitmapTableEntries = 0x8000000;
inline constexpr uint64_t kMaxBitmapBytes = 512u << 20;
inline constexpr uint32_t kMaxNameSize = 1023;

// Incompatible feature bits (§1).
inline constexpr uint64_t kIncompatDirty = 1u << 0;
inline constexpr uint64_t kIncompatCorrupt = 1u << 1;
inline constexpr uint64_t kIncompatDataFile = 1u << 2;
inline constexpr uint64_t kIncompatCompression = 1u << 3;
inline constexpr uint64_t kIncompatExtendedL2 = 1u << 4;
inline constexpr uint64_t kIncompatKnown = 0x1f;
inline constexpr uint64_t kAutoclearBitmaps = 1u << 0;
inline constexpr uint64_t kAutoclearDataFileRaw = 1u << 1;

inline constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ull;  // L1E/L2E offset bits
inline constexpr uint64_t kL2Copied = 1ull << 63;
inline constexpr uint64_t kL2Compressed = 1ull << 62;
inline constexpr uint64_t kL2Zero = 1;

struct FeatureName {
  uint8_t type = 0;  // 0 incompatible, 1 compatible, 2 autoclear
  uint8_t bit = 0;
  std::string name;
};

// Bitmaps header extension (§8.1).
struct BitmapsExtension {
  uint32_t nb_bitmaps = 0;
  uint64_t directory_size = 0;
  uint64_t directory_offset = 0;
};

// The header (§1) plus everything the header extensions (§2) and the
// backing-file name add. Sizes are validated against `file_size`.
struct Header {
  uint32_t version = 0;
  uint64_t backing_file_offset = 0;
  uint32_t backing_file_size = 0;
  uint32_t cluster_bits = 0;
  uint64_t size = 0;
  uint32_t crypt_method = 0;
  uint32_t l1_size = 0;
  uint64_t l1_table_offset = 0;
  uint64_t refcount_table_offset = 0;
  uint32_t refcount_table_clusters = 0;
  uint32_t nb_snapshots = 0;
  uint64_t snapshots_offset = 0;
  uint64_t incompatible_features = 0;
  uint64_t compatible_features = 0;
  uint64_t autoclear_features = 0;
  uint32_t refcount_order = 4;
  uint32_t header_length = 72;
  uint8_t compression_type = 0;  // 0 zlib, 1 zstd

  std::string backing_file;      // empty: none
  bool has_backing_format = false;
  std::string backing_format;
  std::vector<FeatureName> feature_names;
  bool has_bitmaps = false;
  BitmapsExtension bitmaps;
  bool has_data_file = false;
  std::string data_file;
  bool has_crypto_header = false;

  uint64_t cluster_size() const { return uint64_t{1} << cluster_bits; }
  bool extended_l2() const { return (incompatible_features & kIncompatExtendedL2) != 0; }
  // L2 entries per table: cs / 8, or cs / 16 with extended L2.
  uint64_t l2_entries() const { return cluster_size() / (extended_l2() ? 16 : 8); }
  uint32_t l2_entry_bytes() const { return extended_l2() ? 16 : 8; }
  // Guest bytes one L2 table maps.
  uint64_t l2_span() const { return l2_entries() << cluster_bits; }
  // Incompatible bit 2: guest data lives in an external data file at host
  // offset == guest offset (an extension without the bit is ignored, as in QEMU).
  bool data_file_bit() const { return (incompatible_features & kIncompatDataFile) != 0; }
  bool data_file_raw() const { return (autoclear_features & kAutoclearDataFileRaw) != 0; }
  uint64_t subcluster_size() const { return extended_l2() ? cluster_size() / 32 : cluster_size(); }
};

// Parses and validates the header, its extensions and the backing file name
// from the first bytes of the file (`head`: at least the first cluster, or
// the whole file when shorter). `file_size` bounds every table offset.
Result<Header> ParseHeader(std::span<const uint8_t> head, uint64_t file_size,
                           const std::string& image);

// "dirty, corrupt, bit 17": names of set bits, using the image's feature name
// table where it has an entry.
std::string FeatureBitNames(const Header& h, uint8_t type, uint64_t bits);

// Entries of the L1 table needed to map `size` guest bytes (no overflow).
uint64_t L1EntriesFor(uint64_t size, const Header& h);

// The guest size of an image whose header says `header_size` bytes: QEMU
// keeps whole 512-byte sectors (`bs->total_sectors = header.size /
// BDRV_SECTOR_SIZE` in qcow2_do_open), so a size that is not a multiple of
// 512 (qemu-img never writes one) reads as the sectors below it.
inline uint64_t GuestSize(uint64_t header_size) { return header_size & ~uint64_t{511}; }

// Checks that a table of `entries` x `entry_bytes` at `offset` is
// cluster-aligned, computes its end without overflow and lies inside the
// file. `what` names the structure in the error.
Status CheckTable(const Header& h, uint64_t offset, uint64_t entries, uint64_t entry_bytes,
                  uint64_t file_size, const std::string& image, const std::string& what);

// L1 entry -> L2 table offset (0: no table). Unaligned offsets and tables
// past end of file are kCorruption.
Result<uint64_t> L2OffsetFromL1(uint64_t l1e, uint64_t l1_index, uint64_t l1_offset,
                                const Header& h, uint64_t file_size, const std::string& image);

// What a (sub)cluster reads as (QEMU's QCow2SubclusterType).
enum class ClusterKind : uint8_t {
  kUnallocated,       // falls through to the backing file (or zeros)
  kUnallocatedAlloc,  // extended L2: host cluster reserved, subcluster falls through
  kZeroPlain,         // reads as zeros, no host cluster
  kZeroAlloc,         // reads as zeros, host cluster preallocated
  kNormal,            // host_offset + offset in cluster
  kCompressed,        // compressed data at host_offset, compressed_size bytes
};

// A decoded L2 entry for one subcluster index.
struct Mapping {
  ClusterKind kind = ClusterKind::kUnallocated;
  uint64_t host_offset = 0;      // cluster start (normal/zero_alloc/unalloc_alloc), or
                                 // the byte offset of compressed data
  uint64_t compressed_size = 0;  // bytes to read for kCompressed
};

// Decodes entry `index` of the L2 table at `l2_offset` for subcluster
// `sc` (0 without extended L2). With an external data file, host offset 0
// with the COPIED bit is an allocated cluster at offset 0, and compressed
// clusters are corruption (as in QEMU). `entry` is the first u64, `bitmap` the
// second (extended L2 only). Invalid combinations are kCorruption naming the
// L2 table offset and entry index.
Result<Mapping> DecodeL2(uint64_t entry, uint64_t bitmap, uint32_t sc, const Header& h,
                         uint64_t l2_offset, uint64_t index, const std::string& image);

// Internal snapshot table entry (§7).
struct SnapshotEntry {
  uint64_t l1_table_offset = 0;
  uint32_t l1_size = 0;
  std::string id;
  std::string name;
  uint32_t date_sec = 0;
  uint32_t date_nsec = 0;
  uint64_t vm_clock_nsec = 0;
  uint64_t vm_state_size = 0;
  bool has_disk_size = false;
  uint64_t disk_size = 0;
};

// Parses exactly h.nb_snapshots entries from `table` (the bytes at
// h.snapshots_offset; may be longer than needed). kCorruption when an entry
// runs past `table` or the 64 MiB limit, or a snapshot L1 is invalid.
// `*consumed` gets the table length in bytes. When `table` is merely too
// short but the image may be fine, the error is kCorruption too: callers
// pass min(file remainder, 64 MiB).
Result<std::vector<SnapshotEntry>> ParseSnapshotTable(std::span<const uint8_t> table,
                                                      const Header& h, uint64_t file_size,
                                                      const std::string& image,
                                                      uint64_t* consumed);

// Bitmap directory entry (§8.2).
struct BitmapEntry {
  uint64_t table_offset = 0;
  uint32_t table_size = 0;
  uint32_t flags = 0;
  uint8_t type = 0;
  uint8_t granularity_bits = 0;
  std::string name;
  bool in_use() const { return flags & 1; }
  bool auto_flag() const { return flags & 2; }
};

// Parses and checks the bitmap directory (exactly h.bitmaps.directory_size
// bytes) like QEMU's check_dir_entry, including the table size computed from
// the image size for bitmaps not in use.
Result<std::vector<BitmapEntry>> ParseBitmapDirectory(std::span<const uint8_t> dir,
                                                      const Header& h, uint64_t file_size,
                                                      const std::string& image);

// Bitmap table entries that QEMU computes for a bitmap of this granularity.
uint64_t BitmapTableEntriesFor(const Header& h, uint32_t granularity_bits);

// One bitmap table entry: data cluster offset (0: all zeros or all ones).
struct BitmapTableEntry {
  uint64_t offset = 0;
  bool all_ones = false;
};
Result<BitmapTableEntry> DecodeBitmapTableEntry(uint64_t e, uint64_t index, const BitmapEntry& b,
                                                const Header& h, uint64_t file_size,
                                                const std::string& image);

// Reads the refcount of `index` from a refcount block (width 1 << order).
uint64_t RefcountAt(std::span<const uint8_t> block, uint32_t order, uint64_t index);

}  // namespace strata::qcow2

#endif  // STRATA_FORMATS_QCOW2_QCOW2_FORMAT_H_
