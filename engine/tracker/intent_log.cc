#include "engine/tracker/intent_log.h"

#include <algorithm>
#include <limits>

namespace strata::tracker_internal {

Result<std::unique_ptr<IntentLog>> IntentLog::Create(Env* env, const std::string& path, uint64_t epoch,
                                                     uint64_t disk_size, uint32_t region_shift) {
  if (env->Exists(path)) return Status::AlreadyExists(path + ": already exists");
  IntentHeader h;
  h.epoch = epoch;
  h.disk_size = disk_size;
  h.region_shift = static_cast<uint8_t>(region_shift);
  h.capacity = std::min(kIntentInitialCapacity, IntentMaxCapacity(disk_size, region_shift));
  std::vector<uint8_t> bytes = EncodeIntentHeader(h);
  bytes.resize(h.capacity * kIntentSectorSize, 0);
  // Published by rename: under its name a log always has its full header
  // and capacity, so a short file or a bad header can only be damage.
  STRATA_RETURN_IF_ERROR(env->WriteFileAtomic(path, bytes));
  STRATA_ASSIGN_OR_RETURN(auto file, env->Open(path, OpenMode::kReadWrite));
  return std::unique_ptr<IntentLog>(new IntentLog(path, std::move(file), h));
}

IntentLog::IntentLog(std::string path, std::unique_ptr<File> file, const IntentHeader& h)
    : path_(std::move(path)), file_(std::move(file)), epoch_(h.epoch),
      regions_(IntentRegionCount(h.disk_size, h.region_shift)), region_shift_(h.region_shift), header_(h),
      max_capacity_(IntentMaxCapacity(h.disk_size, h.region_shift)),
      recorded_(new std::atomic<uint64_t>[regions_ / 64 + 1]), pending_bits_(regions_, 0) {
  for (uint64_t i = 0; i < regions_ / 64 + 1; ++i) recorded_[i].store(0, std::memory_order_relaxed);
}

Status IntentLog::Grow() {
  const uint64_t cap = std::min(header_.capacity * 2, max_capacity_);
  if (cap <= header_.capacity) {
    // Cannot happen: every commit sector records at least one region new to
    // this epoch, and max_capacity_ has a sector for each region.
    return Status::Corruption(path_ + ": intent log full at " + std::to_string(header_.capacity) + " sectors");
  }
  // 1. The zeroed extension is durable before the header names it, so a
  //    file shorter than its header's capacity is always damage.
  std::vector<uint8_t> zeros((cap - header_.capacity) * kIntentSectorSize, 0);
  STRATA_RETURN_IF_ERROR(file_->Write(header_.capacity * kIntentSectorSize, zeros));
  STRATA_RETURN_IF_ERROR(file_->Sync());
  syncs_.fetch_add(1, std::memory_order_relaxed);
  // 2. The header sector, rewritten whole (atomic): old or new capacity.
  IntentHeader h = header_;
  h.capacity = cap;
  STRATA_RETURN_IF_ERROR(file_->Write(0, EncodeIntentHeader(h)));
  STRATA_RETURN_IF_ERROR(file_->Sync());
  syncs_.fetch_add(1, std::memory_order_relaxed);
  header_ = h;
  return Status::Ok();
}

Status IntentLog::Commit(std::vector<uint64_t>& batch) {
  std::sort(batch.begin(), batch.end());
  std::vector<IntentRange> ranges;
  for (uint64_t r : batch) {
    if (!ranges.empty() && ranges.back().first + ranges.back().count == r &&
        ranges.back().count < std::numeric_limits<uint32_t>::max()) {
      ++ranges.back().count;
    } else {
      ranges.push_back({r, 1});
    }
  }
  // One sector per commit, each synced before the next is written: after a
  // crash the valid sectors are a prefix and everything after is zero.
  for (size_t i = 0; i < ranges.size(); i += kIntentSectorEntries) {
    if (next_sector_ >= header_.capacity) STRATA_RETURN_IF_ERROR(Grow());
    const size_t n = std::min<size_t>(kIntentSectorEntries, ranges.size() - i);
    uint8_t sector[kIntentSectorSize];
    EncodeIntentSector(epoch_, next_sector_, std::span<const IntentRange>(ranges).subspan(i, n), sector);
    STRATA_RETURN_IF_ERROR(file_->Write(next_sector_ * kIntentSectorSize, sector));
    Status s = file_->Sync();
    syncs_.fetch_add(1, std::memory_order_relaxed);
    STRATA_RETURN_IF_ERROR(s);
    ++next_sector_;
  }
  return Status::Ok();
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
    // Become the leader: write and sync everything queued so far without
    // holding the lock during the I/O.
    leader_active_ = true;
    std::vector<uint64_t> batch;
    batch.swap(pending_);
    lock.unlock();
    Status s = Commit(batch);
    lock.lock();
    leader_active_ = false;
    if (s.ok()) {
      for (uint64_t r : batch) SetRecorded(r);
    } else {
      error_ = s.WithContext("intent log");
    }
    cv_.notify_all();
  }
}

Result<IntentLogContents> ReadIntentLog(Env* env, const std::string& path) {
  STRATA_ASSIGN_OR_RETURN(auto f, env->Open(path, OpenMode::kReadOnly));
  STRATA_ASSIGN_OR_RETURN(uint64_t size, f->Size());
  std::vector<uint8_t> buf(std::min<uint64_t>(size, kIntentSectorSize));
  STRATA_RETURN_IF_ERROR(f->ReadFull(0, buf));
  STRATA_ASSIGN_OR_RETURN(IntentLogDecoder d, IntentLogDecoder::Start(buf, size, path));
  constexpr uint64_t kChunk = 256 * kIntentSectorSize;
  // A buffer of its own, not buf resized: GCC 12 at -O3 (Release) reports
  // the resize of the one-sector buffer as an overflow (-Wstringop-overflow).
  std::vector<uint8_t> chunk(size > kIntentSectorSize ? kChunk : 0);
  for (uint64_t off = kIntentSectorSize; off < size; off += kChunk) {
    std::span<uint8_t> piece(chunk.data(), static_cast<size_t>(std::min(kChunk, size - off)));
    STRATA_RETURN_IF_ERROR(f->ReadFull(off, piece));
    STRATA_RETURN_IF_ERROR(d.Feed(off, piece));
  }
  return d.Finish();
}

}  // namespace strata::tracker_internal
