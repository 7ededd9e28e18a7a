#include "strata/pipeline.h"
#include "engine/backup/archive_writer.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "engine/backup/pipeline_internal.h"
#include "engine/backup/uring_reader.h"
#include "extents/endian.h"

namespace strata {

using internal::BufferArena;
using internal::CCtxDeleter;
using internal::Clock;
using internal::kDirectAlign;
using internal::Since;
using internal::WorkerCount;

namespace {

bool IsZero(const uint8_t* p, size_t n) {
  // Check a 16-byte prefix, then compare the buffer with itself shifted: the
  // whole range is zero iff both hold. memcmp runs at memory speed.
  size_t head = std::min<size_t>(n, 16);
  for (size_t i = 0; i < head; ++i) {
    if (p[i]) return false;
  }
  return n <= 16 || std::memcmp(p, p + 16, n - 16) == 0;
}
// changed ranges, ascending) within one chunk-aligned window.
struct ReadOp {
  uint64_t offset = 0;
  uint32_t length = 0;
  std::vector<ByteExtent> parts;
};

// Cuts the change set into chunk-aligned reads lazily, so memory does not
// grow with the disk: a run is split at absolute multiples of the chunk size
// (extents then line up across backups, which --scan relies on), and pieces
// in the same window whose gap is at most `gap` share one read.
class Planner {
 public:
  Planner(const ExtentSet& set, uint32_t chunk, uint64_t gap)
      : it_(set), chunk_(chunk), gap_(gap) {}

  bool Next(ReadOp* op) {
    ByteExtent piece;
    if (!NextPiece(&piece)) return false;
    op->offset = piece.offset;
    op->length = static_cast<uint32_t>(piece.length);
    op->parts.assign(1, piece);
    const uint64_t window = piece.offset / chunk_;
    while (NextPiece(&piece)) {
      uint64_t end = op->offset + op->length;
      if (piece.offset / chunk_ != window || piece.offset - end > gap_) {
        pending_ = piece;
        have_pending_ = true;
        break;
      }
      op->length = static_cast<uint32_t>(piece.end() - op->offset);
      op->parts.push_back(piece);
    }
    return true;
  }

 private:
  bool NextPiece(ByteExtent* out) {
    if (have_pending_) {
      *out = pending_;
      have_pending_ = false;
      return true;
    }
    if (run_.length == 0 && !it_.Next(&run_)) return false;
    uint64_t window_end = (run_.offset / chunk_ + 1) * chunk_;
    uint64_t end = std::min(run_.end(), window_end);
    *out = {run_.offset, end - run_.offset};
    run_.length -= end - run_.offset;
    run_.offset = end;
    return true;
  }

  ExtentSet::RunIterator it_;
  uint32_t chunk_;
  uint64_t gap_;
  ByteExtent run_{0, 0}, pending_{0, 0};
  bool have_pending_ = false;
};

struct Slot {
  enum State { kFree, kReading, kRead, kDone };
  State state = kFree;
  uint64_t seq = 0;
  ReadOp op;
  // In BackupRun::arena_: the read buffer, the gathered frame (when a chunk
  // holds several data extents) and the compressed frame.
  std::span<uint8_t> in, frame, out;
  size_t out_size = 0;
  std::vector<ExtentRecord> recs;
  uint32_t raw_size = 0;
  uint64_t data = 0, zero = 0, skipped = 0;
  bool hole = false;  // the source has no data in op's range: nothing was read
};


class BackupRun {
 public:
  BackupRun(Image& image, const ExtentSet& changes, const PipelineOptions& opt,
            const ScanBaseline* scan, ArchiveWriter* writer)
      : image_(image), changes_(changes), opt_(opt), scan_(scan), writer_(writer) {}

