// FrameCache: a bounded cache of decompressed archive frames shared by
// threads (docs/design/serve.md).
//
// A served backup point is read in small random pieces (4 KiB reads of a
// booting VM, a file system walked by the kernel), while its bytes are kept
// as independently compressed frames of up to one chunk (1 MiB by default).
// Without a cache each small read decompresses its whole frame. The cache
// keeps the most recently used frames, already checked (compressed XXH3-64,
// size, and the XXH3-128 of every extent stored in them), so a hit costs a
// lookup and a copy.
//
// Concurrency: any number of threads may call Get at once. A frame missing
// from the cache is loaded once: the first thread to ask loads it outside
// the lock; threads asking for the same frame meanwhile wait for that load
// and share its result (or its error). Errors are not cached: the next Get
// tries again.
//
// Memory: the frames held by the cache total at most `capacity` bytes
// (their buffers' sizes); a frame larger than the capacity is returned
// without being kept. Frames being loaded or still held by readers after eviction
// come on top: at most one frame per thread inside Get or holding a Frame.
#ifndef STRATA_ENGINE_BACKUP_FRAME_CACHE_H_
#define STRATA_ENGINE_BACKUP_FRAME_CACHE_H_

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <span>
#include <unordered_map>

#include "strata/status.h"

namespace strata {

// The raw (decompressed) bytes of one frame. Immutable once published.
struct FrameData {
  explicit FrameData(size_t n) : bytes(new uint8_t[n]), size(n), capacity(n) {}  // not zero-filled
  // A buffer of `cap` >= n bytes (e.g. from a pool) holding the frame's n.
  FrameData(std::unique_ptr<uint8_t[]> b, size_t n, size_t cap) : bytes(std::move(b)), size(n), capacity(cap) {}
  std::span<const uint8_t> span() const { return {bytes.get(), size}; }
  std::unique_ptr<uint8_t[]> bytes;
  size_t size;      // the frame's raw bytes
  size_t capacity;  // bytes allocated: what the cache's bound counts
};
using FramePtr = std::shared_ptr<const FrameData>;

struct FrameCacheStats {
  uint64_t hits = 0;       // found resident
  uint64_t waits = 0;      // found being loaded by another thread, waited for it
  uint64_t misses = 0;     // loaded by the caller (every load is a miss)
  uint64_t load_errors = 0;
  uint64_t evictions = 0;
  uint64_t resident_bytes = 0;
  uint64_t resident_frames = 0;
};

class FrameCache {
 public:
  // `capacity`: most raw bytes kept; 0 keeps nothing (every Get loads,
  // though concurrent Gets of one key still share a load).
  explicit FrameCache(uint64_t capacity);
  ~FrameCache();
  FrameCache(const FrameCache&) = delete;
  FrameCache& operator=(const FrameCache&) = delete;

  using Loader = std::function<Result<FramePtr>()>;
  // The frame named `key`: from the cache, from a load in progress, or from
  // `load` (called at most once per miss, without the cache's lock held).
  // Returns `load`'s error, to every thread that waited for it. Thread-safe.
  Result<FramePtr> Get(uint64_t key, const Loader& load);
  // Whether `key` is resident (for tests and prefetch). Thread-safe.
  bool Contains(uint64_t key) const;

  uint64_t capacity() const { return capacity_; }
  FrameCacheStats stats() const;

 private:
  struct Pending;
  struct Entry {
    FramePtr frame;                    // set once resident
    std::shared_ptr<Pending> pending;  // set while being loaded
    std::list<uint64_t>::iterator lru; // position in lru_ (resident only)
  };
  void EvictLocked();

  const uint64_t capacity_;
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, Entry> map_;
  std::list<uint64_t> lru_;  // resident keys, most recently used first
  FrameCacheStats stats_;
};

}  // namespace strata

#endif  // STRATA_ENGINE_BACKUP_FRAME_CACHE_H_
