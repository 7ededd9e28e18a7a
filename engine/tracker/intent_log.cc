#include "engine/tracker/intent_log.h"

#include "engine/tracker/state_format.h"

namespace strata::tracker_internal {

Result<std::unique_ptr<IntentLog>> IntentLog::Create(Env* env, const std::string& path, uint64_t epoch,
                                                     uint64_t disk_size, uint32_t region_shift) {
  STRATA_ASSIGN_OR_RETURN(auto file, env->Open(path, OpenMode::kCreateExclusive));
  IntentHeader h;
  h.epoch = epoch;
  h.disk_size = disk_size;
  h.region_shift = static_cast<uint8_t>(region_shift);
  std::string hdr = EncodeIntentHeader(h);
  STRATA_RETURN_IF_ERROR(file->Write(0, {reinterpret_cast<const uint8_t*>(hdr.data()), hdr.size()}));
  STRATA_RETURN_IF_ERROR(file->Sync());
  STRATA_RETURN_IF_ERROR(env->SyncDirOf(path));
  uint64_t regions = (disk_size >> region_shift) +
                     ((disk_size & ((uint64_t{1} << region_shift) - 1)) != 0);
  return std::unique_ptr<IntentLog>(
      new IntentLog(path, std::move(file), epoch, regions, region_shift));
}

IntentLog::IntentLog(std::string path, std::unique_ptr<File> file, uint64_t epoch,
                     uint64_t regions, uint32_t region_shift)
    : path_(std::move(path)), file_(std::move(file)), epoch_(epoch), regions_(regions),
      region_shift_(region_shift), recorded_(new std::atomic<uint64_t>[regions / 64 + 1]),
      pending_bits_(regions, 0), append_at_(kIntentHeaderSize) {
  for (uint64_t i = 0; i < regions / 64 + 1; ++i) recorded_[i].store(0, std::memory_order_relaxed);
}

Status IntentLog::Record(uint64_t first, uint64_t last) {
  std::unique_lock<std::mutex> lock(mu_);
  for (uint64_t r = first; r <= last && r < regions_; ++r) {
    if (!pending_bits_[r]) {
      pending_bits_[r] = 1;
      pending_.push_back(r);
    }
  }
  auto all_recorded = [&] {
    for (uint64_t r = first; r <= last && r < regions_; ++r) {
      if (!IsRecorded(r)) return false;
    }
    return true;
  };
  for (;;) {
    if (!error_.ok()) return error_;
    if (all_recorded()) return Status::Ok();
    if (leader_active_) {
      cv_.wait(lock);
      continue;
    }
    // Become the leader: write and sync everything queued so far, in one
    // write and one fsync, without holding the lock during the I/O.
    leader_active_ = true;
    std::vector<uint64_t> batch;
    batch.swap(pending_);
    uint64_t at = append_at_;
    lock.unlock();
    std::vector<uint8_t> buf(batch.size() * kIntentRecordSize);
    for (size_t i = 0; i < batch.size(); ++i) {
      EncodeIntentRecord(epoch_, batch[i], buf.data() + i * kIntentRecordSize);
    }
    Status s = file_->Write(at, buf);
    if (s.ok()) s = file_->Sync();
    syncs_.fetch_add(1, std::memory_order_relaxed);
    lock.lock();
    leader_active_ = false;
    if (s.ok()) {
      append_at_ = at + buf.size();
      for (uint64_t r : batch) SetRecorded(r);
    } else {
      error_ = s.WithContext("intent log");
    }
    cv_.notify_all();
  }
}

}  // namespace strata::tracker_internal