  Result<BackupStats> Run() {
    auto t0 = Clock::now();
    const uint32_t chunk = opt_.chunk_size;
    workers_ = WorkerCount(opt_);
    // A slot holds a read buffer, a gathered frame and a compressed frame.
    uint64_t per_slot = 2 * (uint64_t{chunk} + kDirectAlign) + ZSTD_compressBound(chunk + kDirectAlign);
    uint64_t n = std::max<uint64_t>(opt_.queue_depth, 1) + 2 * workers_;
    n = std::min<uint64_t>(n, std::max<uint64_t>(2, opt_.memory_limit / per_slot));
    // Never more slots than reads: a small change set must not pay for
    // buffers it cannot fill (first touches and buffer registration cost
    // tens of milliseconds on these machines: docs/design/backup.md).
    stats_.planned_bytes = changes_.ByteCount();
    reads_bound_ = ReadsBound(changes_, chunk);
    n = std::min<uint64_t>(n, std::max<uint64_t>(1, reads_bound_));
    slots_.resize(n);
    // A read is at most a chunk plus alignment slack; so is a frame.
    const size_t in_size = chunk + kDirectAlign, out_size = ZSTD_compressBound(in_size);
    arena_ = std::make_unique<BufferArena>(n, 2 * in_size + out_size);
    for (size_t i = 0; i < n; ++i) {
      std::span<uint8_t> b = (*arena_)[i];
      slots_[i].in = b.subspan(0, in_size);
      slots_[i].frame = b.subspan(in_size, in_size);
      slots_[i].out = b.subspan(2 * in_size, out_size);
    }
    stats_.phases.push_back({"buffers", Since(t0)});
    const auto t1 = Clock::now();

    std::vector<std::thread> threads;
    threads.emplace_back([this] { ReaderMain(); });
    for (unsigned i = 0; i < workers_; ++i) threads.emplace_back([this] { WorkerMain(); });
    WriterMain();
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    NotifyAll();
    for (auto& t : threads) t.join();
    if (!error_.ok()) return error_;
    stats_.phases.push_back({"transfer", Since(t1)});
    stats_.seconds = Since(t0);
    return stats_;
  }

 private:
  void Fail(const Status& s) {
    std::lock_guard<std::mutex> l(mu_);
    if (error_.ok()) error_ = s;
    stop_ = true;
    NotifyAll();
  }

  // An upper bound on the number of reads the planner makes: each run of
  // the change set costs at most its chunk windows. O(runs).
  static uint64_t ReadsBound(const ExtentSet& set, uint32_t chunk) {
    uint64_t reads = 0;
    ExtentSet::RunIterator it(set);
    ByteExtent run;
    while (it.Next(&run)) reads += (run.end() - 1) / chunk - run.offset / chunk + 1;
    return reads;
  }

