// IntentLog: the crash-safety log of coarse regions about to be written
// (internal; format in docs/formats/tracker-state.md §4).
//
// Before a mark touching a region not yet recorded in the current intent
// epoch returns, the region is made durable in the log. Concurrent recorders
// are batched (group commit): one leader writes every pending region as one
// 512-byte sector at the next sector-aligned offset and syncs it (a batch of
// more than 40 disjoint ranges takes one sector and one sync each, in
// order), the others wait for it. All I/O goes through Env/File, so FaultEnv
// sees every write and sync.
//
// Thread safety: all methods may be called concurrently.
#ifndef STRATA_ENGINE_TRACKER_INTENT_LOG_H_
#define STRATA_ENGINE_TRACKER_INTENT_LOG_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/tracker/state_format.h"
#include "strata/status.h"
#include "strata/env.h"
#include "strata/file.h"

namespace strata::tracker_internal {

class IntentLog {
 public:
  // Writes the header and the zeroed initial capacity to a temporary file,
  // syncs it and renames it to `path` (which must not exist), then syncs the
  // directory: a log is never visible under its name before all of that is
  // durable (§4.4).
  static Result<std::unique_ptr<IntentLog>> Create(Env* env, const std::string& path, uint64_t epoch,
                                                   uint64_t disk_size, uint32_t region_shift);

  uint64_t epoch() const { return epoch_; }
  const std::string& path() const { return path_; }
  uint32_t region_shift() const { return region_shift_; }

  // Whether `region` is durably recorded (acquire: pairs with the release
  // store made after the sync that made it durable).
  bool IsRecorded(uint64_t region) const {
    return (recorded_[region >> 6].load(std::memory_order_acquire) >> (region & 63)) & 1;
  }
  // Makes regions [first, last] durable; returns once they are. The error of
  // a failed write or sync is sticky: every later call fails too.
  Status Record(uint64_t first, uint64_t last);
  // Number of syncs issued (for benchmarks and tests).
  uint64_t syncs() const { return syncs_.load(std::memory_order_relaxed); }

 private:
  IntentLog(std::string path, std::unique_ptr<File> file, const IntentHeader& header);
  void SetRecorded(uint64_t region) {
    recorded_[region >> 6].fetch_or(uint64_t{1} << (region & 63), std::memory_order_release);
  }
  // Leader only (no lock held): writes `batch` as commit sectors.
  Status Commit(std::vector<uint64_t>& batch);
  // Leader only: doubles the preallocated capacity (zeros, sync, then the
  // header naming the new capacity, sync).
  Status Grow();

  const std::string path_;
  std::unique_ptr<File> file_;
  const uint64_t epoch_;
  const uint64_t regions_;
  const uint32_t region_shift_;
  IntentHeader header_;           // leader only after construction
  uint64_t next_sector_ = 1;      // leader only
  const uint64_t max_capacity_;
  std::unique_ptr<std::atomic<uint64_t>[]> recorded_;
  std::atomic<uint64_t> syncs_{0};

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<uint64_t> pending_;        // guarded by mu_
  std::vector<uint8_t> pending_bits_;    // 1 per region queued or recorded; guarded by mu_
  bool leader_active_ = false;           // guarded by mu_
  Status error_;                         // sticky; guarded by mu_
};

// Reads and validates a whole intent log through `env`, streaming it sector
// by sector (§4.5). kCorruption for any damage, kUnsupported for another
// version.
Result<IntentLogContents> ReadIntentLog(Env* env, const std::string& path);

}  // namespace strata::tracker_internal

#endif  // STRATA_ENGINE_TRACKER_INTENT_LOG_H_
