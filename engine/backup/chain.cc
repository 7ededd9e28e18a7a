// Chain resolution, sequential reads of a resolved chain, verification and
// offline merge (pipeline.h).
#include <zstd.h>

#include <algorithm>
#include <cstring>

#include "strata/pipeline.h"
#include "engine/backup/pipeline_internal.h"
#include "extents/endian.h"

namespace strata {

using internal::DCtxDeleter;
using internal::Resolve;
using internal::SegIsZero;
using internal::Segment;

// ---- chain resolution ----

Status CheckChain(const std::vector<const ArchiveReader*>& chain) {
  if (chain.empty()) return Status::InvalidArgument("empty backup chain");
  for (size_t i = 0; i < chain.size(); ++i) {
    const ArchiveHeader& h = chain[i]->header();
    if (h.disk_size != chain[0]->header().disk_size ||
        h.granularity_shift != chain[0]->header().granularity_shift) {
      return Status::Corruption(chain[i]->path() + ": disk size or granularity differs from " +
                                chain[0]->path());
    }
    if (i + 1 == chain.size()) {
      if (!h.is_full()) {
        return Status::NotFound(chain[i]->path() + ": parent " + IdToHex(h.parent_id) +
                                " is missing: the chain has no full backup");
      }
      break;
    }
    const ArchiveHeader& p = chain[i + 1]->header();
    if (h.parent_id != p.id || h.parent_identity != IdentityCheck(p)) {
      return Status::Corruption(chain[i]->path() + ": parent is " + IdToHex(h.parent_id) +
                                " but the chain continues with " + chain[i + 1]->path());
    }
    // §3.2: an incremental starts exactly where its parent ends, on the same
    // disk. (Version 1 archives carry neither; a version 2 child of one
    // starts at "no point", which is what a version 1 parent ends at.)
    if (h.version >= 2) {
      if (p.version >= 2 && h.disk_id != p.disk_id) {
        return Status::Corruption(chain[i]->path() + ": backup of disk " + Id128ToHex(h.disk_id) +
                                  " built on " + chain[i + 1]->path() + " of disk " +
                                  Id128ToHex(p.disk_id));
      }
      if (h.start != p.end) {
        return Status::Corruption(chain[i]->path() + ": starts at " + h.start.Describe() +
                                  " but its parent " + IdToHex(p.id) + " ends at " + p.end.Describe());
      }
    }
  }
  return Status::Ok();
}

namespace internal {

Result<std::vector<Segment>> Resolve(const std::vector<const ArchiveReader*>& chain) {
  STRATA_RETURN_IF_ERROR(CheckChain(chain));
  const ArchiveHeader& h = chain[0]->header();
  STRATA_ASSIGN_OR_RETURN(Granularity g, Granularity::FromShift(h.granularity_shift));
  STRATA_ASSIGN_OR_RETURN(ExtentSet remaining, ExtentSet::Create(h.disk_size, g));
  STRATA_RETURN_IF_ERROR(remaining.AddBlocks({0, remaining.disk_blocks()}));
  std::vector<Segment> segs;
  for (size_t ai = 0; ai < chain.size(); ++ai) {
    const ArchiveReader& a = *chain[ai];
    STRATA_ASSIGN_OR_RETURN(ExtentSet cov, a.Coverage());
    STRATA_ASSIGN_OR_RETURN(ExtentSet take, ExtentSet::Intersection(cov, remaining));
    STRATA_RETURN_IF_ERROR(remaining.Subtract(cov));
    // Sweep the archive's sorted extents against the sorted runs to take.
    const auto& ext = a.index().extents;
    size_t ei = 0;
    ExtentSet::RunIterator it(take);
    ByteExtent run;
    while (it.Next(&run)) {
      while (ei < ext.size() && ext[ei].guest_offset + ext[ei].length <= run.offset) ++ei;
      for (size_t j = ei; j < ext.size() && ext[j].guest_offset < run.end(); ++j) {
        uint64_t s = std::max(run.offset, ext[j].guest_offset);
        uint64_t e = std::min(run.end(), ext[j].guest_offset + ext[j].length);
        if (s < e) segs.push_back({s, e - s, static_cast<int>(ai), static_cast<uint32_t>(j)});
      }
    }
  }
  ExtentSet::RunIterator it(remaining);
  ByteExtent run;
  while (it.Next(&run)) segs.push_back({run.offset, run.length, -1, 0});
  std::sort(segs.begin(), segs.end(),
            [](const Segment& x, const Segment& y) { return x.offset < y.offset; });
  // The segments must tile the disk exactly.
  uint64_t pos = 0;
  for (const Segment& s : segs) {
    if (s.offset != pos) {
      return Status::Corruption(chain[0]->path() + ": backup chain leaves guest range at " +
                                Hex(pos) + " undefined");
    }
    pos += s.length;
  }
  if (pos != h.disk_size) {
    return Status::Corruption(chain[0]->path() + ": backup chain does not cover the disk");
  }
  return segs;
}

}  // namespace internal

Status ForEachResolved(const std::vector<const ArchiveReader*>& chain,
                       const std::function<Status(uint64_t, std::span<const uint8_t>, uint64_t)>& fn) {
  STRATA_ASSIGN_OR_RETURN(std::vector<Segment> segs, Resolve(chain));
  std::unique_ptr<ZSTD_DCtx, DCtxDeleter> dctx(ZSTD_createDCtx());
  int cached_archive = -1;
  uint32_t cached_frame = 0;
  std::vector<uint8_t> raw;
  for (const Segment& s : segs) {
    if (SegIsZero(chain, s)) {
      STRATA_RETURN_IF_ERROR(fn(s.offset, {}, s.length));
      continue;
    }
    const ArchiveReader& a = *chain[s.archive];
    const ExtentRecord& e = a.index().extents[s.extent];
    if (cached_archive != s.archive || cached_frame != e.frame) {
      STRATA_RETURN_IF_ERROR(a.ReadFrame(e.frame, &raw, dctx.get()));
      cached_archive = s.archive;
      cached_frame = e.frame;
    }
    STRATA_RETURN_IF_ERROR(a.CheckExtent(e, raw));
    const uint8_t* p = raw.data() + e.offset_in_frame + (s.offset - e.guest_offset);
    STRATA_RETURN_IF_ERROR(fn(s.offset, {p, s.length}, 0));
  }
  return Status::Ok();
}


Status VerifyArchive(const ArchiveReader& a) {
  std::unique_ptr<ZSTD_DCtx, DCtxDeleter> dctx(ZSTD_createDCtx());
  std::vector<uint8_t> raw;
  uint32_t loaded = ExtentRecord::kZeroFrame;
  std::vector<bool> seen(a.index().frames.size());
  for (const ExtentRecord& e : a.index().extents) {
    if (!e.is_zero() && e.frame != loaded) {
      STRATA_RETURN_IF_ERROR(a.ReadFrame(e.frame, &raw, dctx.get()));
      loaded = e.frame;
      seen[e.frame] = true;
    }
    STRATA_RETURN_IF_ERROR(a.CheckExtent(e, raw));
  }
  // Frames no extent refers to are still checked (every byte is covered).
  for (uint32_t i = 0; i < seen.size(); ++i) {
    if (!seen[i]) STRATA_RETURN_IF_ERROR(a.ReadFrame(i, &raw, dctx.get()));
  }
  return Status::Ok();
}

namespace {

class ChainImage : public Image {
 public:
  ChainImage(std::vector<const ArchiveReader*> chain, std::vector<Segment> segs)
      : chain_(std::move(chain)), segs_(std::move(segs)), dctx_(ZSTD_createDCtx()) {
    name_ = "backup " + IdToHex(chain_[0]->header().id);
  }
  const std::string& name() const override { return name_; }
  std::string_view format() const override { return "strata-backup"; }
  uint64_t size() const override { return chain_[0]->header().disk_size; }