  // Sets up io_uring on the raw file when the source is a raw image.
  void OpenRawSource(int* fd, std::unique_ptr<UringQueue>* q) {
    *fd = -1;
    if (image_.format() != "raw" || reads_bound_ == 0) return;
    const uint64_t g = changes_.granularity().bytes();
    bool direct = opt_.direct_io && g >= kDirectAlign && opt_.chunk_size % kDirectAlign == 0;
    struct stat st;
    if (::stat(image_.name().c_str(), &st) != 0) return;
    if (direct) {
      *fd = ::open(image_.name().c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
      if (*fd >= 0) {
        stats_.used_direct = true;
        direct_ = true;
      }
    }
    if (*fd < 0) *fd = ::open(image_.name().c_str(), O_RDONLY | O_CLOEXEC);
    if (*fd < 0) return;
    file_size_ = S_ISBLK(st.st_mode) ? image_.size() : static_cast<uint64_t>(st.st_size);
    // Registering buffers pins (and first touches) all of them: worth it
    // only when the reads fill them several times over. Counted in bytes,
    // not reads: 200 scattered 64 KiB reads would pin 36 MiB to fill 13 MiB
    // (11 ms of first touches on these guests).
    std::vector<std::span<uint8_t>> bufs;
    uint64_t in_bytes = 0;
    for (const Slot& s : slots_) in_bytes += s.in.size();
    if (stats_.planned_bytes >= 4 * in_bytes) {
      for (Slot& s : slots_) bufs.emplace_back(s.in.data(), s.in.size());
    }
    const unsigned depth = static_cast<unsigned>(
        std::min<uint64_t>(std::max(1u, opt_.queue_depth), std::max<uint64_t>(1, reads_bound_)));
    *q = UringQueue::Create(*fd, depth, bufs);
    std::lock_guard<std::mutex> l(mu_);
    stats_.used_uring = (*q)->uses_uring();
    stats_.registered_buffers = (*q)->uses_registered_buffers();
    stats_.notice = (*q)->notice();
  }

  // Whether a raw source file has no data in [offset, offset+length): a hole
  // reads as zeros, so it need not be read (a --scan of a sparse image then
  // costs what its data costs). One SEEK_DATA per data region: the hole
  // found last is remembered. Anything unexpected answers "read it".
  bool IsHole(int fd, uint64_t offset, uint64_t length) {
    if (offset >= hole_.offset && offset + length <= hole_.end()) return true;
    off_t d = ::lseek(fd, static_cast<off_t>(offset), SEEK_DATA);
    uint64_t data = 0;
    if (d >= 0) {
      data = static_cast<uint64_t>(d);
    } else if (errno == ENXIO && offset < file_size_ && SizeUnchanged(fd)) {
      data = file_size_;  // no data up to the end of the file
    } else {
      return false;  // read it: a shrunken file then fails the read
    }
    hole_ = {offset, data - offset};
    return data >= offset + length;
  }

  // A source that changes size while it is read gives an archive that
  // matches neither the old nor the new disk.
  bool SizeUnchanged(int fd) {
    struct stat st;
    return ::fstat(fd, &st) == 0 && (S_ISBLK(st.st_mode) || static_cast<uint64_t>(st.st_size) == file_size_);
  }
  Status CheckSizeUnchanged(int fd) {
    struct stat st;
    if (::fstat(fd, &st) != 0) return Status::FromErrno(errno, image_.name());
    if (!S_ISBLK(st.st_mode) && static_cast<uint64_t>(st.st_size) != file_size_) {
      return Status(StatusCode::kIoError,
                    image_.name() + ": changed size while it was backed up (" + std::to_string(file_size_) +
                        " bytes, now " + std::to_string(st.st_size) +
                        "): nothing was stored; stop the writer or back up a snapshot");
    }
    return Status::Ok();
  }

  // Blocks until slot `seq % N` may be reused; false when stopping.
  bool WaitForSlot(uint64_t seq, bool may_block) {
    std::unique_lock<std::mutex> l(mu_);
    if (!may_block) return !stop_ && seq < written_ + slots_.size();
    slot_cv_.wait(l, [&] { return stop_ || seq < written_ + slots_.size(); });
    return !stop_;
  }

  void HandOff(uint64_t seq) {
    std::lock_guard<std::mutex> l(mu_);
    slots_[seq % slots_.size()].state = Slot::kRead;
    work_.push_back(seq);
    work_cv_.notify_one();
  }

  void ReaderMain() {
    Planner planner(changes_, opt_.chunk_size, scan_ ? 0 : opt_.coalesce_gap);
    int fd = -1;
    std::unique_ptr<UringQueue> q;
    OpenRawSource(&fd, &q);
    // Other sources may read asynchronously through their driver (NBD).
    std::unique_ptr<ImageReadQueue> aq;
    if (!q) aq = image_.OpenReadQueue(std::max(1u, opt_.queue_depth));
    std::vector<ImageReadQueue::Completion> adone;
    auto drain_async = [&] {
      while (aq && aq->outstanding() > 0) {
        adone.clear();
        if (!aq->Reap(&adone).ok()) break;
      }
    };
    struct FdCloser {
      int* fd;
      ~FdCloser() {
        if (*fd >= 0) ::close(*fd);
      }
    } closer{&fd};
    // On failure, wait for reads in flight before the buffers can go away.
    auto abort = [&](const Status& st) {
      std::vector<UringQueue::Completion> ignored;
      while (q && q->outstanding() > 0 && q->Reap(&ignored).ok()) ignored.clear();
      drain_async();
      Fail(st);
    };
    uint64_t seq = 0;
    bool planned_all = false;
    std::vector<UringQueue::Completion> done;
    while (true) {
      if (opt_.cancel && opt_.cancel->load(std::memory_order_relaxed)) {
        return abort(Status::Cancelled(image_.name() + ": backup cancelled"));
      }
      // Keep the queue full while slots are free.
      while (!planned_all && (q ? q->outstanding() < q->depth() : !aq || aq->outstanding() < aq->depth())) {
        bool block = q ? q->outstanding() == 0 : !aq || aq->outstanding() == 0;
        if (!WaitForSlot(seq, block)) break;
        Slot& s = slots_[seq % slots_.size()];
        if (!planner.Next(&s.op)) {
          planned_all = true;
          break;
        }
        s.hole = (q && IsHole(fd, s.op.offset, s.op.length)) || (aq && aq->KnownZero(s.op.offset, s.op.length));
        {
          // The writer polls this slot's state and seq under the lock.
          std::lock_guard<std::mutex> l(mu_);
          s.seq = seq;
          s.state = Slot::kReading;
          if (!s.hole) stats_.read_bytes += s.op.length;
        }
        if (s.hole) {
          HandOff(seq);
        } else if (q) {
          uint64_t len = s.op.length;
          if (direct_) len = (len + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
          Status st = q->Submit(UringQueue::Op::kRead, s.op.offset, {s.in.data(), len},
                                static_cast<int>(seq % slots_.size()), seq);
          if (!st.ok()) return abort(st.WithContext(image_.name()));
        } else if (aq) {
          Status st = aq->Submit(s.op.offset, {s.in.data(), s.op.length}, seq);
          if (!st.ok()) return abort(st);
        } else {
          Status st = image_.Read(s.op.offset, {s.in.data(), s.op.length});
          if (!st.ok()) return abort(st);
          HandOff(seq);
        }
        ++seq;
      }
      {
        std::lock_guard<std::mutex> l(mu_);
        if (stop_) break;
      }
      if (aq) {
        if (aq->outstanding() == 0) {
          if (planned_all) break;
          continue;
        }
        adone.clear();
        Status st = aq->Reap(&adone);
        if (!st.ok()) return abort(st);
        for (const auto& c : adone) {
          if (!c.status.ok()) return abort(c.status);
          HandOff(c.tag);
        }
        continue;
      }
      if (!q || q->outstanding() == 0) {
        if (planned_all) break;
        continue;
      }
      done.clear();
      Status st = q->Reap(&done);
      if (!st.ok()) return abort(st.WithContext(image_.name()));
      for (const auto& c : done) {
        Slot& s = slots_[c.tag % slots_.size()];
        if (c.result < 0) {
          return abort(Status::FromErrno(static_cast<int>(-c.result),
                                        image_.name() + ": read at " + Hex(s.op.offset)));
        }
        uint64_t got = std::min<uint64_t>(static_cast<uint64_t>(c.result), s.op.length);
        if (got < s.op.length) {
          if (s.op.offset + got >= file_size_) {  // end of file: the rest reads as zeros
            std::memset(s.in.data() + got, 0, s.op.length - got);
          } else {  // a short read mid-file: finish it through the image driver
            Status rs = image_.Read(s.op.offset + got, {s.in.data() + got, s.op.length - got});
            if (!rs.ok()) return abort(rs);
          }
        }
        HandOff(c.tag);
      }
    }
    // Another thread may have stopped the run (e.g. the archive's disk is
    // full) with reads in flight: the kernel writes into the slot buffers
    // until each read completes, so every one is reaped before they can go.
    while (q && q->outstanding() > 0) {
      done.clear();
      if (!q->Reap(&done).ok()) break;
    }
    drain_async();
    q.reset();  // before the descriptor it uses is closed
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stop_) return;
    }
    if (fd >= 0) {
      if (Status sz = CheckSizeUnchanged(fd); !sz.ok()) return Fail(sz);
    }
    std::lock_guard<std::mutex> l(mu_);
    total_ = seq;
    reader_done_ = true;
    done_cv_.notify_one();
  }

