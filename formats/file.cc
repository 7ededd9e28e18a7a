#include "strata/file.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>

#include "extents/endian.h"
#include "strata/env.h"

namespace strata {

Status File::ReadFull(uint64_t offset, std::span<uint8_t> buf) {
  STRATA_ASSIGN_OR_RETURN(size_t got, Read(offset, buf));
  if (got != buf.size()) {
    return Status::Corruption(name() + ": short read at " + Hex(offset) + " (wanted " +
                              std::to_string(buf.size()) + " bytes, file ends at " +
                              Hex(offset + got) + ")");
  }
  return Status::Ok();
}

Status File::ReadZeroPadded(uint64_t offset, std::span<uint8_t> buf) {
  if (buf.empty()) return Status::Ok();
  STRATA_ASSIGN_OR_RETURN(size_t got, Read(offset, buf));
  std::memset(buf.data() + got, 0, buf.size() - got);
  return Status::Ok();
}

namespace {

class PosixFile : public File {
 public:
  PosixFile(std::string name, int fd) : name_(std::move(name)), fd_(fd) {}
  ~PosixFile() override { ::close(fd_); }
  const std::string& name() const override { return name_; }
  int fd() const override { return fd_; }

  Result<uint64_t> Size() override {
    struct stat st;
    if (::fstat(fd_, &st) != 0) return Status::FromErrno(errno, name_ + ": fstat");
    if (S_ISBLK(st.st_mode)) {
      uint64_t bytes = 0;
      if (::ioctl(fd_, BLKGETSIZE64, &bytes) != 0) {
        return Status::FromErrno(errno, name_ + ": BLKGETSIZE64");
      }
      return bytes;
    }
    return static_cast<uint64_t>(st.st_size);
  }

  Result<size_t> Read(uint64_t offset, std::span<uint8_t> buf) override {
    size_t done = 0;
    while (done < buf.size()) {
      ssize_t n = ::pread(fd_, buf.data() + done, buf.size() - done,
                          static_cast<off_t>(offset + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        return Status::FromErrno(errno, name_ + ": read at " + Hex(offset + done));
      }
      if (n == 0) break;
      done += static_cast<size_t>(n);
    }
    return done;
  }

  Status Write(uint64_t offset, std::span<const uint8_t> data) override {
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n = ::pwrite(fd_, data.data() + done, data.size() - done,
                           static_cast<off_t>(offset + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        return Status::FromErrno(errno, name_ + ": write at " + Hex(offset + done));
      }
      done += static_cast<size_t>(n);
    }
    return Status::Ok();
  }

  Status Sync() override {
    if (::fsync(fd_) != 0) return Status::FromErrno(errno, name_ + ": fsync");
    return Status::Ok();
  }

  Status Truncate(uint64_t size) override {
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) {
      return Status::FromErrno(errno, name_ + ": truncate");
    }
    return Status::Ok();
  }

 private:
  std::string name_;
  int fd_;
};

}  // namespace

Result<std::unique_ptr<File>> OpenPosixFile(const std::string& path, OpenMode mode,
                                            bool direct, unsigned perms) {
  int flags = O_CLOEXEC;
  switch (mode) {
    case OpenMode::kReadOnly: flags |= O_RDONLY; break;
    case OpenMode::kReadWrite: flags |= O_RDWR; break;
    case OpenMode::kCreate: flags |= O_RDWR | O_CREAT; break;
    case OpenMode::kCreateExclusive: flags |= O_RDWR | O_CREAT | O_EXCL; break;
  }
  if (direct) flags |= O_DIRECT;
  int fd = ::open(path.c_str(), flags, static_cast<mode_t>(perms));
  if (fd < 0) {
    int err = errno;
    if (err == EEXIST) return Status::AlreadyExists(path + ": already exists");
    return Status::FromErrno(err, path);
  }
  struct stat st;
  if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    ::close(fd);
    return Status::InvalidArgument(path + ": is a directory");
  }
  return std::unique_ptr<File>(new PosixFile(path, fd));
}

std::unique_ptr<File> AdoptPosixFile(const std::string& path, int fd) {
  return std::unique_ptr<File>(new PosixFile(path, fd));
}

// ---- MemFile ----

Result<uint64_t> MemFile::Size() {
  std::lock_guard<std::mutex> l(mu_);
  return data_.size();
}

Result<size_t> MemFile::Read(uint64_t offset, std::span<uint8_t> buf) {
  std::lock_guard<std::mutex> l(mu_);
  if (offset >= data_.size() || buf.empty()) return size_t{0};
  size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), data_.size() - offset));
  std::memcpy(buf.data(), data_.data() + offset, n);
  return n;
}

Status MemFile::Write(uint64_t offset, std::span<const uint8_t> data) {
  std::lock_guard<std::mutex> l(mu_);
  if (offset + data.size() > data_.size()) data_.resize(offset + data.size());
  if (!data.empty()) std::memcpy(data_.data() + offset, data.data(), data.size());
  return Status::Ok();
}

Status MemFile::Truncate(uint64_t size) {
  std::lock_guard<std::mutex> l(mu_);
  data_.resize(size);
  return Status::Ok();
}

std::vector<uint8_t> MemFile::contents() const {
  std::lock_guard<std::mutex> l(mu_);
  return data_;
}

// ---- FaultFile ----

void FaultFile::FailFrom(uint64_t n, int err) {
  std::lock_guard<std::mutex> l(mu_);
  fail_from_ = n;
  err_ = err;
}

