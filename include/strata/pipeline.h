// The backup and restore pipelines.
//
// Backup: the change source's extent set is cut into chunk-aligned reads
// (small nearby runs coalesced into one read), read through io_uring (raw
// sources; O_DIRECT where alignment allows) or the image driver (qcow2),
// zero-detected, hashed (XXH3-128) and zstd-compressed on worker threads,
// and written in order into an archive. Memory is bounded by the number of
// reads in flight, whatever the disk size.
//
// Restore: a chain (newest first) is resolved with extent-set subtraction so
// each guest block is read from exactly one archive and written once; zero
// and never-written ranges become holes; every checksum is verified.
#ifndef STRATA_PIPELINE_H_
#define STRATA_PIPELINE_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "strata/archive.h"
#include "strata/extent_set.h"
#include "strata/env.h"
#include "strata/image.h"

namespace strata {

struct PipelineOptions {
  int level = 1;                       // zstd level (1: see docs/benchmarks.md)
  uint32_t chunk_size = 1 << 20;       // guest bytes per frame at most (raised to the granularity)
  unsigned queue_depth = 32;           // reads (writes) in flight (see docs/benchmarks.md)
  unsigned workers = 0;                // 0: one per core
  uint64_t memory_limit = 256ull << 20;
  uint64_t coalesce_gap = 256 << 10;   // read through gaps up to this size
  bool direct_io = true;               // O_DIRECT for raw sources and restore output when aligned
  Env* env = nullptr;                  // where archives are written (null: the local file system)
  // Called from the writing thread with (bytes done, bytes planned).
  std::function<void(uint64_t, uint64_t)> progress;
  // When set and true, a backup, restore or verify stops at the next chunk
  // with kCancelled (a backup's archive does not appear; a restore removes
  // the output it created).
  const std::atomic<bool>* cancel = nullptr;
};

// Where a command's time went, phase by phase, in the order they ran
// (`--json -v` prints them; docs/design/backup.md explains them).
struct PhaseTime {
  std::string name;  // e.g. "open", "parent", "end point", "changes", "pipeline", "finish", "catalog"
  double seconds = 0;
};

struct BackupStats {
  uint64_t planned_bytes = 0;  // guest bytes in the change set
  uint64_t read_bytes = 0;     // bytes read from the source (incl. gaps)
  uint64_t data_bytes = 0;     // guest bytes stored as data
  uint64_t zero_bytes = 0;     // guest bytes recorded as zeros
  uint64_t skipped_bytes = 0;  // --scan: unchanged chunks not stored
  uint64_t stored_bytes = 0;   // compressed bytes in the archive
  uint64_t archive_bytes = 0;  // archive file size
  double seconds = 0;
  bool used_uring = false, used_direct = false, registered_buffers = false;
  std::string notice;          // e.g. why io_uring was not used
  std::vector<PhaseTime> phases;
};

// What a --scan backup compares against: the hash of each chunk-aligned
// range in the parent chain's view, where the chain stores it whole.
class ScanBaseline {
 public:
  // `chain` newest first, ending with a full backup.
  static Result<ScanBaseline> Build(const std::vector<const ArchiveReader*>& chain);
  // Whether the parent chain is known to hold exactly `data` at guest
  // `offset`: every data extent of the chain's view inside the range is
  // whole and has the XXH3-128 of the same bytes of `data`, and every other
  // byte is zero in both. False (stored again) whenever it cannot tell.
  bool Unchanged(uint64_t offset, std::span<const uint8_t> data) const;
  // The same for a range known to read as zeros (a hole of the source):
  // true when the chain's view is zero over all of it. O(runs in range).
  bool UnchangedZero(uint64_t offset, uint64_t length) const;

 private:
  std::vector<ExtentRecord> visible_;  // sorted, whole records still visible
  std::unique_ptr<ExtentSet> zero_view_;
};

// Writes a new archive at `archive_path` holding `changes` of `image`.
// `header` supplies identity, parent and source fields; disk size,
// granularity, level and chunk size are filled from the image, `changes`
// and `opt`. With `scan`, every chunk of `changes` whose hash matches the
// baseline is left out. On any error the archive does not appear.
Result<BackupStats> RunBackup(Image& image, const ExtentSet& changes, ArchiveHeader header,
                              const std::string& archive_path, const PipelineOptions& opt,
                              const ScanBaseline* scan = nullptr);

struct RestoreStats {
  uint64_t data_bytes = 0;   // guest bytes written
  uint64_t zero_bytes = 0;   // guest bytes left as holes / zeroed
  uint64_t frames_read = 0;
  uint64_t stored_bytes_read = 0;
  size_t chain_length = 0;
  double seconds = 0;
  bool used_uring = false;
  bool used_direct = false;        // aligned data written with O_DIRECT
  bool registered_buffers = false;
  std::string notice;              // e.g. why O_DIRECT or io_uring was not used
  std::vector<PhaseTime> phases;
};

// Checks that chain[i]'s parent is chain[i+1] (id and identity), that all
// share geometry and that the last is a full backup.
Status CheckChain(const std::vector<const ArchiveReader*>& chain);

// Restores the view of chain[0] into `output` (a raw file, created or
// truncated, or a block device of at least the disk size).
Result<RestoreStats> RunRestore(const std::vector<const ArchiveReader*>& chain,
                                const std::string& output, const PipelineOptions& opt);

// Calls `fn(guest_offset, data)` for the resolved view of chain[0], in
// ascending order, in pieces of at most one chunk; ranges that read as zero
// are passed with an empty span and their length in `zero_len`. Used by
// verify --against and merge.
Status ForEachResolved(const std::vector<const ArchiveReader*>& chain,
                       const std::function<Status(uint64_t offset, std::span<const uint8_t> data,
                                                  uint64_t zero_len)>& fn);

// Reads and checks every frame and extent checksum of one archive, frames
// decompressed on `threads` threads (0: one per core). On damage, the error
// names the first bad frame in file order.
Status VerifyArchive(const ArchiveReader& archive, unsigned threads = 0);

// The resolved view of a chain (newest first) as a read-only Image: reads
// decompress and verify the frames that hold the bytes; block status says
// data or zero. The chain's readers must outlive it. Used by merge to feed
// the backup pipeline from backups instead of a disk. A ChainImage
// (chain_image.h) with a small frame cache; open one directly to choose the
// cache size or to read from several threads.
Result<std::unique_ptr<Image>> OpenChainImage(const std::vector<const ArchiveReader*>& chain);

// Offline merges in a directory of archives. Rewrites archive `child`
// (whose parent is `removed`) so that it holds the union of both and takes
// `removed`'s parent (none when `removed` is a full backup: the result is
// full). The rewritten archive keeps `child`'s identity (id, creation time),
// so backups built on `child` stay restorable; it replaces `child_path`
// atomically.
Result<BackupStats> FoldIntoChild(const std::vector<const ArchiveReader*>& child_chain,
                                  const std::string& child_path, const PipelineOptions& opt);

}  // namespace strata

#endif  // STRATA_PIPELINE_H_