  Status Read(uint64_t offset, std::span<uint8_t> buf) override {
    STRATA_RETURN_IF_ERROR(CheckRange(offset, buf.size(), size()).WithContext(name_));
    uint64_t pos = offset, end = offset + buf.size();
    for (size_t i = Find(pos); pos < end; ++i) {
      const Segment& s = segs_[i];
      uint64_t n = std::min(end, s.offset + s.length) - pos;
      uint8_t* dst = buf.data() + (pos - offset);
      if (SegIsZero(chain_, s)) {
        std::memset(dst, 0, n);
      } else {
        const ArchiveReader& a = *chain_[s.archive];
        const ExtentRecord& e = a.index().extents[s.extent];
        if (cached_archive_ != s.archive || cached_frame_ != e.frame) {
          STRATA_RETURN_IF_ERROR(a.ReadFrame(e.frame, &raw_, dctx_.get()));
          cached_archive_ = s.archive;
          cached_frame_ = e.frame;
          checked_extent_ = ExtentRecord::kZeroFrame;
        }
        if (checked_extent_ != s.extent) {
          STRATA_RETURN_IF_ERROR(a.CheckExtent(e, raw_));
          checked_extent_ = s.extent;
        }
        std::memcpy(dst, raw_.data() + e.offset_in_frame + (pos - e.guest_offset), n);
      }
      pos += n;
    }
    return Status::Ok();
  }

