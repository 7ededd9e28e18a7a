#include "formats/raw/reflink.h"

#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <stdio.h>  // renameat2
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "extents/endian.h"
#include "strata/file.h"

namespace strata {

static_assert(kExtentLast == FIEMAP_EXTENT_LAST);
static_assert(kExtentUnknown == FIEMAP_EXTENT_UNKNOWN);
static_assert(kExtentDelalloc == FIEMAP_EXTENT_DELALLOC);
static_assert(kExtentEncoded == FIEMAP_EXTENT_ENCODED);
static_assert(kExtentDataEncrypted == FIEMAP_EXTENT_DATA_ENCRYPTED);
static_assert(kExtentNotAligned == FIEMAP_EXTENT_NOT_ALIGNED);
static_assert(kExtentDataInline == FIEMAP_EXTENT_DATA_INLINE);
static_assert(kExtentDataTail == FIEMAP_EXTENT_DATA_TAIL);
static_assert(kExtentUnwritten == FIEMAP_EXTENT_UNWRITTEN);
static_assert(kExtentMerged == FIEMAP_EXTENT_MERGED);
static_assert(kExtentShared == FIEMAP_EXTENT_SHARED);

namespace {

// Closes a descriptor on scope exit.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closes now and reports the error close() gives.
  int Close() {
    int rc = fd_ >= 0 ? ::close(fd_) : 0;
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

std::string DirName(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string BaseName(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

bool IsNoReflinkErrno(int err) {
  // EOPNOTSUPP: the file system has no remap_file_range (ext4, tmpfs, XFS
  // made without reflink=1); ENOTTY: no such ioctl; EINVAL: e.g. btrfs
  // refusing a clone it cannot express.
  return err == EOPNOTSUPP || err == ENOTTY || err == EINVAL;
}

Result<std::vector<PhysicalExtent>> ReadExtentMapFd(int fd, const std::string& name,
                                                    uint64_t size) {
  constexpr uint32_t kBatch = 1024;
  // uint64_t storage keeps struct fiemap and its extents aligned.
  std::vector<uint64_t> storage(
      (sizeof(struct fiemap) + kBatch * sizeof(struct fiemap_extent) + 7) / 8);
  auto* fm = reinterpret_cast<struct fiemap*>(storage.data());
  std::vector<PhysicalExtent> out;
  uint64_t start = 0;
  bool first = true;
  while (start < size) {
    std::memset(fm, 0, sizeof(*fm));
    fm->fm_start = start;
    fm->fm_length = size - start;
    // One flush of dirty pages (and, on XFS, of copy-on-write remaps) is
    // enough: the files compared here are clones nobody writes.
    fm->fm_flags = first ? FIEMAP_FLAG_SYNC : 0;
    fm->fm_extent_count = kBatch;
    if (::ioctl(fd, FS_IOC_FIEMAP, fm) != 0) {
      int err = errno;
      if (err == EINTR) continue;
      if (err == EOPNOTSUPP || err == ENOTTY) {
        return Status(StatusCode::kUnsupported,
                      name + ": the file system does not report extent maps (FIEMAP: " +
                          std::strerror(err) + ")",
                      err);
      }
      return Status::FromErrno(err, name + ": FIEMAP at " + Hex(start));
    }
    first = false;
    const uint32_t n = fm->fm_mapped_extents;
    if (n == 0) break;  // nothing mapped from `start` on: a hole to the end
    if (n > kBatch) {
      return Status::Corruption(name + ": FIEMAP at " + Hex(start) + " returned " +
                                std::to_string(n) + " extents for room for " +
                                std::to_string(kBatch));
    }
    bool last = false;
    for (uint32_t k = 0; k < n; ++k) {
      const struct fiemap_extent& fe = fm->fm_extents[k];
      out.push_back({fe.fe_logical, fe.fe_physical, fe.fe_length, fe.fe_flags});
      if (fe.fe_flags & FIEMAP_EXTENT_LAST) last = true;
    }
    if (last) break;
    const struct fiemap_extent& tail = fm->fm_extents[n - 1];
    const uint64_t next = tail.fe_logical + tail.fe_length;
    if (tail.fe_length == 0 || next <= start || next < tail.fe_logical) {
      return Status::Corruption(name + ": FIEMAP at " + Hex(start) +
                                " made no progress (last extent at " + Hex(tail.fe_logical) +
                                ", length " + std::to_string(tail.fe_length) + ")");
    }
    start = next;
  }
  return out;
}

Result<uint64_t> RegularFileSize(int fd, const std::string& name, struct stat* st) {
  if (::fstat(fd, st) != 0) return Status::FromErrno(errno, name + ": fstat");
  if (!S_ISREG(st->st_mode)) return Status::InvalidArgument(name + ": not a regular file");
  return static_cast<uint64_t>(st->st_size);
}

Result<std::vector<PhysicalExtent>> MapOpenFile(int fd, const std::string& name,
                                                uint64_t* size) {
  struct stat st;
  STRATA_ASSIGN_OR_RETURN(uint64_t before, RegularFileSize(fd, name, &st));
  STRATA_ASSIGN_OR_RETURN(auto map, ReadExtentMapFd(fd, name, before));
  STRATA_ASSIGN_OR_RETURN(uint64_t after, RegularFileSize(fd, name, &st));
  if (after != before) {
    return Status::Busy(name + ": size changed from " + std::to_string(before) + " to " +
                        std::to_string(after) + " while its extent map was read");
  }
  *size = before;
  return map;
}

}  // namespace

Status CloneFile(const std::string& source, const std::string& snapshot) {
  Fd src(::open(source.c_str(), O_RDONLY | O_CLOEXEC));
  if (src.get() < 0) return Status::FromErrno(errno, source);
  struct stat sst;
  if (::fstat(src.get(), &sst) != 0) return Status::FromErrno(errno, source + ": fstat");
  if (!S_ISREG(sst.st_mode)) return Status::InvalidArgument(source + ": not a regular file");

  const std::string dir = DirName(snapshot);
  struct stat dst;
  if (::stat(dir.c_str(), &dst) != 0) return Status::FromErrno(errno, dir);
  if (!S_ISDIR(dst.st_mode)) return Status::InvalidArgument(dir + ": not a directory");
  if (dst.st_dev != sst.st_dev) {
    return Status(StatusCode::kUnsupported,
                  snapshot + ": snapshot directory " + dir + " is on another file system than " +
                      source + "; a reflink clone must be on the same file system",
                  EXDEV);
  }
  struct stat existing;
  if (::lstat(snapshot.c_str(), &existing) == 0) {
    return Status::AlreadyExists(snapshot + ": already exists");
  }

  std::random_device rd;
  const std::string tmp = dir + "/." + BaseName(snapshot) + ".tmp." +
                          std::to_string(::getpid()) + "." + std::to_string(rd());
  Fd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (out.get() < 0) return Status::FromErrno(errno, tmp + ": create");
  Status s;
  if (::ioctl(out.get(), FICLONE, src.get()) != 0) {
    int err = errno;
    if (err == EXDEV) {
      s = Status(StatusCode::kUnsupported,
                 snapshot + ": cannot clone " + source +
                     " across file systems; put the snapshot on the image's file system",
                 err);
    } else if (IsNoReflinkErrno(err)) {
      s = Status(StatusCode::kUnsupported,
                 source + ": its file system has no reflink support (FICLONE: " +
                     std::strerror(err) + "); use XFS made with reflink=1 or btrfs",
                 err);
    } else {
      s = Status::FromErrno(err, snapshot + ": FICLONE from " + source);
    }
  } else if (::fsync(out.get()) != 0) {
    s = Status::FromErrno(errno, tmp + ": fsync");
  } else if (out.Close() != 0) {
    s = Status::FromErrno(errno, tmp + ": close");
  } else if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, snapshot.c_str(), RENAME_NOREPLACE) !=
             0) {
    int err = errno;
    if (err == EINVAL) {
      // A file system without RENAME_NOREPLACE: link() never replaces either.
      if (::link(tmp.c_str(), snapshot.c_str()) != 0) {
        err = errno;
      } else {
        ::unlink(tmp.c_str());
        err = 0;
      }
    }
    if (err == EEXIST) {
      s = Status::AlreadyExists(snapshot + ": already exists");
    } else if (err != 0) {
      s = Status::FromErrno(err, snapshot + ": rename from " + tmp);
    }
  }
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  return SyncDirOf(snapshot);
}

Result<std::vector<PhysicalExtent>> ReadExtentMap(const std::string& path, uint64_t* size) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return Status::FromErrno(errno, path);
  uint64_t sz = 0;
  STRATA_ASSIGN_OR_RETURN(auto map, MapOpenFile(fd.get(), path, &sz));
  if (size != nullptr) *size = sz;
  return map;
}

Result<ExtentSet> ReflinkDiff(const std::string& old_path, const std::string& new_path,
                              Granularity g, ReflinkDiffStats* stats) {
  Fd a(::open(old_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (a.get() < 0) return Status::FromErrno(errno, old_path);
  Fd b(::open(new_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (b.get() < 0) return Status::FromErrno(errno, new_path);
  struct stat sa, sb;
  STRATA_RETURN_IF_ERROR(RegularFileSize(a.get(), old_path, &sa));
  STRATA_RETURN_IF_ERROR(RegularFileSize(b.get(), new_path, &sb));
  if (sa.st_dev != sb.st_dev) {
    return Status::InvalidArgument(new_path + ": not on the file system of " + old_path +
                                   "; physical extents of two file systems cannot be compared");
  }
  uint64_t old_size = 0, new_size = 0;
  STRATA_ASSIGN_OR_RETURN(auto old_map, MapOpenFile(a.get(), old_path, &old_size));
  STRATA_ASSIGN_OR_RETURN(auto new_map, MapOpenFile(b.get(), new_path, &new_size));
  ReflinkDiffStats st;
  st.old_extents = old_map.size();
  st.new_extents = new_map.size();
  STRATA_ASSIGN_OR_RETURN(
      ExtentSet set, CompareExtentMaps(old_map, old_size, new_map, new_size, g, &st.bytes));
  if (stats != nullptr) *stats = st;
  return set;
}

}  // namespace strata
