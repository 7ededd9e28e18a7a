// Reading archives (docs/formats/archive.md). ArchiveReader validates
// header, footer and index on open and checks every frame's checksums as it
// reads. (Archives are written by the backup pipeline: archive_writer.h.)
//
// Thread safety: ReadFrame may be called from several threads at once
// (positional reads, caller-owned decompression context).
#ifndef STRATA_ARCHIVE_H_
#define STRATA_ARCHIVE_H_

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "strata/archive_format.h"
#include "strata/extent_set.h"
#include "strata/env.h"
#include "strata/file.h"

struct ZSTD_DCtx_s;

namespace strata {

class ArchiveReader {
 public:
  static Result<std::unique_ptr<ArchiveReader>> Open(const std::string& path, Env* env = nullptr);

  const std::string& path() const { return path_; }
  const ArchiveHeader& header() const { return header_; }
  const ArchiveIndex& index() const { return index_; }
  const ArchiveFooter& footer() const { return footer_; }
  uint64_t file_size() const { return file_size_; }
  // Bytes of compressed frames.
  uint64_t stored_bytes() const { return data_end_ - data_start_; }
  // Guest bytes defined by this archive (data and zero extents).
  uint64_t logical_bytes() const;
  // The guest ranges this archive defines, at its granularity.
  Result<ExtentSet> Coverage() const;

  // Reads frame `i` into `raw` (resized to its raw size), checking the
  // compressed bytes' XXH3-64 and the decompressed size. `dctx` may be null.
  Status ReadFrame(uint32_t i, std::vector<uint8_t>* raw, ZSTD_DCtx_s* dctx) const;
  // The same into caller-owned memory, for pipelines that reuse buffers:
  // `raw` must hold at least the frame's raw size (kInvalidArgument
  // otherwise) and receives it at its start; `comp` is scratch space for the
  // compressed bytes, grown as needed.
  Status ReadFrame(uint32_t i, std::span<uint8_t> raw, std::vector<uint8_t>* comp,
                   ZSTD_DCtx_s* dctx) const;
  // Checks an extent's XXH3-128 against bytes taken from its frame.
  Status CheckExtent(const ExtentRecord& e, std::span<const uint8_t> frame_raw) const;

 private:
  ArchiveReader() = default;
  std::string path_;
  std::unique_ptr<File> file_;
  uint64_t file_size_ = 0, data_start_ = 0, data_end_ = 0;
  ArchiveHeader header_;
  ArchiveIndex index_;
  ArchiveFooter footer_;
};

// XXH3-128 of `n` zero bytes (what a zero extent's hash holds).
Hash128 ZeroHash(uint64_t n);

}  // namespace strata

#endif  // STRATA_ARCHIVE_H_
