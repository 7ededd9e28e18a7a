// Pieces shared by the backup, restore and merge pipelines (pipeline.cc,
// restore.cc, chain.cc). Not part of the public API.
#ifndef STRATA_ENGINE_BACKUP_PIPELINE_INTERNAL_H_
#define STRATA_ENGINE_BACKUP_PIPELINE_INTERNAL_H_

#include <zstd.h>

#include <sys/mman.h>

#include <chrono>
#include <cstdlib>
#include <new>
#include <span>
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

// O_DIRECT alignment of offsets, lengths and buffers: the page size, which
// every Linux file system and block device accepts.
inline constexpr uint64_t kDirectAlign = 4096;

// `count` buffers of `size` bytes (each kDirectAlign-aligned) in one
// anonymous mapping, touched only where used, of ordinary pages unless
// `huge_pages` (2 MiB-aligned, advised MADV_HUGEPAGE). On these guests
// (virtio-balloon free page reporting) a process's first touch of huge
// pages the host has taken back costs ~1.5 ms per MiB against ~0.4 ms for
// 4 KiB pages, and a 64 KiB read into a huge page zeroes all 2 MiB of it;
// but a long restore writing from huge pages ran 12-20% faster. Measured
// A/B in docs/design/backup.md: backups use ordinary pages, restores huge
// pages when they fill the pool many times over.
class BufferArena {
 public:
  BufferArena(size_t count, size_t size, bool huge_pages = false)
      : stride_((size + kDirectAlign - 1) / kDirectAlign * kDirectAlign), count_(count) {
    const size_t want = stride_ * count_;
    if (want == 0) return;
    // Huge pages need a 2 MiB-aligned range: map one alignment more and trim.
    const size_t align = huge_pages ? size_t{2} << 20 : kDirectAlign;
    const size_t whole = (want + align - 1) / align * align;
    const size_t mapped = whole + align - kDirectAlign;
    void* m = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::bad_alloc();
    const auto at = reinterpret_cast<uintptr_t>(m);
    const uintptr_t aligned = (at + align - 1) / align * align;
    if (aligned > at) ::munmap(m, aligned - at);
    const uintptr_t end = at + mapped;
    if (end > aligned + whole) ::munmap(reinterpret_cast<void*>(aligned + whole), end - (aligned + whole));
    base_ = reinterpret_cast<uint8_t*>(aligned);
    bytes_ = whole;
    if (huge_pages) (void)::madvise(base_, bytes_, MADV_HUGEPAGE);
  }
  ~BufferArena() {
    if (base_ != nullptr) ::munmap(base_, bytes_);
  }
  BufferArena(const BufferArena&) = delete;
  BufferArena& operator=(const BufferArena&) = delete;
  std::span<uint8_t> operator[](size_t i) const { return {base_ + i * stride_, stride_}; }
  size_t size() const { return count_; }

 private:
  size_t stride_, count_;
  uint8_t* base_ = nullptr;
  size_t bytes_ = 0;
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
