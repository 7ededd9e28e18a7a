// IntentLog: the crash-safety log of coarse regions about to be written
// (internal; format in docs/formats/tracker-state.md §4).
//
// Before a mark touching a region not yet recorded in the current intent
// epoch returns, the region is appended to the log and the log is fsynced.
// Concurrent recorders are batched (group commit): one leader writes and
// syncs every pending region, the others wait for it.
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

#include "extents/status.h"
#include "formats/env.h"
#include "formats/file.h"

namespace strata::tracker_internal {

class IntentLog {
 public:
  // Creates `path` (must not exist), writes and syncs the header, and syncs
  // the directory, so the file is durable before any mark depends on it.
  static Result<std::unique_ptr<IntentLog>> Create(Env* env, const std::string& path, uint64_t epoch,
                                                   uint64_t disk_size, uint32_t region_shift);

  uint64_t epoch() const { return epoch_; }
  const std::string& path() const { return path_; }
  uint32_t region_shift() const { return region_shift_; }

  // Whether `region` is durably recorded (acquire: pairs with the release
  // store made after the fsync that made it durable).
  bool IsRecorded(uint64_t region) const {
    return (recorded_[region >> 6].load(std::memory_order_acquire) >> (region & 63)) & 1;
  }
  // Makes regions [first, last] durable; returns once they are. The error of
  // a failed write or sync is sticky: every later call fails too.
  Status Record(uint64_t first, uint64_t last);
  // Number of fsyncs issued (for benchmarks and tests).
  uint64_t syncs() const { return syncs_.load(std::memory_order_relaxed); }

 private:
  IntentLog(std::string path, std::unique_ptr<File> file, uint64_t epoch, uint64_t regions,
            uint32_t region_shift);
  void SetRecorded(uint64_t region) {
    recorded_[region >> 6].fetch_or(uint64_t{1} << (region & 63), std::memory_order_release);
  }

  const std::string path_;
  std::unique_ptr<File> file_;
  const uint64_t epoch_;
  const uint64_t regions_;
  const uint32_t region_shift_;
  std::unique_ptr<std::atomic<uint64_t>[]> recorded_;
  std::atomic<uint64_t> syncs_{0};

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<uint64_t> pending_;        // guarded by mu_
  std::vector<uint8_t> pending_bits_;    // 1 per region queued or recorded; guarded by mu_
  bool leader_active_ = false;           // guarded by mu_
  uint64_t append_at_;                   // guarded by mu_ (leader only writes)
  Status error_;                         // sticky; guarded by mu_
};

}  // namespace strata::tracker_internal

#endif  // STRATA_ENGINE_TRACKER_INTENT_LOG_H_