  void WorkerMain() {
    std::unique_ptr<ZSTD_CCtx, CCtxDeleter> cctx(ZSTD_createCCtx());
    while (true) {
      uint64_t seq;
      {
        std::unique_lock<std::mutex> l(mu_);
        work_cv_.wait(l, [&] { return stop_ || !work_.empty(); });
        if (stop_) return;
        seq = work_.front();
        work_.pop_front();
      }
      Slot& s = slots_[seq % slots_.size()];
      Status st = Process(s, cctx.get());
      if (!st.ok()) return Fail(st);
      std::lock_guard<std::mutex> l(mu_);
      s.state = Slot::kDone;
      if (seq == written_) done_cv_.notify_one();  // the writer waits for this one
    }
  }

  Status Process(Slot& s, ZSTD_CCtx* cctx) {
    s.recs.clear();
    s.out_size = 0;
    s.raw_size = 0;
    s.data = s.zero = s.skipped = 0;
    const uint64_t g = changes_.granularity().bytes();
    if (s.hole) {  // all zeros, known without reading
      if (scan_ && scan_->UnchangedZero(s.op.offset, s.op.length)) {
        s.skipped = s.op.length;
        return Status::Ok();
      }
      for (const ByteExtent& part : s.op.parts) {
        ExtentRecord r;
        r.guest_offset = part.offset;
        r.length = static_cast<uint32_t>(part.length);
        r.hash = ZeroHash(r.length);
        s.recs.push_back(r);
        s.zero += r.length;
      }
      return Status::Ok();
    }
    if (scan_) {
      // Scan reads are whole chunk pieces (no coalescing): compare first.
      if (scan_->Unchanged(s.op.offset, {s.in.data(), s.op.length})) {
        s.skipped = s.op.length;
        return Status::Ok();
      }
    }
    for (const ByteExtent& part : s.op.parts) {
      uint64_t pos = part.offset;
      while (pos < part.end()) {
        // A run of granules that are all zero or all data.
        const uint8_t* p = s.in.data() + (pos - s.op.offset);
        uint64_t gend = std::min(part.end(), (pos / g + 1) * g);
        bool zero = IsZero(p, gend - pos);
        uint64_t end = gend;
        while (end < part.end()) {
          uint64_t next = std::min(part.end(), end + g);
          if (IsZero(s.in.data() + (end - s.op.offset), next - end) != zero) break;
          end = next;
        }
        ExtentRecord r;
        r.guest_offset = pos;
        r.length = static_cast<uint32_t>(end - pos);
        if (zero) {
          r.hash = ZeroHash(r.length);
          s.zero += r.length;
        } else {
          r.frame = 0;  // the writer assigns the real index
          r.offset_in_frame = static_cast<uint32_t>(s.data);
          r.hash = Xxh3_128(p, r.length);
          s.data += r.length;
        }
        s.recs.push_back(r);
        pos = end;
      }
    }
    if (s.data > 0) {
      // The frame is the data extents back to back. One extent (the common
      // case: a whole chunk of data) is compressed straight from the read
      // buffer; several are gathered first.
      const uint8_t* src = nullptr;
      size_t data_extents = 0;
      for (const ExtentRecord& r : s.recs) {
        if (r.is_zero()) continue;
        ++data_extents;
        src = s.in.data() + (r.guest_offset - s.op.offset);
      }
      if (data_extents > 1) {
        size_t at = 0;
        for (const ExtentRecord& r : s.recs) {
          if (r.is_zero()) continue;
          const uint8_t* p = s.in.data() + (r.guest_offset - s.op.offset);
          std::memcpy(s.frame.data() + at, p, r.length);  // s.data <= s.op.length: fits
          at += r.length;
        }
        src = s.frame.data();
      }
      size_t n = ZSTD_compressCCtx(cctx, s.out.data(), s.out.size(), src, s.data, opt_.level);
      if (ZSTD_isError(n)) {
        return Status::Corruption(std::string("zstd compression failed: ") + ZSTD_getErrorName(n));
      }
      s.out_size = n;
      s.raw_size = static_cast<uint32_t>(s.data);
    }
    return Status::Ok();
  }

