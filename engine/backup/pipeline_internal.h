// Pieces shared by the backup, restore and merge pipelines (pipeline.cc,
// restore.cc, chain.cc). Not part of the public API.
#ifndef STRATA_ENGINE_BACKUP_PIPELINE_INTERNAL_H_
#define STRATA_ENGINE_BACKUP_PIPELINE_INTERNAL_H_

#include <zstd.h>

#include <chrono>
#include <cstdlib>
#include <new>
#include <thread>
#include <vector>

#include "strata/archive.h"
#include "strata/pipeline.h"

namespace strata::internal {

using Clock = std::chrono::steady_clock;

inline double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

struct CCtxDeleter {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DCtxDeleter {
  void operator()(ZSTD_DCtx* c) const { ZSTD_freeDCtx(c); }
};

inline unsigned WorkerCount(const PipelineOptions& opt) {
  if (opt.workers) return opt.workers;
  unsigned n = std::thread::hardware_concurrency();
  return n ? n : 2;
}

// One read: [offset, offset+length) of the source, holding `parts` (the

// O_DIRECT alignment of offsets, lengths and buffers: the page size, which
// every Linux file system and block device accepts.
inline constexpr uint64_t kDirectAlign = 4096;

struct AlignedBuffer {
  explicit AlignedBuffer(size_t n)
      : p(static_cast<uint8_t*>(std::aligned_alloc(kDirectAlign, (n + kDirectAlign - 1) /
                                                                     kDirectAlign * kDirectAlign))),
        size(n) {
    if (p == nullptr) throw std::bad_alloc();
  }
  ~AlignedBuffer() { std::free(p); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  uint8_t* p;
  size_t size;
};

// A guest range of the resolved view of a chain: from archive `archive`'s
// extent `extent`, or zeros (archive < 0, or a zero extent).
struct Segment {
  uint64_t offset, length;
  int archive;
  uint32_t extent;
};

// Resolves a chain (newest first) into segments tiling the disk in
// ascending order, each guest byte taken from the newest archive defining
// it (extent-set subtraction: O(extents + runs), independent of disk size).
Result<std::vector<Segment>> Resolve(const std::vector<const ArchiveReader*>& chain);

inline bool SegIsZero(const std::vector<const ArchiveReader*>& chain, const Segment& s) {
  return s.archive < 0 || chain[s.archive]->index().extents[s.extent].is_zero();
}

}  // namespace strata::internal

#endif  // STRATA_ENGINE_BACKUP_PIPELINE_INTERNAL_H_
