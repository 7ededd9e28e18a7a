// ChainImage (chain_image.h): resolved segments, a frame cache shared by
// every reader thread, and a pool of decompression contexts.
#include "engine/backup/chain_image.h"

#include <zstd.h>

#include <algorithm>
#include <cstring>

#include "extents/endian.h"

namespace strata {

using internal::Segment;
using internal::SegIsZero;

struct ChainImage::Scratch {
  std::unique_ptr<ZSTD_DCtx, internal::DCtxDeleter> dctx{ZSTD_createDCtx()};
  std::vector<uint8_t> comp;
};

// Buffers of the chain's largest frame size, handed back when the last
// holder of a frame drops it (evicted from the cache, copied from by the
// last reader). Touching fresh memory runs at 0.5-0.8 GB/s on the guests
// this serves from (shared/reference/limits.md), slower than decompressing
// into it: a 1 MiB frame in a new buffer cost more in page faults than in
// zstd. Frames under half that size get exact buffers (not pooled), so small
// frames of sparse incrementals do not pin large buffers in the cache.
class ChainImage::BufferPool {
 public:
  BufferPool(size_t buffer_size, size_t keep) : size_(buffer_size), keep_(keep) {}
  FramePtr Make(size_t n, const std::shared_ptr<BufferPool>& self) {
    if (n < size_ / 2) return std::make_shared<FrameData>(n);
    std::unique_ptr<uint8_t[]> b;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!free_.empty()) {
        b = std::move(free_.back());
        free_.pop_back();
      }
    }
    if (!b) b.reset(new uint8_t[size_]);
    return FramePtr(new FrameData(std::move(b), n, size_), [self](const FrameData* f) {
      self->Give(std::move(const_cast<FrameData*>(f)->bytes));
      delete f;
    });
  }

 private:
  void Give(std::unique_ptr<uint8_t[]> b) {
    std::lock_guard<std::mutex> l(mu_);
    if (free_.size() < keep_) free_.push_back(std::move(b));
  }
  const size_t size_, keep_;
  std::mutex mu_;
  std::vector<std::unique_ptr<uint8_t[]>> free_;
};

ChainImage::ChainImage(std::vector<const ArchiveReader*> chain, std::vector<Segment> segs,
                       const ChainImageOptions& options)
    : chain_(std::move(chain)),
      segs_(std::move(segs)),
      disk_size_(chain_[0]->header().disk_size),
      name_("backup " + IdToHex(chain_[0]->header().id)),
      cache_(options.cache_bytes) {
  uint32_t largest = 0;
  for (const ArchiveReader* a : chain_) {
    for (const FrameRecord& f : a->index().frames) largest = std::max(largest, f.raw_size);
  }
  // Enough free buffers for every thread loading or copying at once
  // (nbdkit's 16 per connection, FUSE's workers), at most 64 MiB of them.
  pool_ = std::make_shared<BufferPool>(largest, std::clamp<size_t>((64u << 20) / std::max<uint32_t>(largest, 1), 4, 64));
  // Index each archive's data extents by frame (counting sort), so a frame
  // can be checked whole when it is loaded.
  for (const ArchiveReader* a : chain_) {
    const auto& ext = a->index().extents;
    const size_t nf = a->index().frames.size();
    std::vector<uint32_t> first(nf + 1, 0), list;
    for (const ExtentRecord& e : ext) {
      if (!e.is_zero()) ++first[e.frame + 1];  // frame < nf: checked when the index was read
    }
    for (size_t f = 0; f < nf; ++f) first[f + 1] += first[f];
    list.resize(first[nf]);
    std::vector<uint32_t> fill(first.begin(), first.end() - 1);
    for (uint32_t i = 0; i < ext.size(); ++i) {
      if (!ext[i].is_zero()) list[fill[ext[i].frame]++] = i;
    }
    frame_first_.push_back(std::move(first));
    frame_ext_.push_back(std::move(list));
    auto flags = std::make_unique<std::atomic<bool>[]>(ext.size());
    for (size_t i = 0; i < ext.size(); ++i) flags[i].store(false, std::memory_order_relaxed);
    zero_checked_.push_back(std::move(flags));
  }
}

ChainImage::~ChainImage() = default;

Result<std::unique_ptr<ChainImage>> ChainImage::Open(const std::vector<const ArchiveReader*>& chain,
                                                     const ChainImageOptions& options) {
  STRATA_ASSIGN_OR_RETURN(std::vector<Segment> segs, internal::Resolve(chain));
  if (segs.empty()) return Status::InvalidArgument("cannot open an empty disk as an image");
  return std::unique_ptr<ChainImage>(new ChainImage(chain, std::move(segs), options));
}

size_t ChainImage::Find(uint64_t pos) const {
  auto it = std::upper_bound(segs_.begin(), segs_.end(), pos,
                             [](uint64_t p, const Segment& s) { return p < s.offset; });
  return static_cast<size_t>(it - segs_.begin()) - 1;
}

std::unique_ptr<ChainImage::Scratch> ChainImage::TakeScratch() {
  {
    std::lock_guard<std::mutex> l(scratch_mu_);
    if (!scratch_.empty()) {
      auto s = std::move(scratch_.back());
      scratch_.pop_back();
      return s;
    }
  }
  return std::make_unique<Scratch>();
}

void ChainImage::GiveScratch(std::unique_ptr<Scratch> s) {
  std::lock_guard<std::mutex> l(scratch_mu_);
  scratch_.push_back(std::move(s));
}