  Status BlockStatus(uint64_t offset, uint64_t length, std::vector<MapEntry>* out) override {
    STRATA_RETURN_IF_ERROR(CheckRange(offset, length, size()).WithContext(name_));
    uint64_t pos = offset, end = offset + length;
    for (size_t i = Find(pos); pos < end; ++i) {
      const Segment& s = segs_[i];
      uint64_t n = std::min(end, s.offset + s.length) - pos;
      MapEntry e;
      e.start = pos;
      e.length = n;
      e.present = true;
      e.data = !SegIsZero(chain_, s);
      e.zero = !e.data;
      out->push_back(e);
      pos += n;
    }
    return Status::Ok();
  }

 private:
  size_t Find(uint64_t pos) const {
    auto it = std::upper_bound(segs_.begin(), segs_.end(), pos,
                               [](uint64_t p, const Segment& s) { return p < s.offset; });
    return static_cast<size_t>(it - segs_.begin()) - 1;
  }

  std::vector<const ArchiveReader*> chain_;
  std::vector<Segment> segs_;
  std::string name_;
  std::unique_ptr<ZSTD_DCtx, DCtxDeleter> dctx_;
  std::vector<uint8_t> raw_;
  int cached_archive_ = -1;
  uint32_t cached_frame_ = 0, checked_extent_ = ExtentRecord::kZeroFrame;
};

}  // namespace

Result<std::unique_ptr<Image>> OpenChainImage(const std::vector<const ArchiveReader*>& chain) {
  STRATA_ASSIGN_OR_RETURN(std::vector<Segment> segs, Resolve(chain));
  if (segs.empty()) return Status::InvalidArgument("cannot open an empty disk as an image");
  return std::unique_ptr<Image>(new ChainImage(chain, std::move(segs)));
}

Result<BackupStats> FoldIntoChild(const std::vector<const ArchiveReader*>& chain,
                                  const std::string& child_path, const PipelineOptions& opt) {
  if (chain.size() < 2) return Status::InvalidArgument(child_path + ": a full backup has no parent to fold");
  STRATA_ASSIGN_OR_RETURN(auto image, OpenChainImage(chain));
  const ArchiveReader& child = *chain[0];
  const ArchiveReader& removed = *chain[1];
  ArchiveHeader h = child.header();
  h.parent_id = removed.header().parent_id;
  h.parent_identity = removed.header().parent_identity;
  // The folded archive spans both: it starts where `removed` started and
  // ends where the child ended (§8). Disk, content time and source kind stay
  // the child's; `merged` says it was rewritten.
  h.version = kArchiveVersion;
  h.start = removed.header().start;
  h.merged = true;
  if (IsNullId128(h.disk_id)) h.disk_id = removed.header().disk_id;
  STRATA_ASSIGN_OR_RETURN(ExtentSet changes, child.Coverage());
  if (h.is_full()) {
    h.start = ChainPoint{};
    STRATA_RETURN_IF_ERROR(changes.AddBlocks({0, changes.disk_blocks()}));
  } else {
    STRATA_ASSIGN_OR_RETURN(ExtentSet more, removed.Coverage());
    STRATA_RETURN_IF_ERROR(changes.UnionWith(more));
  }
  PipelineOptions o = opt;
  o.chunk_size = child.header().chunk_size;
  o.level = child.header().level;
  return RunBackup(*image, changes, h, child_path, o);
}

}  // namespace strata
