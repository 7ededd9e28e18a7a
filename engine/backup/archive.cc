#include "strata/archive.h"
#include "engine/backup/archive_writer.h"

#include "strata/id128.h"

#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <random>

#include "extents/endian.h"

namespace strata {

namespace {
constexpr size_t kWriteBuffer = 4 << 20;

// Appends bytes with one memcpy: vector::insert and assign with a custom
// allocator (PageAlignedAllocator) construct element by element, a byte loop
// that took 8.7% of a full backup's CPU.
void Append(std::vector<uint8_t, PageAlignedAllocator<uint8_t>>& b, const uint8_t* p, size_t n) {
  if (n == 0) return;
  const size_t at = b.size();
  b.resize(at + n);
  std::memcpy(b.data() + at, p, n);
}
constexpr unsigned kWritesInFlight = 4;
constexpr uint64_t kMaxIndexBytes = uint64_t{1} << 32;
}  // namespace

Hash128 ZeroHash(uint64_t n) {
  // Zero extents are at most one chunk (≤ 64 MiB); cache by length.
  static std::mutex mu;
  static std::map<uint64_t, Hash128> cache;
  std::lock_guard<std::mutex> l(mu);
  auto it = cache.find(n);
  if (it != cache.end()) return it->second;
  std::vector<uint8_t> z(n);
  Hash128 h = Xxh3_128(z.data(), z.size());
  if (cache.size() < 64) cache[n] = h;
  return h;
}

// ---- writer ----

Result<std::unique_ptr<ArchiveWriter>> ArchiveWriter::Create(const std::string& final_path,
                                                             const ArchiveHeader& header, Env* env) {
  if (env == nullptr) env = Env::Default();
  for (const std::string* n : {&header.source_name, &header.disk_name, &header.start.name,
                               &header.end.name}) {
    if (n->size() > kMaxPointName) {
      return Status::InvalidArgument(final_path + ": name longer than " +
                                     std::to_string(kMaxPointName) + " bytes: " + n->substr(0, 64) + "…");
    }
  }
  std::unique_ptr<ArchiveWriter> w(new ArchiveWriter);
  w->final_path_ = final_path;
  w->env_ = env;
  w->temp_path_ = final_path + ".partial." + Id128ToHex(RandomId128()).substr(0, 12);
  STRATA_ASSIGN_OR_RETURN(w->file_, env->Open(w->temp_path_, OpenMode::kCreateExclusive));
  // Archive data goes to disk with O_DIRECT where the file system allows it:
  // through the page cache, writing the archive costs a copy per byte and a
  // write-back that competes with compression for the CPU
  // (docs/benchmarks.md). Opened as a second descriptor so a file system
  // that refuses O_DIRECT leaves nothing behind.
  if (auto d = env->Open(w->temp_path_, OpenMode::kReadWrite, /*direct=*/true); d && (*d)->fd() >= 0) {
    w->direct_file_ = std::move(*d);
  }
  // A few writes in flight through io_uring, so compressing never waits for
  // the disk (synchronous writes when io_uring is unavailable). A file
  // without a descriptor (an Env that is not the kernel's) is written
  // through File.
  w->writes_.resize(kWritesInFlight);
  // Flush swaps buf_ with a write's buffer: every buffer gets its full size
  // now (address space only; pages are touched when written), or each
  // would grow by doubling, copying and faulting, in its first round.
  for (Write& wr : w->writes_) wr.buf.reserve(kWriteBuffer + (1 << 20));
  if (w->file_->fd() >= 0) {
    w->queue_ = UringQueue::Create(w->direct_file_ ? w->direct_file_->fd() : w->file_->fd(),
                                   kWritesInFlight);
  } else {
    w->direct_refused_ = true;
  }
  w->header_ = header;
  std::string h = EncodeHeader(header);
  w->header_checksum_ = LoadLE64(reinterpret_cast<const uint8_t*>(h.data()) + h.size() - 8);
  w->buf_.reserve(kWriteBuffer + (1 << 20));
  Append(w->buf_, reinterpret_cast<const uint8_t*>(h.data()), h.size());
  w->data_end_ = h.size();
  return w;
}

ArchiveWriter::~ArchiveWriter() {
  // No write or sync may run on the file or its buffers past this point.
  std::vector<UringQueue::Completion> done;
  while (queue_ && queue_->outstanding() > 0 && queue_->Reap(&done).ok()) done.clear();
  queue_.reset();
  if (!finished_ && !temp_path_.empty()) {
    direct_file_.reset();
    file_.reset();
    (void)env_->Remove(temp_path_);
  }
}

Status ArchiveWriter::Flush(bool last) {
  constexpr size_t kBlock = PageAlignedAllocator<uint8_t>::kAlign;
  const bool direct = direct_file_ && !direct_refused_;
  const size_t real = buf_.size();
  // buf_offset_ stays block-aligned for O_DIRECT: only whole blocks are
  // written until the last flush, which pads with zeros.
  size_t n = !direct ? real : last ? (real + kBlock - 1) / kBlock * kBlock : real / kBlock * kBlock;
  if (n > 0 && direct_refused_) {
    STRATA_RETURN_IF_ERROR(file_->Write(buf_offset_, {buf_.data(), real}));
    buf_offset_ += real;
    buf_.clear();
  } else if (n > 0) {
    auto is_free = [](const Write& w) { return !w.busy; };
    auto free = std::find_if(writes_.begin(), writes_.end(), is_free);
    while (free == writes_.end()) {
      STRATA_RETURN_IF_ERROR(ReapOne());
      free = std::find_if(writes_.begin(), writes_.end(), is_free);
    }
    Write& w = *free;
    w.buf.swap(buf_);  // the bytes go with the write; buf_ takes its old buffer
    w.buf.resize(std::max(n, real), 0);
    w.offset = buf_offset_;
    w.length = n;
    w.real = std::min(n, real);
    buf_.clear();
    Append(buf_, w.buf.data() + w.real, real - w.real);
    STRATA_RETURN_IF_ERROR(queue_->Submit(UringQueue::Op::kWrite, w.offset, {w.buf.data(), n}, -1,
                                          static_cast<uint64_t>(&w - writes_.data())));
    w.busy = true;
    buf_offset_ += w.real;
  }
  if (last) {
    while (queue_ && queue_->outstanding() > 0) STRATA_RETURN_IF_ERROR(ReapOne());
    STRATA_ASSIGN_OR_RETURN(uint64_t size, file_->Size());
    if (size != buf_offset_) STRATA_RETURN_IF_ERROR(file_->Truncate(buf_offset_));
  }
  return Status::Ok();
}

Status ArchiveWriter::ReapOne() {
  std::vector<UringQueue::Completion> done;
  STRATA_RETURN_IF_ERROR(queue_->Reap(&done));
  Status first;
  for (const auto& c : done) {
    Write& w = writes_[c.tag];
    w.busy = false;
    if (c.result < 0 && !(direct_file_ && c.result == -EINVAL)) {
      if (first.ok()) {
        first = Status::FromErrno(static_cast<int>(-c.result), temp_path_ + ": write at " + Hex(w.offset));
      }
      continue;
    }
    // Accepted at open, refused now (some file systems): the rest of the
    // archive goes through the page cache.
    if (c.result == -EINVAL) direct_refused_ = true;
    // A short or refused write is finished through the page cache.
    size_t got = c.result > 0 ? static_cast<size_t>(c.result) : 0;
    if (got < w.real && first.ok()) first = file_->Write(w.offset + got, {w.buf.data() + got, w.real - got});
  }
  return first;
}

Status ArchiveWriter::CheckOrder(uint64_t offset, uint64_t length) {
  if (offset < guest_end_ || length == 0 || offset > header_.disk_size ||
      length > header_.disk_size - offset) {
    return Status::InvalidArgument(final_path_ + ": extent [" + std::to_string(offset) + ", +" +
                                   std::to_string(length) + ") out of order or past the disk");
  }
  guest_end_ = offset + length;
  return Status::Ok();
}

Status ArchiveWriter::Add(std::span<const uint8_t> compressed, uint32_t raw_size,
                          std::span<const ExtentRecord> extents) {
  if ((raw_size == 0) != compressed.empty()) {
    return Status::InvalidArgument(final_path_ + ": frame without data or data without size");
  }
  const uint32_t frame = static_cast<uint32_t>(index_.frames.size());
  for (const ExtentRecord& e : extents) {
    STRATA_RETURN_IF_ERROR(CheckOrder(e.guest_offset, e.length));
    if (e.is_zero()) {
      AddZero(e.guest_offset, e.length);
      continue;
    }
    if (raw_size == 0 || e.offset_in_frame > raw_size || e.length > raw_size - e.offset_in_frame) {
      return Status::InvalidArgument(final_path_ + ": extent outside its frame");
    }
    ExtentRecord r = e;
    r.frame = frame;
    index_.extents.push_back(r);
  }
  if (raw_size == 0) return Status::Ok();
  index_.frames.push_back({data_end_, static_cast<uint32_t>(compressed.size()), raw_size,
                           Xxh3_64(compressed.data(), compressed.size())});
  Append(buf_, compressed.data(), compressed.size());
  data_end_ += compressed.size();
  if (buf_.size() >= kWriteBuffer) return Flush();
  return Status::Ok();
}

void ArchiveWriter::AddZero(uint64_t guest_offset, uint32_t length) {
  // Merge with a preceding adjacent zero extent while it stays a chunk.
  if (!index_.extents.empty()) {
    ExtentRecord& last = index_.extents.back();
    if (last.is_zero() && last.guest_offset + last.length == guest_offset &&
        uint64_t{last.length} + length <= header_.chunk_size) {
      last.length += length;
      last.hash = ZeroHash(last.length);
      return;
    }
  }
  ExtentRecord r;
  r.guest_offset = guest_offset;
  r.length = length;
  r.hash = ZeroHash(length);
  index_.extents.push_back(r);
}

Result<ArchiveFooter> ArchiveWriter::Finish() {
  std::string idx = EncodeIndex(index_);
  ArchiveFooter f;
  f.index_offset = data_end_;
  f.index_size = idx.size();
  f.index_checksum = Xxh3_64(idx.data(), idx.size());
  f.header_checksum = header_checksum_;
  std::string foot = EncodeFooter(f);
  Append(buf_, reinterpret_cast<const uint8_t*>(idx.data()), idx.size());
  Append(buf_, reinterpret_cast<const uint8_t*>(foot.data()), foot.size());
  STRATA_RETURN_IF_ERROR(Flush(/*last=*/true));
  queue_.reset();
  direct_file_.reset();
  STRATA_RETURN_IF_ERROR(file_->Sync());
  file_.reset();
  STRATA_RETURN_IF_ERROR(env_->Rename(temp_path_, final_path_));
  finished_ = true;
  STRATA_RETURN_IF_ERROR(env_->SyncDirOf(final_path_));
  return f;
}

// ---- reader ----

Result<std::unique_ptr<ArchiveReader>> ArchiveReader::Open(const std::string& path, Env* env) {
  if (env == nullptr) env = Env::Default();
  std::unique_ptr<ArchiveReader> r(new ArchiveReader);
  r->path_ = path;
  STRATA_ASSIGN_OR_RETURN(r->file_, env->Open(path, OpenMode::kReadOnly));
  STRATA_ASSIGN_OR_RETURN(r->file_size_, r->file_->Size());
  if (r->file_size_ < kArchiveFooterSize + 104) {
    return Status::Corruption(path + ": archive truncated (" + std::to_string(r->file_size_) +
                              " bytes)");
  }
  // The longest header (four names of 1023 bytes) is 4,288 bytes.
  std::vector<uint8_t> head(std::min<uint64_t>(r->file_size_, 8192));
  STRATA_RETURN_IF_ERROR(r->file_->ReadFull(0, head));
  uint64_t header_size = 0, header_sum = 0;
  STRATA_ASSIGN_OR_RETURN(r->header_, DecodeHeader(head, path, &header_size, &header_sum));
  std::vector<uint8_t> foot(kArchiveFooterSize);
  STRATA_RETURN_IF_ERROR(r->file_->ReadFull(r->file_size_ - kArchiveFooterSize, foot));
  STRATA_ASSIGN_OR_RETURN(r->footer_, DecodeFooter(foot, r->file_size_, path));
  if (r->footer_.header_checksum != header_sum) {
    return Status::Corruption(path + ": archive footer belongs to another header (at byte " +
                              Hex(r->file_size_ - 16) + ")");
  }
  if (r->footer_.index_offset < header_size || r->footer_.index_size > kMaxIndexBytes) {
    return Status::Corruption(path + ": archive index location invalid (at byte " +
                              Hex(r->file_size_ - 40) + ")");
  }
  std::vector<uint8_t> idx(r->footer_.index_size);
  STRATA_RETURN_IF_ERROR(r->file_->ReadFull(r->footer_.index_offset, idx));
  if (Xxh3_64(idx.data(), idx.size()) != r->footer_.index_checksum) {
    return Status::Corruption(path + ": archive index checksum mismatch (index at byte " +
                              Hex(r->footer_.index_offset) + ")");
  }
  r->data_start_ = header_size;
  r->data_end_ = r->footer_.index_offset;
  STRATA_ASSIGN_OR_RETURN(r->index_,
                          DecodeIndex(idx, r->header_, r->data_start_, r->data_end_, path));
  return r;
}

uint64_t ArchiveReader::logical_bytes() const {
  uint64_t n = 0;
  for (const ExtentRecord& e : index_.extents) n += e.length;
  return n;
}

Result<ExtentSet> ArchiveReader::Coverage() const {
  STRATA_ASSIGN_OR_RETURN(Granularity g, Granularity::FromShift(header_.granularity_shift));
  STRATA_ASSIGN_OR_RETURN(ExtentSet set, ExtentSet::Create(header_.disk_size, g));
  for (const ExtentRecord& e : index_.extents) {
    STRATA_RETURN_IF_ERROR(set.Add(e.guest_offset, e.length));
  }
  set.Optimize();
  return set;
}

Status ArchiveReader::ReadFrame(uint32_t i, std::vector<uint8_t>* raw, ZSTD_DCtx* dctx) const {
  if (i >= index_.frames.size()) return Status::InvalidArgument(path_ + ": no frame " + std::to_string(i));
  raw->resize(index_.frames[i].raw_size);
  std::vector<uint8_t> comp;
  return ReadFrame(i, std::span<uint8_t>(*raw), &comp, dctx);
}

Status ArchiveReader::ReadFrame(uint32_t i, std::span<uint8_t> raw, std::vector<uint8_t>* comp,
                                ZSTD_DCtx* dctx) const {
  if (i >= index_.frames.size()) return Status::InvalidArgument(path_ + ": no frame " + std::to_string(i));
  const FrameRecord& f = index_.frames[i];
  if (raw.size() < f.raw_size) {
    return Status::InvalidArgument(path_ + ": frame " + std::to_string(i) + " needs a buffer of " +
                                   std::to_string(f.raw_size) + " bytes");
  }
  if (comp->size() < f.compressed_size) comp->resize(f.compressed_size);
  std::span<uint8_t> c(comp->data(), f.compressed_size);
  STRATA_RETURN_IF_ERROR(file_->ReadFull(f.file_offset, c));
  if (Xxh3_64(c.data(), c.size()) != f.compressed_xxh3) {
    return Status::Corruption(path_ + ": frame " + std::to_string(i) + " at byte " +
                              Hex(f.file_offset) + " fails its checksum");
  }
  size_t n = dctx ? ZSTD_decompressDCtx(dctx, raw.data(), f.raw_size, c.data(), c.size())
                  : ZSTD_decompress(raw.data(), f.raw_size, c.data(), c.size());
  if (ZSTD_isError(n) || n != f.raw_size) {
    return Status::Corruption(path_ + ": frame " + std::to_string(i) + " at byte " +
                              Hex(f.file_offset) + " does not decompress to " +
                              std::to_string(f.raw_size) + " bytes" +
                              (ZSTD_isError(n) ? std::string(" (") + ZSTD_getErrorName(n) + ")" : ""));
  }
  return Status::Ok();
}

Status ArchiveReader::CheckExtent(const ExtentRecord& e, std::span<const uint8_t> raw) const {
  Hash128 h = e.is_zero() ? ZeroHash(e.length)
                          : Xxh3_128(raw.data() + e.offset_in_frame, e.length);
  if (!(h == e.hash)) {
    return Status::Corruption(path_ + ": data of guest range [" + Hex(e.guest_offset) + ", +" +
                              Hex(e.length) + ") fails its XXH3-128 checksum");
  }
  return Status::Ok();
}

}  // namespace strata
