// Writing archives (docs/formats/archive.md). Internal to the backup
// engine: library users write archives through RunBackup/BackupToRepository.
//
// ArchiveWriter appends zstd frames to a temporary file beside the final
// path and, on Finish, writes the index and footer, fsyncs, renames into
// place and fsyncs the directory: an archive is visible whole or not at all.
//
// Thread safety: a writer is used from one thread.
#ifndef STRATA_ENGINE_BACKUP_ARCHIVE_WRITER_H_
#define STRATA_ENGINE_BACKUP_ARCHIVE_WRITER_H_

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "strata/archive.h"
#include "engine/backup/uring_reader.h"

namespace strata {

class ArchiveWriter {
 public:
  // Writes through `env` (null: the local file system). The archive takes
  // the final name only in Finish, replacing any file of that name.
  static Result<std::unique_ptr<ArchiveWriter>> Create(const std::string& final_path,
                                                       const ArchiveHeader& header,
                                                       Env* env = nullptr);
  ~ArchiveWriter();  // removes the temporary file unless Finish succeeded

  // Appends one compressed frame holding `raw_size` guest bytes (none when
  // raw_size is 0) and the extents it defines: data extents (frame !=
  // kZeroFrame; offset_in_frame set by the caller, the frame index is filled
  // in here) and zero extents, all in ascending guest order overall.
  Status Add(std::span<const uint8_t> compressed, uint32_t raw_size,
             std::span<const ExtentRecord> extents);
  // Writes index and footer, makes the archive durable and visible.
  Result<ArchiveFooter> Finish();

  uint64_t stored_bytes() const { return data_end_; }
  const ArchiveHeader& header() const { return header_; }

 private:
  ArchiveWriter() = default;
  using Buffer = std::vector<uint8_t, PageAlignedAllocator<uint8_t>>;
  // A write handed to the queue; its buffer is reused once it completes.
  struct Write {
    Buffer buf;
    uint64_t offset = 0;
    size_t length = 0;  // bytes submitted (the last one padded for O_DIRECT)
    size_t real = 0;    // bytes of the archive in it
    bool busy = false;
  };

  // Hands the buffered bytes to the write queue; with O_DIRECT only whole
  // 4 KiB blocks until `last`, which pads the tail, waits for every write
  // and truncates the file back to its size.
  Status Flush(bool last = false);
  // Waits for one write to complete (finishing a short or refused one
  // through the page cache).
  Status ReapOne();
  Status CheckOrder(uint64_t offset, uint64_t length);
  void AddZero(uint64_t guest_offset, uint32_t length);

  std::string final_path_, temp_path_;
  Env* env_ = nullptr;
  std::unique_ptr<File> file_;
  std::unique_ptr<File> direct_file_;  // O_DIRECT descriptor of the same file, if any
  std::unique_ptr<UringQueue> queue_;  // archive writes in flight, on direct_file_ or file_
  std::vector<Write> writes_;
  bool direct_refused_ = false;  // O_DIRECT writes failed: the rest goes through file_
  ArchiveHeader header_;
  uint64_t header_checksum_ = 0;
  ArchiveIndex index_;
  Buffer buf_;  // pending bytes at file offset buf_offset_
  uint64_t buf_offset_ = 0, data_end_ = 0, guest_end_ = 0;
  bool finished_ = false;
};

}  // namespace strata

#endif  // STRATA_ENGINE_BACKUP_ARCHIVE_WRITER_H_