  void WriterMain() {
    uint64_t done_bytes = 0;
    for (uint64_t w = 0;; ++w) {
      Slot* s = nullptr;
      {
        std::unique_lock<std::mutex> l(mu_);
        done_cv_.wait(l, [&] {
          Slot& c = slots_[w % slots_.size()];
          return stop_ || (reader_done_ && w >= total_) || (c.state == Slot::kDone && c.seq == w);
        });
        if (stop_ || (reader_done_ && w >= total_)) return;
        s = &slots_[w % slots_.size()];
      }
      Status st = writer_->Add(s->out.first(s->out_size), s->raw_size, s->recs);
      if (!st.ok()) return Fail(st);
      stats_.data_bytes += s->data;
      stats_.zero_bytes += s->zero;
      stats_.skipped_bytes += s->skipped;
      done_bytes += s->data + s->zero + s->skipped;
      if (opt_.progress) opt_.progress(done_bytes, stats_.planned_bytes);
      // Checked here too: the reader may have planned every read already.
      if (opt_.cancel && opt_.cancel->load(std::memory_order_relaxed)) {
        return Fail(Status::Cancelled(image_.name() + ": backup cancelled"));
      }
      std::lock_guard<std::mutex> l(mu_);
      s->state = Slot::kFree;
      written_ = w + 1;
      slot_cv_.notify_one();
    }
  }

