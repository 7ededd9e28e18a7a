// FrameCache (frame_cache.h): one mutex over a hash map and an LRU list.
// The critical sections are a lookup and a list splice (well under a
// microsecond) while a miss costs a read and a decompression of up to a
// chunk (about 0.7 ms for 1 MiB here), so one lock is not the bottleneck on
// the machines this serves from; it keeps the LRU order and the byte bound
// exact, which sharding would not.
#include "engine/backup/frame_cache.h"

#include <condition_variable>
#include <optional>

namespace strata {

// A load in progress. Guarded by the cache's mutex.
struct FrameCache::Pending {
  std::condition_variable cv;
  bool done = false;
  std::optional<Result<FramePtr>> result;
};

FrameCache::FrameCache(uint64_t capacity) : capacity_(capacity) {}
FrameCache::~FrameCache() = default;

bool FrameCache::Contains(uint64_t key) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = map_.find(key);
  return it != map_.end() && it->second.frame != nullptr;
}

FrameCacheStats FrameCache::stats() const {
  std::lock_guard<std::mutex> l(mu_);
  return stats_;
}

void FrameCache::EvictLocked() {
  while (stats_.resident_bytes > capacity_ && !lru_.empty()) {
    uint64_t victim = lru_.back();
    lru_.pop_back();
    auto it = map_.find(victim);
    stats_.resident_bytes -= it->second.frame->capacity;
    --stats_.resident_frames;
    ++stats_.evictions;
    map_.erase(it);  // readers holding the frame keep it alive
  }
}

Result<FramePtr> FrameCache::Get(uint64_t key, const Loader& load) {
  std::shared_ptr<Pending> pending;
  {
    std::unique_lock<std::mutex> l(mu_);
    auto [it, inserted] = map_.try_emplace(key);
    Entry& e = it->second;
    if (!inserted) {
      if (e.frame) {
        ++stats_.hits;
        lru_.splice(lru_.begin(), lru_, e.lru);
        return e.frame;
      }
      // Another thread is loading this frame: wait for its result. The
      // entry may be erased meanwhile; `p` keeps the result alive.
      ++stats_.waits;
      std::shared_ptr<Pending> p = e.pending;
      p->cv.wait(l, [&] { return p->done; });
      return *p->result;
    }
    ++stats_.misses;
    pending = std::make_shared<Pending>();
    e.pending = pending;
  }

  // Load without the lock. Every path below publishes a result, so waiters
  // never hang, also when `load` throws (std::bad_alloc).
  std::optional<Result<FramePtr>> r;
  try {
    r.emplace(load());
  } catch (...) {
    std::lock_guard<std::mutex> l(mu_);
    pending->result.emplace(Status(StatusCode::kIoError, "frame cache: the load failed (out of memory?)"));
    pending->done = true;
    ++stats_.load_errors;
    map_.erase(key);
    pending->cv.notify_all();
    throw;
  }

  std::lock_guard<std::mutex> l(mu_);
  auto it = map_.find(key);  // only this thread removes a pending entry
  if (r->has_value() && **r != nullptr && (**r)->capacity <= capacity_) {
    Entry& e = it->second;
    e.pending.reset();
    e.frame = **r;
    lru_.push_front(key);
    e.lru = lru_.begin();
    stats_.resident_bytes += e.frame->capacity;
    ++stats_.resident_frames;
    EvictLocked();
  } else {
    if (!r->has_value()) ++stats_.load_errors;
    map_.erase(it);
  }
  pending->result = *r;
  pending->done = true;
  pending->cv.notify_all();
  return std::move(*r);
}

}  // namespace strata
