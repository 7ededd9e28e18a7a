// Chain resolution, sequential reads of a resolved chain, verification and
// offline merge (pipeline.h).
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <thread>

#include "engine/backup/chain_image.h"
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


Status VerifyArchive(const ArchiveReader& a, unsigned threads) {
  const ArchiveIndex& idx = a.index();
  const uint32_t frames = static_cast<uint32_t>(idx.frames.size());
  // Zero extents need no data; every other extent is checked by whoever
  // decompresses its frame. Frames no extent refers to are still read and
  // checked (every stored byte is covered).
  std::vector<uint32_t> first(frames + 1, 0);  // extents of frame f: order[first[f], first[f+1])
  std::vector<uint32_t> order;
  for (uint32_t i = 0; i < idx.extents.size(); ++i) {
    const ExtentRecord& e = idx.extents[i];
    if (e.is_zero()) {
      STRATA_RETURN_IF_ERROR(a.CheckExtent(e, {}));
    } else if (e.frame >= frames) {
      return Status::Corruption(a.path() + ": extent at guest offset " + std::to_string(e.guest_offset) +
                                " names frame " + std::to_string(e.frame) + " of " + std::to_string(frames));
    } else {
      ++first[e.frame + 1];
    }
  }
  for (uint32_t f = 0; f < frames; ++f) first[f + 1] += first[f];
  order.resize(first[frames]);
  {
    std::vector<uint32_t> fill(first.begin(), first.end() - 1);
    for (uint32_t i = 0; i < idx.extents.size(); ++i) {
      const ExtentRecord& e = idx.extents[i];
      if (!e.is_zero()) order[fill[e.frame]++] = i;
    }
  }
  // Frames are independent: workers take them in file order (so the reads
  // stay sequential for the kernel's readahead) and decompress in parallel.
  // The error reported is the one of the first bad frame, as a sequential
  // check would report it.
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  threads = std::min<unsigned>(threads, std::max<uint32_t>(frames, 1));
  std::atomic<uint32_t> next{0};
  std::mutex mu;
  uint32_t bad_frame = UINT32_MAX;
  Status bad = Status::Ok();
  auto work = [&] {
    std::unique_ptr<ZSTD_DCtx, DCtxDeleter> dctx(ZSTD_createDCtx());
    std::vector<uint8_t> raw, comp;
    for (;;) {
      uint32_t f = next.fetch_add(1, std::memory_order_relaxed);
      if (f >= frames) return;
      if (raw.size() < idx.frames[f].raw_size) raw.resize(idx.frames[f].raw_size);
      Status s = a.ReadFrame(f, std::span<uint8_t>(raw), &comp, dctx.get());
      for (uint32_t k = first[f]; s.ok() && k < first[f + 1]; ++k) s = a.CheckExtent(idx.extents[order[k]], raw);
      if (!s.ok()) {
        std::lock_guard<std::mutex> l(mu);
        if (f < bad_frame) {
          bad_frame = f;
          bad = std::move(s);
        }
        // Frames after this one cannot change the answer; earlier ones can.
        uint32_t cur = next.load();
        while (cur < frames && !next.compare_exchange_weak(cur, frames)) {}
        return;
      }
    }
  };
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  return bad;
}

Result<std::unique_ptr<Image>> OpenChainImage(const std::vector<const ArchiveReader*>& chain) {
  // Merges read the view in chunk-sized pieces, in order: a few frames of
  // the largest chunk size in the chain are all the cache needs to hold.
  ChainImageOptions o;
  o.cache_bytes = 8u << 20;
  for (const ArchiveReader* a : chain) o.cache_bytes = std::max<uint64_t>(o.cache_bytes, 4ull * a->header().chunk_size);
  STRATA_ASSIGN_OR_RETURN(auto image, ChainImage::Open(chain, o));
  return std::unique_ptr<Image>(std::move(image));
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
