#include "engine/backup/archive.h"

#include <unistd.h>
#include <zstd.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <random>

#include "extents/endian.h"

namespace strata {

namespace {
constexpr size_t kWriteBuffer = 4 << 20;
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
                                                             const ArchiveHeader& header) {
  std::unique_ptr<ArchiveWriter> w(new ArchiveWriter);
  w->final_path_ = final_path;
  std::random_device rd;
  w->temp_path_ = final_path + ".partial." + std::to_string(rd());
  STRATA_ASSIGN_OR_RETURN(w->file_, OpenPosixFile(w->temp_path_, OpenMode::kCreateExclusive));
  w->header_ = header;
  std::string h = EncodeHeader(header);
  w->header_checksum_ = LoadLE64(reinterpret_cast<const uint8_t*>(h.data()) + h.size() - 8);
  w->buf_.assign(h.begin(), h.end());
  w->buf_.reserve(kWriteBuffer + (1 << 20));
  w->data_end_ = h.size();
  return w;
}

ArchiveWriter::~ArchiveWriter() {
  if (!finished_ && !temp_path_.empty()) {
    file_.reset();
    ::unlink(temp_path_.c_str());
  }
}

Status ArchiveWriter::Flush() {
  if (buf_.empty()) return Status::Ok();
  STRATA_RETURN_IF_ERROR(file_->Write(buf_offset_, buf_));
  buf_offset_ += buf_.size();
  buf_.clear();
  return Status::Ok();
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
  buf_.insert(buf_.end(), compressed.begin(), compressed.end());
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
  buf_.insert(buf_.end(), idx.begin(), idx.end());
  buf_.insert(buf_.end(), foot.begin(), foot.end());
  STRATA_RETURN_IF_ERROR(Flush());
  STRATA_RETURN_IF_ERROR(file_->Sync());
  file_.reset();
  if (::rename(temp_path_.c_str(), final_path_.c_str()) != 0) {
    return Status::FromErrno(errno, final_path_ + ": rename from " + temp_path_);
  }
  finished_ = true;
  STRATA_RETURN_IF_ERROR(SyncDirOf(final_path_));
  return f;
}

// ---- reader ----

Result<std::unique_ptr<ArchiveReader>> ArchiveReader::Open(const std::string& path) {
  std::unique_ptr<ArchiveReader> r(new ArchiveReader);
  r->path_ = path;
  STRATA_ASSIGN_OR_RETURN(r->file_, OpenPosixFile(path, OpenMode::kReadOnly));
  STRATA_ASSIGN_OR_RETURN(r->file_size_, r->file_->Size());
  if (r->file_size_ < kArchiveFooterSize + 104) {
    return Status::Corruption(path + ": archive truncated (" + std::to_string(r->file_size_) +
                              " bytes)");
  }
  std::vector<uint8_t> head(std::min<uint64_t>(r->file_size_, 4096));
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
