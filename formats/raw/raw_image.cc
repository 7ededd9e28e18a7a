#include "formats/raw/raw_image.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "extents/endian.h"

namespace strata {

namespace {

class RawImage : public Image {
 public:
  RawImage(std::unique_ptr<File> file, uint64_t file_size, bool seekable)
      : file_(std::move(file)),
        file_size_(file_size),
        size_((file_size + 511) & ~uint64_t{511}),
        seekable_(seekable) {}

  const std::string& name() const override { return file_->name(); }
  std::string_view format() const override { return "raw"; }
  uint64_t size() const override { return size_; }

  // Only the rounding tail past the file's end (< 512 bytes) reads as
  // zeros: a read that ends earlier means the file shrank while open, and
  // zeros there would be a silent lie.
  Status Read(uint64_t offset, std::span<uint8_t> buf) override {
    STRATA_RETURN_IF_ERROR(CheckRange(offset, buf.size(), size_).WithContext(name()));
    STRATA_ASSIGN_OR_RETURN(size_t got, file_->Read(offset, buf));
    if (got < buf.size() && offset + got < file_size_) {
      return Status(StatusCode::kIoError, name() + ": the file shrank while being read (it ends at " +
                                              Hex(offset + got) + ", it was " + std::to_string(file_size_) +
                                              " bytes when opened)");
    }
    std::memset(buf.data() + got, 0, buf.size() - got);
    return Status::Ok();
  }

  Status BlockStatus(uint64_t offset, uint64_t length, std::vector<MapEntry>* out) override {
    STRATA_RETURN_IF_ERROR(CheckRange(offset, length, size_).WithContext(name()));
    const uint64_t end = offset + length;
    auto push = [&](uint64_t start, uint64_t len, bool data) {
      MapEntry e;
      e.start = start;
      e.length = len;
      e.present = true;
      e.data = data;
      e.zero = !data;
      e.has_offset = true;
      e.offset = start;
      out->push_back(e);
    };
    uint64_t pos = offset;
    while (pos < end) {
      if (pos >= file_size_) {  // the rounding tail past EOF reads as zeros
        push(pos, end - pos, false);
        break;
      }
      if (!seekable_) {
        uint64_t stop = std::min(end, file_size_);
        push(pos, stop - pos, true);
        pos = stop;
        continue;
      }
      off_t data = ::lseek(file_->fd(), static_cast<off_t>(pos), SEEK_DATA);
      if (data < 0) {
        if (errno == ENXIO) {  // trailing hole up to EOF
          push(pos, end - pos, false);
          break;
        }
        // The file system cannot tell: everything is data from here.
        seekable_ = false;
        continue;
      }
      if (static_cast<uint64_t>(data) > pos) {  // a hole first
        uint64_t stop = std::min<uint64_t>(end, static_cast<uint64_t>(data));
        push(pos, stop - pos, false);
        pos = stop;
        continue;
      }
      off_t hole = ::lseek(file_->fd(), static_cast<off_t>(pos), SEEK_HOLE);
      if (hole < 0) {
        return Status::FromErrno(errno, name() + ": SEEK_HOLE at " + Hex(pos));
      }
      uint64_t stop = std::min<uint64_t>(end, static_cast<uint64_t>(hole));
      if (stop <= pos) stop = std::min(end, file_size_);  // racing truncate: be safe
      push(pos, stop - pos, true);
      pos = stop;
    }
    return Status::Ok();
  }

 private:
  std::unique_ptr<File> file_;
  uint64_t file_size_;
  uint64_t size_;
  bool seekable_;
};

}  // namespace

Result<std::unique_ptr<Image>> OpenRawImage(std::unique_ptr<File> file) {
  STRATA_ASSIGN_OR_RETURN(uint64_t size, file->Size());
  if (size > kMaxDiskSize) return Status::Unsupported(file->name() + ": larger than 2^63 bytes");
  bool seekable = false;
  if (file->fd() >= 0) {
    struct stat st;
    if (::fstat(file->fd(), &st) != 0) return Status::FromErrno(errno, file->name() + ": fstat");
    seekable = S_ISREG(st.st_mode);
  }
  return std::unique_ptr<Image>(new RawImage(std::move(file), size, seekable));
}

Result<std::unique_ptr<Image>> OpenRawImage(const std::string& path) {
  STRATA_ASSIGN_OR_RETURN(auto file, OpenDiskFile(path));
  return OpenRawImage(std::move(file));
}

}  // namespace strata
