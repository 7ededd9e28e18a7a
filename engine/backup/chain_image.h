// ChainImage: the resolved view of a backup chain as an Image that any
// number of threads may read at once, with a shared cache of decompressed
// frames (frame_cache.h). It is what `strata serve` (the nbdkit plugin),
// `strata mount` and offline merges read (docs/design/serve.md).
//
// Reads never return a byte that was not checked: a frame is used only
// after its compressed bytes' XXH3-64, its decompressed size and the
// XXH3-128 of every extent stored in it matched the archive's index; a zero
// extent's recorded hash is checked on its first read. Ranges no archive of
// the chain defines read as zeros (the full backup defines the whole disk).
#ifndef STRATA_ENGINE_BACKUP_CHAIN_IMAGE_H_
#define STRATA_ENGINE_BACKUP_CHAIN_IMAGE_H_

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "strata/archive.h"
#include "engine/backup/frame_cache.h"
#include "engine/backup/pipeline_internal.h"
#include "strata/image.h"

namespace strata {

struct ChainImageOptions {
  // Decompressed frames kept for later reads (0: none; every read then
  // decompresses the frames it touches).
  uint64_t cache_bytes = 64ull << 20;
};

struct ChainImageStats {
  FrameCacheStats cache;
  uint64_t frames_decompressed = 0;  // loads, including those not kept
  uint64_t bytes_decompressed = 0;
};

class ChainImage : public Image {
 public:
  // `chain` newest first, ending with a full backup (CheckChain). The
  // readers must outlive the image. O(extents of the chain) time and
  // memory; reads nothing but the indexes already loaded.
  static Result<std::unique_ptr<ChainImage>> Open(const std::vector<const ArchiveReader*>& chain,
                                                  const ChainImageOptions& options = {});
  ~ChainImage() override;

  const std::string& name() const override { return name_; }
  std::string_view format() const override { return "strata-backup"; }
  uint64_t size() const override { return disk_size_; }

  // Thread-safe. kCorruption naming the archive and range when a checksum
  // fails; kIoError when an archive cannot be read.
  Status Read(uint64_t offset, std::span<uint8_t> buf) override;
  // Thread-safe. Data ranges are present+data, zero ranges present+zero.
  Status BlockStatus(uint64_t offset, uint64_t length, std::vector<MapEntry>* out) override;

  // Calls `fn(offset, length, zero)` for maximal runs of [offset, offset +
  // length) that are all data or all zero, in order; `fn` returning false
  // stops the walk. Thread-safe; O(log segments + runs reported).
  void Map(uint64_t offset, uint64_t length,
           const std::function<bool(uint64_t, uint64_t, bool)>& fn) const;

  // Loads the frames holding [offset, offset + length) into the cache (a
  // hint: NBD_CMD_CACHE). Thread-safe.
  Status Prefetch(uint64_t offset, uint64_t length);

  ChainImageStats stats() const;
  // The newest backup of the chain.
  const ArchiveHeader& header() const { return chain_[0]->header(); }

 private:
  struct Scratch;     // a decompression context and a buffer for compressed bytes
  class BufferPool;   // frame buffers, reused: fresh memory faults in slowly
  ChainImage(std::vector<const ArchiveReader*> chain, std::vector<internal::Segment> segs,
             const ChainImageOptions& options);
  size_t Find(uint64_t pos) const;
  Result<FramePtr> Frame(int archive, uint32_t frame);
  Result<FramePtr> LoadFrame(int archive, uint32_t frame);
  Status CheckZero(int archive, uint32_t extent);
  std::unique_ptr<Scratch> TakeScratch();
  void GiveScratch(std::unique_ptr<Scratch> s);

  std::vector<const ArchiveReader*> chain_;
  std::vector<internal::Segment> segs_;
  uint64_t disk_size_ = 0;
  std::string name_;
  // Per archive: the data extents stored in each frame (CSR: extents of
  // frame f are frame_ext_[a][frame_first_[a][f] .. frame_first_[a][f+1])).
  std::vector<std::vector<uint32_t>> frame_first_, frame_ext_;
  // Per archive and extent: a zero extent's hash was checked.
  std::vector<std::unique_ptr<std::atomic<bool>[]>> zero_checked_;
  std::shared_ptr<BufferPool> pool_;  // outlives every frame (their deleters hold it)
  FrameCache cache_;
  std::mutex scratch_mu_;
  std::vector<std::unique_ptr<Scratch>> scratch_;
  std::atomic<uint64_t> frames_decompressed_{0}, bytes_decompressed_{0};
};

}  // namespace strata

#endif  // STRATA_ENGINE_BACKUP_CHAIN_IMAGE_H_
