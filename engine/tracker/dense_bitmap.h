// DenseBitmap: the active generation's lock-free block bitmap (internal).
//
// One bit per block, allocated lazily in chunks of 2^18 bits (32 KiB) so a
// huge disk at fine granularity costs memory only where it is written. Each
// chunk keeps a summary word per 64 data words (bit i: data word i of the
// group may be non-zero), so draining a sparse bitmap costs O(dirty words),
// not O(disk size). See docs/design/tracker.md.
//
// Thread safety: Set may run concurrently with Set and with Snapshot.
// Drain needs exclusive access (no concurrent Set).
#ifndef STRATA_ENGINE_TRACKER_DENSE_BITMAP_H_
#define STRATA_ENGINE_TRACKER_DENSE_BITMAP_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "strata/extent_set.h"
#include "strata/status.h"

namespace strata::tracker_internal {

class DenseBitmap {
 public:
  static constexpr uint32_t kChunkShift = 18;
  static constexpr uint64_t kChunkBits = uint64_t{1} << kChunkShift;
  static constexpr uint64_t kChunkWords = kChunkBits / 64;      // 4096
  static constexpr uint64_t kSummaryWords = kChunkWords / 64;   // 64
  // Largest chunk table we allocate up front (8 bytes per chunk): 2^24
  // chunks = 2^42 blocks, e.g. 2 PiB at 512 B granularity.
  static constexpr uint64_t kMaxChunks = uint64_t{1} << 24;

  // kUnsupported when `nbits` needs more than kMaxChunks chunks.
  static Result<std::unique_ptr<DenseBitmap>> Create(uint64_t nbits);
  ~DenseBitmap();
  DenseBitmap(const DenseBitmap&) = delete;
  DenseBitmap& operator=(const DenseBitmap&) = delete;

  uint64_t size() const { return nbits_; }

  // Sets bits [first, first + count). Requires count > 0 and the range
  // inside size() (the caller checked). Lock-free; allocates a chunk only the
  // first time it is touched. Memory order: relaxed; the tracker's in-flight
  // counters order Set against Drain.
  void Set(uint64_t first, uint64_t count) {
    // Inline fast path: one word of an allocated chunk (a 4 KiB write at
    // any granularity >= 512 B).
    if (((first & 63) + count) <= 64) {
      Chunk* c = chunks_[first >> kChunkShift].load(std::memory_order_acquire);
      if (c != nullptr) {
        uint64_t mask = (count == 64 ? ~uint64_t{0} : ((uint64_t{1} << count) - 1)) << (first & 63);
        SetWord(c, (first & (kChunkBits - 1)) >> 6, mask);
        return;
      }
    }
    SetSlow(first, count);
  }
  void SetSlow(uint64_t first, uint64_t count) {
    uint64_t end = first + count;
    while (first < end) {
      uint64_t ci = first >> kChunkShift;
      Chunk* c = chunks_[ci].load(std::memory_order_acquire);
      if (c == nullptr) c = AllocChunk(ci);
      uint64_t chunk_end = (ci + 1) << kChunkShift;
      uint64_t stop = end < chunk_end ? end : chunk_end;
      SetInChunk(c, first & (kChunkBits - 1), stop - first);
      first = stop;
    }
  }

  // Adds every set bit (as a block) to `out`, whose disk must have at least
  // size() blocks. Safe against concurrent Set: bits set concurrently may or
  // may not be included.
  Status Snapshot(ExtentSet* out) const;
  // Adds every set bit to `out` and clears the bitmap, keeping its chunks
  // for reuse. Needs exclusive access.
  Status Drain(ExtentSet* out);
  // Whether no bit is set (exclusive access or a racy answer).
  bool Empty() const;
  // Heap bytes held (chunk table plus allocated chunks).
  size_t MemoryBytes() const;

 private:
  struct Chunk {
    std::atomic<uint64_t> summary[kSummaryWords];
    std::atomic<uint64_t> words[kChunkWords];
  };
  explicit DenseBitmap(uint64_t nbits, uint64_t nchunks);
  Chunk* AllocChunk(uint64_t ci);
  static void SetWord(Chunk* c, uint64_t wi, uint64_t mask) {
    std::atomic<uint64_t>& w = c->words[wi];
    // A relaxed load first: when the bits are already set (re-writes of hot
    // blocks) no read-for-ownership is issued and the line stays shared.
    if ((w.load(std::memory_order_relaxed) & mask) == mask) return;
    uint64_t old = w.fetch_or(mask, std::memory_order_relaxed);
    if (old == 0) {
      std::atomic<uint64_t>& s = c->summary[wi >> 6];
      uint64_t sbit = uint64_t{1} << (wi & 63);
      if ((s.load(std::memory_order_relaxed) & sbit) == 0) {
        s.fetch_or(sbit, std::memory_order_relaxed);
      }
    }
  }
  static void SetInChunk(Chunk* c, uint64_t bit, uint64_t count) {
    uint64_t wi = bit >> 6;
    uint64_t off = bit & 63;
    if (off + count <= 64) {
      uint64_t mask = (count == 64 ? ~uint64_t{0} : ((uint64_t{1} << count) - 1)) << off;
      SetWord(c, wi, mask);
      return;
    }
    SetWord(c, wi, ~uint64_t{0} << off);
    count -= 64 - off;
    ++wi;
    while (count >= 64) {
      SetWord(c, wi++, ~uint64_t{0});
      count -= 64;
    }
    if (count) SetWord(c, wi, (uint64_t{1} << count) - 1);
  }
  Status Collect(ExtentSet* out, bool clear) const;

  uint64_t nbits_;
  uint64_t nchunks_;
  std::unique_ptr<std::atomic<Chunk*>[]> chunks_;
  std::atomic<uint64_t> allocated_chunks_{0};
};

}  // namespace strata::tracker_internal

#endif  // STRATA_ENGINE_TRACKER_DENSE_BITMAP_H_