Result<FramePtr> ChainImage::LoadFrame(int archive, uint32_t frame) {
  const ArchiveReader& a = *chain_[archive];
  const FrameRecord& rec = a.index().frames[frame];
  FramePtr data = pool_->Make(rec.raw_size, pool_);
  std::unique_ptr<Scratch> s = TakeScratch();
  Status st = a.ReadFrame(frame, {data->bytes.get(), data->size}, &s->comp, s->dctx.get());
  GiveScratch(std::move(s));
  STRATA_RETURN_IF_ERROR(st);
  // Every extent stored in the frame, also those newer backups have
  // replaced: a cached frame is checked whole (docs/formats/archive.md §6).
  const auto& first = frame_first_[archive];
  for (uint32_t i = first[frame]; i < first[frame + 1]; ++i) {
    STRATA_RETURN_IF_ERROR(a.CheckExtent(a.index().extents[frame_ext_[archive][i]], data->span()));
  }
  frames_decompressed_.fetch_add(1, std::memory_order_relaxed);
  bytes_decompressed_.fetch_add(rec.raw_size, std::memory_order_relaxed);
  return data;
}

Result<FramePtr> ChainImage::Frame(int archive, uint32_t frame) {
  uint64_t key = (static_cast<uint64_t>(archive) << 32) | frame;
  return cache_.Get(key, [&] { return LoadFrame(archive, frame); });
}

Status ChainImage::CheckZero(int archive, uint32_t extent) {
  // Zero extents carry the hash of their zeros; check each once.
  std::atomic<bool>& done = zero_checked_[archive][extent];
  if (done.load(std::memory_order_acquire)) return Status::Ok();
  const ArchiveReader& a = *chain_[archive];
  STRATA_RETURN_IF_ERROR(a.CheckExtent(a.index().extents[extent], {}));
  done.store(true, std::memory_order_release);
  return Status::Ok();
}

Status ChainImage::Read(uint64_t offset, std::span<uint8_t> buf) {
  STRATA_RETURN_IF_ERROR(CheckRange(offset, buf.size(), size()).WithContext(name_));
  uint64_t pos = offset, end = offset + buf.size();
  FramePtr frame;  // the last frame used: consecutive segments often share it
  uint64_t frame_key = ~uint64_t{0};
  for (size_t i = Find(pos); pos < end; ++i) {
    const Segment& s = segs_[i];
    uint64_t n = std::min(end, s.offset + s.length) - pos;
    uint8_t* dst = buf.data() + (pos - offset);
    if (SegIsZero(chain_, s)) {
      if (s.archive >= 0) STRATA_RETURN_IF_ERROR(CheckZero(s.archive, s.extent));
      std::memset(dst, 0, n);
    } else {
      const ExtentRecord& e = chain_[s.archive]->index().extents[s.extent];
      uint64_t key = (static_cast<uint64_t>(s.archive) << 32) | e.frame;
      if (key != frame_key) {
        STRATA_ASSIGN_OR_RETURN(frame, Frame(s.archive, e.frame));
        frame_key = key;
      }
      std::memcpy(dst, frame->bytes.get() + e.offset_in_frame + (pos - e.guest_offset), n);
    }
    pos += n;
  }
  return Status::Ok();
}

Status ChainImage::Prefetch(uint64_t offset, uint64_t length) {
  STRATA_RETURN_IF_ERROR(CheckRange(offset, length, size()).WithContext(name_));
  uint64_t pos = offset, end = offset + length, last = ~uint64_t{0};
  for (size_t i = Find(pos); pos < end; ++i) {
    const Segment& s = segs_[i];
    pos = std::min(end, s.offset + s.length);
    if (SegIsZero(chain_, s)) continue;
    const ExtentRecord& e = chain_[s.archive]->index().extents[s.extent];
    uint64_t key = (static_cast<uint64_t>(s.archive) << 32) | e.frame;
    if (key == last) continue;
    last = key;
    STRATA_RETURN_IF_ERROR(Frame(s.archive, e.frame).status());
  }
  return Status::Ok();
}

Status ChainImage::BlockStatus(uint64_t offset, uint64_t length, std::vector<MapEntry>* out) {
  STRATA_RETURN_IF_ERROR(CheckRange(offset, length, size()).WithContext(name_));
  Map(offset, length, [&](uint64_t start, uint64_t len, bool zero) {
    MapEntry e;
    e.start = start;
    e.length = len;
    e.present = true;
    e.data = !zero;
    e.zero = zero;
    out->push_back(e);
    return true;
  });
  return Status::Ok();
}

void ChainImage::Map(uint64_t offset, uint64_t length,
                     const std::function<bool(uint64_t, uint64_t, bool)>& fn) const {
  uint64_t end = std::min(disk_size_, offset + length);
  if (offset >= end) return;
  uint64_t run_start = offset, pos = offset;
  bool run_zero = false;
  for (size_t i = Find(pos); pos < end; ++i) {
    const Segment& s = segs_[i];
    bool zero = SegIsZero(chain_, s);
    if (pos == offset) {
      run_zero = zero;
    } else if (zero != run_zero) {
      if (!fn(run_start, pos - run_start, run_zero)) return;
      run_start = pos;
      run_zero = zero;
    }
    pos = std::min(end, s.offset + s.length);
  }
  fn(run_start, pos - run_start, run_zero);
}

ChainImageStats ChainImage::stats() const {
  ChainImageStats s;
  s.cache = cache_.stats();
  s.frames_decompressed = frames_decompressed_.load(std::memory_order_relaxed);
  s.bytes_decompressed = bytes_decompressed_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace strata