uint64_t FaultFile::calls() const {
  std::lock_guard<std::mutex> l(mu_);
  return calls_;
}

Status FaultFile::Tick() {
  ++calls_;
  if (fail_from_ != 0 && calls_ >= fail_from_) {
    return Status::FromErrno(err_, base_->name() + ": injected fault on call " +
                                       std::to_string(calls_));
  }
  return Status::Ok();
}

Result<size_t> FaultFile::Read(uint64_t offset, std::span<uint8_t> buf) {
  {
    std::lock_guard<std::mutex> l(mu_);
    STRATA_RETURN_IF_ERROR(Tick());
  }
  return base_->Read(offset, buf);
}

Status FaultFile::Write(uint64_t offset, std::span<const uint8_t> data) {
  std::lock_guard<std::mutex> l(mu_);
  STRATA_RETURN_IF_ERROR(Tick());
  if (!have_size_) {
    STRATA_ASSIGN_OR_RETURN(synced_size_, base_->Size());
    have_size_ = true;
  }
  std::vector<uint8_t> old(data.size());
  STRATA_ASSIGN_OR_RETURN(size_t got, base_->Read(offset, old));
  old.resize(got);
  undo_.emplace_back(offset, std::move(old));
  return base_->Write(offset, data);
}

Status FaultFile::Sync() {
  std::lock_guard<std::mutex> l(mu_);
  STRATA_RETURN_IF_ERROR(Tick());
  STRATA_RETURN_IF_ERROR(base_->Sync());
  undo_.clear();
  have_size_ = false;
  return Status::Ok();
}

Status FaultFile::Truncate(uint64_t size) {
  std::lock_guard<std::mutex> l(mu_);
  STRATA_RETURN_IF_ERROR(Tick());
  if (!have_size_) {
    STRATA_ASSIGN_OR_RETURN(synced_size_, base_->Size());
    have_size_ = true;
  }
  // Keep the bytes a shrink drops so a crash can bring them back.
  STRATA_ASSIGN_OR_RETURN(uint64_t cur, base_->Size());
  if (size < cur) {
    std::vector<uint8_t> old(cur - size);
    STRATA_ASSIGN_OR_RETURN(size_t got, base_->Read(size, old));
    old.resize(got);
    undo_.emplace_back(size, std::move(old));
  }
  return base_->Truncate(size);
}

Status FaultFile::Crash() {
  std::lock_guard<std::mutex> l(mu_);
  for (auto it = undo_.rbegin(); it != undo_.rend(); ++it) {
    STRATA_RETURN_IF_ERROR(base_->Write(it->first, it->second));
  }
  if (have_size_) STRATA_RETURN_IF_ERROR(base_->Truncate(synced_size_));
  undo_.clear();
  have_size_ = false;
  return Status::Ok();
}

// ---- opening disk images ----

const char* FileTypeName(unsigned mode) {
  if (S_ISREG(mode)) return "regular file";
  if (S_ISBLK(mode)) return "block device";
  if (S_ISCHR(mode)) return "character device";
  if (S_ISFIFO(mode)) return "FIFO";
  if (S_ISSOCK(mode)) return "socket";
  if (S_ISDIR(mode)) return "directory";
  if (S_ISLNK(mode)) return "symbolic link";
  return "special file";
}

Result<std::unique_ptr<File>> OpenDiskFile(const std::string& path, bool regular_only,
                                           bool no_follow) {
  const char* want = regular_only ? "regular files" : "regular files or block devices";
  auto refuse = [&](unsigned mode) {
    return Status::InvalidArgument(path + ": not a disk image: it is a " + FileTypeName(mode) +
                                   " (images must be " + want + ")");
  };
  // O_NONBLOCK: opening a FIFO without a writer would otherwise block forever.
  int fd = ::open(path.c_str(),
                  O_RDONLY | O_NONBLOCK | O_CLOEXEC | (no_follow ? O_NOFOLLOW : 0));
  if (fd < 0) {
    int err = errno;
    struct stat st;
    // A socket cannot be opened (ENXIO); a symlink with O_NOFOLLOW is ELOOP.
    if ((err == ENXIO || err == ELOOP) && ::lstat(path.c_str(), &st) == 0) {
      return refuse(st.st_mode);
    }
    return Status::FromErrno(err, path);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return Status::FromErrno(err, path + ": fstat");
  }
  if (!S_ISREG(st.st_mode) && (regular_only || !S_ISBLK(st.st_mode))) {
    ::close(fd);
    return refuse(st.st_mode);
  }
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0 || ::fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
    int err = errno;
    ::close(fd);
    return Status::FromErrno(err, path + ": clearing O_NONBLOCK");
  }
  return std::unique_ptr<File>(new PosixFile(path, fd));
}

// ---- whole-file helpers ----

Status SyncDirOf(const std::string& path) {
  struct stat st;
  std::string dir;
  if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    dir = path;
  } else {
    size_t slash = path.rfind('/');
    dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  }
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, dir + ": open directory");
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return Status::FromErrno(err, dir + ": fsync directory");
  return Status::Ok();
}

// The local Env's (state files are private: 0600).
Status WriteFileAtomic(const std::string& path, std::span<const uint8_t> data) {
  return Env::Default()->WriteFileAtomic(path, data);
}

Result<std::vector<uint8_t>> ReadWholeFile(const std::string& path) {
  return Env::Default()->ReadWholeFile(path);
}

}  // namespace strata