  Image& image_;
  const ExtentSet& changes_;
  uint64_t reads_bound_ = 0;
  const PipelineOptions& opt_;
  const ScanBaseline* scan_;
  ArchiveWriter* writer_;
  unsigned workers_ = 1;
  bool direct_ = false;
  uint64_t file_size_ = 0;
  ByteExtent hole_{0, 0};  // reader: a range of the source known to be a hole

  std::mutex mu_;
  // One condition per waiter, so an event wakes only the thread it concerns
  // (context switches are costly on the VMs this runs on): the reader waits
  // for free slots, workers for read slots, the writer for the next slot in
  // order.
  std::condition_variable slot_cv_, work_cv_, done_cv_;
  void NotifyAll() {
    slot_cv_.notify_all();
    work_cv_.notify_all();
    done_cv_.notify_all();
  }
  std::unique_ptr<BufferArena> arena_;  // the slots' read buffers
  std::vector<Slot> slots_;
  std::deque<uint64_t> work_;
  uint64_t written_ = 0, total_ = 0;
  bool reader_done_ = false, stop_ = false;
  Status error_;
  BackupStats stats_;
};

}  // namespace

// ---- scan baseline ----

Result<ScanBaseline> ScanBaseline::Build(const std::vector<const ArchiveReader*>& chain) {
  STRATA_RETURN_IF_ERROR(CheckChain(chain));
  const ArchiveHeader& h = chain[0]->header();
  STRATA_ASSIGN_OR_RETURN(Granularity g, Granularity::FromShift(h.granularity_shift));
  STRATA_ASSIGN_OR_RETURN(ExtentSet remaining, ExtentSet::Create(h.disk_size, g));
  STRATA_RETURN_IF_ERROR(remaining.AddBlocks({0, remaining.disk_blocks()}));
  ScanBaseline b;
  b.zero_view_ = std::make_unique<ExtentSet>(*ExtentSet::Create(h.disk_size, g));
  for (const ArchiveReader* a : chain) {
    ExtentSet zeros = *ExtentSet::Create(h.disk_size, g);
    for (const ExtentRecord& e : a->index().extents) {
      if (e.is_zero()) {
        STRATA_RETURN_IF_ERROR(zeros.Add(e.guest_offset, e.length));
      } else if (remaining.ContainsRange(e.guest_offset, e.length)) {
        b.visible_.push_back(e);
      }
    }
    STRATA_RETURN_IF_ERROR(zeros.IntersectWith(remaining));
    STRATA_RETURN_IF_ERROR(b.zero_view_->UnionWith(zeros));
    STRATA_ASSIGN_OR_RETURN(ExtentSet cov, a->Coverage());
    STRATA_RETURN_IF_ERROR(remaining.Subtract(cov));
  }
  // What no archive covers reads as zero (the full backup defines it so).
  STRATA_RETURN_IF_ERROR(b.zero_view_->UnionWith(remaining));
  std::sort(b.visible_.begin(), b.visible_.end(),
            [](const ExtentRecord& x, const ExtentRecord& y) { return x.guest_offset < y.guest_offset; });
  return b;
}

bool ScanBaseline::UnchangedZero(uint64_t offset, uint64_t length) const {
  return zero_view_->ContainsRange(offset, length);
}

bool ScanBaseline::Unchanged(uint64_t offset, std::span<const uint8_t> data) const {
  const uint64_t end = offset + data.size();
  // First visible data extent ending after `offset`.
  auto it = std::lower_bound(
      visible_.begin(), visible_.end(), offset,
      [](const ExtentRecord& e, uint64_t o) { return e.guest_offset + e.length <= o; });
  uint64_t pos = offset;
  for (; it != visible_.end() && it->guest_offset < end; ++it) {
    if (it->guest_offset < offset || it->guest_offset + it->length > end) return false;
    if (it->guest_offset > pos) {  // a gap: zero in the chain and in `data`
      if (!zero_view_->ContainsRange(pos, it->guest_offset - pos) ||
          !IsZero(data.data() + (pos - offset), it->guest_offset - pos)) {
        return false;
      }
    }
    if (!(Xxh3_128(data.data() + (it->guest_offset - offset), it->length) == it->hash)) {
      return false;
    }
    pos = it->guest_offset + it->length;
  }
  if (pos < end) {
    return zero_view_->ContainsRange(pos, end - pos) &&
           IsZero(data.data() + (pos - offset), end - pos);
  }
  return true;
}

// ---- backup ----

Result<BackupStats> RunBackup(Image& image, const ExtentSet& changes, ArchiveHeader header,
                              const std::string& archive_path, const PipelineOptions& options,
                              const ScanBaseline* scan) {
  const auto t0 = Clock::now();
  // A chunk holds at least one block of the change set's granularity.
  PipelineOptions opt = options;
  if (opt.chunk_size < changes.granularity().bytes()) {
    opt.chunk_size = static_cast<uint32_t>(changes.granularity().bytes());
  }
  if (changes.disk_size() != image.size()) {
    return Status::InvalidArgument(image.name() + ": change set is for a disk of " +
                                   std::to_string(changes.disk_size()) + " bytes, the image has " +
                                   std::to_string(image.size()));
  }
  if (opt.chunk_size < changes.granularity().bytes() || opt.chunk_size % 4096 != 0 ||
      opt.chunk_size > (64u << 20) || opt.chunk_size % changes.granularity().bytes() != 0) {
    return Status::InvalidArgument("chunk size " + std::to_string(opt.chunk_size) +
                                   " must be a multiple of 4 KiB and of the granularity, at most 64 MiB");
  }
  if (opt.level < ZSTD_minCLevel() || opt.level > ZSTD_maxCLevel()) {
    return Status::InvalidArgument("zstd level " + std::to_string(opt.level) + " out of range");
  }
  header.disk_size = image.size();
  header.granularity_shift = changes.granularity().shift();
  header.level = static_cast<int8_t>(opt.level);
  header.chunk_size = opt.chunk_size;
  if (header.content_unix_ns == 0) header.content_unix_ns = header.created_unix_ns;
  STRATA_ASSIGN_OR_RETURN(auto writer, ArchiveWriter::Create(archive_path, header, opt.env));
  const double create = Since(t0);
  BackupRun run(image, changes, opt, scan, writer.get());
  STRATA_ASSIGN_OR_RETURN(BackupStats stats, run.Run());
  stats.phases.insert(stats.phases.begin(), PhaseTime{"archive open", create});
  const auto t_finish = Clock::now();
  STRATA_ASSIGN_OR_RETURN(ArchiveFooter footer, writer->Finish());
  stats.phases.push_back({"finish", Since(t_finish)});
  stats.stored_bytes = writer->stored_bytes();
  stats.archive_bytes = footer.index_offset + footer.index_size + kArchiveFooterSize;
  stats.seconds = Since(t0);  // includes making the archive durable
  return stats;
}

}  // namespace strata
