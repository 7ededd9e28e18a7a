#include "strata/pipeline.h"

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
#include <optional>
#include <thread>

#include "engine/backup/pipeline_internal.h"
#include "engine/backup/uring_reader.h"
#include "extents/endian.h"
#include "strata/file.h"

namespace strata {

using internal::BufferArena;
using internal::Clock;
using internal::DCtxDeleter;
using internal::kDirectAlign;
using internal::Resolve;
using internal::SegIsZero;
using internal::Segment;
using internal::Since;
using internal::WorkerCount;

namespace {

// The part of a guest range [offset, offset+length) held at `p` that can be
// written with O_DIRECT: offset, length and address all multiples of
// kDirectAlign. Empty when the address and the offset are not congruent
// (the whole range is then written through the page cache).
ByteExtent DirectPart(uint64_t offset, uint64_t length, const uint8_t* p) {
  auto addr = reinterpret_cast<uintptr_t>(p);
  if ((addr - offset) % kDirectAlign != 0) return {offset, 0};
  uint64_t a = (offset + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
  uint64_t b = (offset + length) / kDirectAlign * kDirectAlign;
  return a < b ? ByteExtent{a, b - a} : ByteExtent{offset, 0};
}

}  // namespace

Result<RestoreStats> RunRestore(const std::vector<const ArchiveReader*>& chain,
                                const std::string& output, const PipelineOptions& opt) {
  auto t0 = Clock::now();
  // Per-phase wall times for `restore --json` (docs/design/backup.md).
  std::vector<PhaseTime> phases;
  auto lap = t0;
  auto phase = [&](const char* name) {
    auto now = Clock::now();
    phases.push_back({name, std::chrono::duration<double>(now - lap).count()});
    lap = now;
  };
  STRATA_ASSIGN_OR_RETURN(std::vector<Segment> segs, Resolve(chain));
  phase("resolve");
  const uint64_t disk_size = chain[0]->header().disk_size;
  // A new output is private (0600: it holds a whole disk) and never reached
  // through a symbolic link; an output this restore created is removed
  // again if the restore fails, so a failure never leaves a file that looks
  // like a restored disk.
  int ofd = ::open(output.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  bool created = ofd >= 0;
  if (ofd < 0 && errno == EEXIST) ofd = ::open(output.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  if (ofd < 0) {
    if (errno == ELOOP) return Status::InvalidArgument(output + ": is a symbolic link (name the target itself)");
    return Status::FromErrno(errno, output);
  }
  struct stat st;
  if (::fstat(ofd, &st) != 0) {
    int err = errno;
    ::close(ofd);
    return Status::FromErrno(err, output);
  }
  if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
    ::close(ofd);
    return Status::InvalidArgument(output + ": not a regular file or block device");
  }
  const bool is_blk = S_ISBLK(st.st_mode);
  std::unique_ptr<File> out = AdoptPosixFile(output, ofd);
  struct RemoveOnFailure {
    const std::string& path;
    bool armed;
    ~RemoveOnFailure() {
      if (armed) ::unlink(path.c_str());
    }
  } remove_on_failure{output, created};
  const int fd = out->fd();
  if (is_blk) {
    uint64_t dev_size = 0;
    if (::ioctl(fd, BLKGETSIZE64, &dev_size) != 0) {
      return Status::FromErrno(errno, output + ": BLKGETSIZE64");
    }
    if (dev_size < disk_size) {
      return Status::InvalidArgument(output + ": device holds " + std::to_string(dev_size) +
                                     " bytes, the backup needs " + std::to_string(disk_size));
    }
  } else {  // emptied first: nothing of an earlier file survives in the holes
    STRATA_RETURN_IF_ERROR(out->Truncate(0));
    STRATA_RETURN_IF_ERROR(out->Truncate(disk_size));
  }
  RestoreStats stats;
  phase("output");
  // Aligned data goes through a second, O_DIRECT descriptor: filling the
  // page cache of a file as large as the disk and writing it back at fsync
  // cost most of a buffered restore's time (docs/benchmarks.md). Pages the
  // direct writes cover are never touched through the buffered descriptor,
  // which takes only unaligned heads and tails.
  std::unique_ptr<File> direct_out;
  if (opt.direct_io) {
    // The same inode as `out` (not the name again: it could have changed).
    int dfd = ::open(("/proc/self/fd/" + std::to_string(fd)).c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
    if (dfd >= 0) {
      direct_out = AdoptPosixFile(output, dfd);
    } else {
      stats.notice = "O_DIRECT unavailable: " + output + ": " + std::strerror(errno);
    }
  }
  // Group data segments by (archive, frame): each frame is read and
  // decompressed once; every block is written exactly once.
  struct Task {
    int archive;
    uint32_t frame;
    size_t first, count;  // indices into `data`
  };
  std::vector<Segment> data;
  uint32_t max_raw = 0;
  for (const Segment& s : segs) {
    if (SegIsZero(chain, s)) {
      stats.zero_bytes += s.length;
      if (is_blk) {  // a device keeps old contents: zero explicitly
        uint64_t range[2] = {s.offset, s.length};
        if (::ioctl(fd, BLKZEROOUT, range) != 0) {
          return Status::FromErrno(errno, output + ": zeroing " + Hex(s.offset));
        }
      }
    } else {
      data.push_back(s);
      stats.data_bytes += s.length;
      const ArchiveReader& a = *chain[s.archive];
      max_raw = std::max(max_raw, a.index().frames[a.index().extents[s.extent].frame].raw_size);
    }
  }
  // Allocate the data ranges up front (`data` is still in guest order): a
  // full disk fails here, before anything is written, and direct writes land
  // in allocated blocks instead of allocating extent by extent, which ext4
  // serialises (docs/benchmarks.md). Holes stay holes.
  if (!is_blk) {
    for (size_t i = 0; i < data.size();) {
      uint64_t start = data[i].offset, end = start + data[i].length;
      for (++i; i < data.size() && data[i].offset == end; ++i) end += data[i].length;
      if (::fallocate(fd, 0, static_cast<off_t>(start), static_cast<off_t>(end - start)) != 0) {
        if (errno == EOPNOTSUPP || errno == ENOSYS) break;  // e.g. some FUSE or NFS mounts
        return Status::FromErrno(errno, output + ": allocating " + Hex(start) + "+" + Hex(end - start));
      }
    }
  }
  phase("allocate");
  std::stable_sort(data.begin(), data.end(), [&](const Segment& x, const Segment& y) {
    if (x.archive != y.archive) return x.archive < y.archive;
    return chain[x.archive]->index().extents[x.extent].frame <
           chain[y.archive]->index().extents[y.extent].frame;
  });
  std::vector<Task> tasks;
  for (size_t i = 0; i < data.size(); ++i) {
    uint32_t f = chain[data[i].archive]->index().extents[data[i].extent].frame;
    if (!tasks.empty() && tasks.back().archive == data[i].archive && tasks.back().frame == f) {
      ++tasks.back().count;
    } else {
      tasks.push_back({data[i].archive, f, i, 1});
    }
  }
  stats.frames_read = tasks.size();
  stats.chain_length = chain.size();

  // Workers read, decompress and verify frames into a fixed pool of aligned
  // buffers (allocated once: first touches of fresh memory are slow here);
  // this thread writes their extents through io_uring and recycles a buffer
  // when all its writes are done. Memory is bounded by the pool whatever the
  // disk size.
  const unsigned nw = WorkerCount(opt);
  const size_t buf_size = std::max<size_t>(kDirectAlign, (size_t{max_raw} + kDirectAlign - 1) /
                                                             kDirectAlign * kDirectAlign);
  const size_t pool_size = std::max<size_t>(
      2, std::min<uint64_t>(opt.queue_depth + 2 * nw, opt.memory_limit / (2 * buf_size)));
  // Huge pages when the pool is refilled many times (pipeline_internal.h).
  const size_t pool_count = tasks.empty() ? 0 : std::min(pool_size, tasks.size());
  BufferArena pool(pool_count, buf_size, /*huge_pages=*/tasks.size() >= 8 * pool_count);
  phase("plan and buffers");
  std::vector<std::span<uint8_t>> spans;
  std::vector<size_t> free_bufs;
  for (size_t i = 0; i < pool.size(); ++i) {
    spans.emplace_back(pool[i].data(), buf_size);
    free_bufs.push_back(i);
  }
  struct Job {
    size_t task, buf;
    size_t pending = 0;  // writes in flight
  };
  std::mutex mu;
  std::condition_variable cv;
  size_t next = 0;
  std::deque<Job> ready;
  Status error;
  bool stop = false;
  uint64_t stored_read = 0;
  auto worker = [&] {
    std::unique_ptr<ZSTD_DCtx, DCtxDeleter> dctx(ZSTD_createDCtx());
    std::vector<uint8_t> comp;
    while (true) {
      Job job;
      {
        std::unique_lock<std::mutex> l(mu);
        cv.wait(l, [&] { return stop || next >= tasks.size() || !free_bufs.empty(); });
        if (stop || next >= tasks.size()) return;
        job.task = next++;
        job.buf = free_bufs.back();
        free_bufs.pop_back();
      }
      const Task& task = tasks[job.task];
      const ArchiveReader& a = *chain[task.archive];
      const uint32_t raw_size = a.index().frames[task.frame].raw_size;
      Status s = a.ReadFrame(task.frame, spans[job.buf], &comp, dctx.get());
      std::span<const uint8_t> raw(spans[job.buf].data(), raw_size);
      uint32_t checked = ExtentRecord::kZeroFrame;
      for (size_t i = task.first; s.ok() && i < task.first + task.count; ++i) {
        if (checked != data[i].extent) {
          s = a.CheckExtent(a.index().extents[data[i].extent], raw);
          checked = data[i].extent;
        }
      }
      std::lock_guard<std::mutex> l(mu);
      if (!s.ok()) {
        if (error.ok()) error = s;
        stop = true;
      } else {
        stored_read += a.index().frames[task.frame].compressed_size;
        ready.push_back(job);
      }
      cv.notify_all();
    }
  };
  std::vector<std::thread> threads;
  for (unsigned i = 0; i < nw; ++i) threads.emplace_back(worker);

  bool direct = direct_out != nullptr;
  auto q = UringQueue::Create(direct ? direct_out->fd() : fd, std::max(1u, opt.queue_depth), spans);
  stats.used_uring = q->uses_uring();
  std::map<size_t, Job> writing;  // by task
  uint64_t written = 0;
  size_t finished = 0;
  std::vector<UringQueue::Completion> done;
  Status werr;
  constexpr uint64_t kDirectTag = 1u << 31;  // tag bit: the write went through direct_out
  // Where segment `i` of a task's frame lies in its buffer.
  auto seg_data = [&](const Job& j, size_t i) {
    const Segment& seg = data[tasks[j.task].first + i];
    const ExtentRecord& e = chain[seg.archive]->index().extents[seg.extent];
    return spans[j.buf].data() + e.offset_in_frame + (seg.offset - e.guest_offset);
  };
  // Reaps completed writes. A short write is finished through the page
  // cache; a direct write the file system refuses (EINVAL) too, and the
  // rest of the restore then stays buffered.
  auto reap = [&] {
    done.clear();
    werr = q->Reap(&done);
    for (const auto& c : done) {
      Job& j = writing.at(c.tag >> 32);
      const size_t i = c.tag & 0x7fffffff;
      const bool was_direct = (c.tag & kDirectTag) != 0;
      const Segment& seg = data[tasks[j.task].first + i];
      const uint8_t* p = seg_data(j, i);
      --j.pending;
      ByteExtent part = was_direct ? DirectPart(seg.offset, seg.length, p) : ByteExtent{seg.offset, seg.length};
      uint64_t from = 0;
      if (c.result >= 0) {
        from = static_cast<uint64_t>(c.result);
      } else if (was_direct && c.result == -EINVAL) {
        direct = false;
        stats.notice = output + ": O_DIRECT write refused (EINVAL); writing through the page cache";
      } else {
        werr = Status::FromErrno(static_cast<int>(-c.result), output + ": write at " + Hex(part.offset));
        continue;
      }
      if (from < part.length && werr.ok()) {
        werr = out->Write(part.offset + from, {p + (part.offset - seg.offset) + from, part.length - from});
      }
    }
  };
  while (werr.ok() && finished < tasks.size()) {
    if (opt.cancel && opt.cancel->load(std::memory_order_relaxed)) {
      werr = Status::Cancelled(output + ": restore cancelled");
      break;
    }
    std::optional<Job> job;
    {
      std::unique_lock<std::mutex> l(mu);
      // Block for new work only when no write is in flight to reap.
      if (q->outstanding() == 0) cv.wait(l, [&] { return stop || !ready.empty(); });
      if (stop) break;
      if (!ready.empty()) {
        job = ready.front();
        ready.pop_front();
      }
    }
    if (job) {
      const size_t t = job->task;
      Job& j = writing[t] = *job;
      const Task& task = tasks[t];
      for (size_t i = 0; werr.ok() && i < task.count; ++i) {
        const Segment& seg = data[task.first + i];
        uint8_t* p = seg_data(j, i);
        written += seg.length;
        ByteExtent part{seg.offset, seg.length};
        if (direct) {
          // Unaligned head and tail through the page cache; the rest direct.
          part = DirectPart(seg.offset, seg.length, p);
          if (part.length == 0) {
            werr = out->Write(seg.offset, {p, seg.length});
            continue;
          }
          werr = out->Write(seg.offset, {p, part.offset - seg.offset});
          if (werr.ok()) {
            werr = out->Write(part.end(), {p + (part.end() - seg.offset), seg.offset + seg.length - part.end()});
          }
        } else if (direct_out) {  // O_DIRECT was refused mid-way: the queue is on it
          werr = out->Write(seg.offset, {p, seg.length});
          continue;
        }
        while (werr.ok() && q->outstanding() >= q->depth()) reap();
        if (!werr.ok()) break;
        werr = q->Submit(UringQueue::Op::kWrite, part.offset,
                         {p + (part.offset - seg.offset), part.length}, static_cast<int>(j.buf),
                         (uint64_t{t} << 32) | i | (direct ? kDirectTag : 0));
        if (werr.ok()) ++j.pending;
      }
    } else if (q->outstanding() > 0) {
      reap();
    }
    // Recycle buffers whose writes are all done.
    for (auto it = writing.begin(); it != writing.end();) {
      if (it->second.pending == 0) {
        {
          std::lock_guard<std::mutex> l(mu);
          free_bufs.push_back(it->second.buf);
        }
        cv.notify_all();
        it = writing.erase(it);
        ++finished;
      } else {
        ++it;
      }
    }
    if (opt.progress) opt.progress(written, stats.data_bytes);
  }
  {
    std::lock_guard<std::mutex> l(mu);
    stop = true;
    if (!werr.ok() && error.ok()) error = werr;
  }
  cv.notify_all();
  for (auto& th : threads) th.join();
  done.clear();
  while (q->outstanding() > 0 && q->Reap(&done).ok()) done.clear();  // before buffers go
  if (!error.ok()) return error;
  phase("transfer");
  // A failed fsync means written data may be lost, on a device as on a file.
  STRATA_RETURN_IF_ERROR(out->Sync());
  if (direct_out) STRATA_RETURN_IF_ERROR(direct_out->Sync());
  phase("sync");
  stats.phases = std::move(phases);
  remove_on_failure.armed = false;
  stats.used_direct = direct;
  stats.registered_buffers = q->uses_registered_buffers();
  if (stats.notice.empty()) stats.notice = q->notice();
  stats.stored_bytes_read = stored_read;
  stats.seconds = Since(t0);
  return stats;
}

}  // namespace strata
