#include "engine/tracker/dense_bitmap.h"

#include <bit>
#include <new>
#include <string>

namespace strata::tracker_internal {

Result<std::unique_ptr<DenseBitmap>> DenseBitmap::Create(uint64_t nbits) {
  uint64_t nchunks = (nbits >> kChunkShift) + ((nbits & (kChunkBits - 1)) != 0);
  if (nchunks > kMaxChunks) {
    return Status::Unsupported("active bitmap of " + std::to_string(nbits) +
                               " blocks is too large; use a coarser granularity");
  }
  return std::unique_ptr<DenseBitmap>(new DenseBitmap(nbits, nchunks));
}

DenseBitmap::DenseBitmap(uint64_t nbits, uint64_t nchunks)
    : nbits_(nbits), nchunks_(nchunks),
      chunks_(new std::atomic<Chunk*>[nchunks == 0 ? 1 : nchunks]) {
  for (uint64_t i = 0; i < nchunks_; ++i) chunks_[i].store(nullptr, std::memory_order_relaxed);
}

DenseBitmap::~DenseBitmap() {
  for (uint64_t i = 0; i < nchunks_; ++i) delete chunks_[i].load(std::memory_order_relaxed);
}

DenseBitmap::Chunk* DenseBitmap::AllocChunk(uint64_t ci) {
  // Value-initialised: every atomic starts at zero (C++20).
  Chunk* fresh = new Chunk();
  Chunk* expected = nullptr;
  // acq_rel: publishes the zeroed chunk; on failure acquires the winner's.
  if (chunks_[ci].compare_exchange_strong(expected, fresh, std::memory_order_acq_rel,
                                          std::memory_order_acquire)) {
    allocated_chunks_.fetch_add(1, std::memory_order_relaxed);
    return fresh;
  }
  delete fresh;
  return expected;
}

Status DenseBitmap::Collect(ExtentSet* out, bool clear) const {
  // Runs are coalesced across words and chunks before touching Roaring.
  uint64_t run_start = 0, run_end = 0;  // pending run [start, end), empty if equal
  // Ascending runs append to Roaring's last container: no search, no
  // memmove (AddBlockList's sort did not help here, measured).
  auto add_run = [&](uint64_t s, uint64_t e) -> Status { return out->AddBlocks({s, e - s}); };
  auto emit = [&](uint64_t s, uint64_t e) -> Status {
    if (run_end == s && run_end != run_start) {
      run_end = e;
      return Status::Ok();
    }
    if (run_end != run_start) STRATA_RETURN_IF_ERROR(add_run(run_start, run_end));
    run_start = s;
    run_end = e;
    return Status::Ok();
  };
  for (uint64_t ci = 0; ci < nchunks_; ++ci) {
    Chunk* c = chunks_[ci].load(std::memory_order_acquire);
    if (c == nullptr) continue;
    for (uint64_t si = 0; si < kSummaryWords; ++si) {
      uint64_t sum = c->summary[si].load(std::memory_order_relaxed);
      if (sum == 0) continue;
      if (clear) c->summary[si].store(0, std::memory_order_relaxed);
      while (sum) {
        uint64_t wi = si * 64 + static_cast<uint64_t>(std::countr_zero(sum));
        sum &= sum - 1;
        uint64_t w = c->words[wi].load(std::memory_order_relaxed);
        if (clear) c->words[wi].store(0, std::memory_order_relaxed);
        uint64_t base = (ci << kChunkShift) + wi * 64;
        while (w) {
          int s = std::countr_zero(w);
          uint64_t shifted = w >> s;
          int len = shifted == ~uint64_t{0} ? 64 - s : std::countr_zero(~shifted);
          STRATA_RETURN_IF_ERROR(emit(base + static_cast<uint64_t>(s),
                                      base + static_cast<uint64_t>(s + len)));
          if (s + len >= 64) break;
          w &= ~uint64_t{0} << (s + len);
        }
      }
    }
  }
  if (run_end != run_start) STRATA_RETURN_IF_ERROR(add_run(run_start, run_end));
  return Status::Ok();
}

Status DenseBitmap::Snapshot(ExtentSet* out) const { return Collect(out, false); }

Status DenseBitmap::Drain(ExtentSet* out) { return Collect(out, true); }

bool DenseBitmap::Empty() const {
  for (uint64_t ci = 0; ci < nchunks_; ++ci) {
    Chunk* c = chunks_[ci].load(std::memory_order_acquire);
    if (c == nullptr) continue;
    for (uint64_t si = 0; si < kSummaryWords; ++si) {
      if (c->summary[si].load(std::memory_order_relaxed) != 0) return false;
    }
  }
  return true;
}

size_t DenseBitmap::MemoryBytes() const {
  return static_cast<size_t>(nchunks_ * sizeof(std::atomic<Chunk*>) +
                             allocated_chunks_.load(std::memory_order_relaxed) * sizeof(Chunk));
}

}  // namespace strata::tracker_internal
