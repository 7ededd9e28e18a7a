// File: the one narrow positional I/O seam (STYLE §4).
//
// Everything that reads or writes bytes (image drivers, tracker state,
// archives) goes through File, so tests can swap in an in-memory file or a
// fault-injecting one that fails the Nth call or drops unsynced writes on a
// simulated crash.
//
// Thread safety: Read/Write/Sync of a PosixFile may run concurrently (they
// are pread/pwrite); MemFile and FaultFile serialise internally.
#ifndef STRATA_FILE_H_
#define STRATA_FILE_H_

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>
#include <span>
#include <string>
#include <vector>

#include "strata/status.h"

namespace strata {

class File {
 public:
  virtual ~File() = default;
  // The path (or a descriptive name) used in every error message.
  virtual const std::string& name() const = 0;
  virtual Result<uint64_t> Size() = 0;
  // Reads up to buf.size() bytes at `offset`; fewer only at end of file.
  virtual Result<size_t> Read(uint64_t offset, std::span<uint8_t> buf) = 0;
  // Writes all of `data` at `offset`, extending the file if needed.
  virtual Status Write(uint64_t offset, std::span<const uint8_t> data) = 0;
  virtual Status Sync() = 0;
  virtual Status Truncate(uint64_t size) = 0;
  // The OS descriptor for io_uring / SEEK_DATA, or -1 when there is none.
  virtual int fd() const { return -1; }

  // Reads exactly buf.size() bytes: kCorruption "<name>: short read at 0x…
  // (wanted N, file ends at M)" when the file is shorter.
  Status ReadFull(uint64_t offset, std::span<uint8_t> buf);
  // Reads buf.size() bytes, zero-filling whatever lies past end of file.
  Status ReadZeroPadded(uint64_t offset, std::span<uint8_t> buf);
};

enum class OpenMode {
  kReadOnly,
  kReadWrite,       // must exist
  kCreate,          // create or open read-write
  kCreateExclusive  // create; kAlreadyExists when present
};

// A file on the OS (regular file or block device), via pread/pwrite.
// `direct` asks for O_DIRECT (callers then align buffers and offsets);
// `perms` are the permission bits of a file it creates.
Result<std::unique_ptr<File>> OpenPosixFile(const std::string& path, OpenMode mode,
                                            bool direct = false, unsigned perms = 0644);

// Takes ownership of an open descriptor (closed with the File).
std::unique_ptr<File> AdoptPosixFile(const std::string& path, int fd);

// Opens a disk image read-only, never blocking: the open uses O_NONBLOCK (so
// a FIFO cannot hang it), then fstat decides and O_NONBLOCK is cleared.
// Regular files are accepted; block devices too unless `regular_only`.
// Anything else (a character device such as /dev/zero or /dev/null, a FIFO,
// a socket, a directory) is kInvalidArgument with one line naming the path
// and what it is. `no_follow` refuses a symlink as the last component
// (callers that already resolved the path with realpath use it).
Result<std::unique_ptr<File>> OpenDiskFile(const std::string& path, bool regular_only = false,
                                           bool no_follow = false);

// "regular file", "block device", "character device", "FIFO", "socket",
// "directory", "symbolic link" or "special file", for a stat mode.
const char* FileTypeName(unsigned mode);

// Allocates page-aligned memory (address and size multiples of 4096), as
// O_DIRECT needs for its buffers: std::vector<uint8_t, PageAlignedAllocator<uint8_t>>.
template <class T>
struct PageAlignedAllocator {
  using value_type = T;
  static constexpr size_t kAlign = 4096;
  PageAlignedAllocator() = default;
  template <class U>
  PageAlignedAllocator(const PageAlignedAllocator<U>&) {}  // NOLINT: allocator rebind
  T* allocate(size_t n) {
    size_t bytes = (n * sizeof(T) + kAlign - 1) / kAlign * kAlign;
    void* p = std::aligned_alloc(kAlign, bytes);
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { std::free(p); }
  template <class U>
  bool operator==(const PageAlignedAllocator<U>&) const { return true; }
};

// A growable in-memory file.
class MemFile : public File {
 public:
  explicit MemFile(std::string name = "mem") : name_(std::move(name)) {}
  const std::string& name() const override { return name_; }
  Result<uint64_t> Size() override;
  Result<size_t> Read(uint64_t offset, std::span<uint8_t> buf) override;
  Status Write(uint64_t offset, std::span<const uint8_t> data) override;
  Status Sync() override { return Status::Ok(); }
  Status Truncate(uint64_t size) override;
  std::vector<uint8_t> contents() const;

 private:
  std::string name_;
  mutable std::mutex mu_;
  std::vector<uint8_t> data_;
};

// Wraps a File and injects failures: the Nth call (counting every
// Read/Write/Sync/Truncate from 1) and all later ones fail with EIO (or the
// given errno); Crash() throws away writes not followed by a Sync.
class FaultFile : public File {
 public:
  explicit FaultFile(std::unique_ptr<File> base) : base_(std::move(base)) {}
  const std::string& name() const override { return base_->name(); }
  Result<uint64_t> Size() override { return base_->Size(); }
  Result<size_t> Read(uint64_t offset, std::span<uint8_t> buf) override;
  Status Write(uint64_t offset, std::span<const uint8_t> data) override;
  Status Sync() override;
  Status Truncate(uint64_t size) override;

  // Fail call number `n` (1-based) and everything after; 0 disables.
  void FailFrom(uint64_t n, int err = 5 /* EIO */);
  uint64_t calls() const;
  // Simulated power loss: undo every write since the last successful Sync.
  Status Crash();

 private:
  Status Tick();
  mutable std::mutex mu_;
  std::unique_ptr<File> base_;
  uint64_t calls_ = 0, fail_from_ = 0;
  int err_ = 5;
  // Undo log since the last Sync: (offset, old bytes), plus the old size.
  std::vector<std::pair<uint64_t, std::vector<uint8_t>>> undo_;
  bool have_size_ = false;
  uint64_t synced_size_ = 0;
};

// Writes `data` to `path` atomically: a temporary file beside it, fsync,
// rename, fsync of the directory. On any failure the temporary is removed and
// `path` is untouched.
Status WriteFileAtomic(const std::string& path, std::span<const uint8_t> data);
// Reads a whole (small) file.
Result<std::vector<uint8_t>> ReadWholeFile(const std::string& path);
// fsync of the directory holding `path` (or of `path` if it is a directory).
Status SyncDirOf(const std::string& path);

}  // namespace strata

#endif  // STRATA_FILE_H_
