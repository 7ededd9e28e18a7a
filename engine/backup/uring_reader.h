// A thin io_uring layer for positional reads and writes of one file, with a
// plain pread/pwrite fallback when io_uring is unavailable (e.g.
// io_uring_disabled, seccomp) — kept thin so it can be tested on the real
// kernel (STYLE §4).
//
// Thread safety: one thread drives a UringQueue.
#ifndef STRATA_ENGINE_BACKUP_URING_READER_H_
#define STRATA_ENGINE_BACKUP_URING_READER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "strata/status.h"

namespace strata {

class UringQueue {
 public:
  enum class Op { kRead, kWrite };
  struct Completion {
    uint64_t tag;
    int64_t result;  // bytes transferred, or -errno
  };

  // A queue of `depth` entries on `fd`. `buffers` (optional) are registered
  // for fixed-buffer I/O when the memlock limit allows; a failed
  // registration is not an error (plain buffers are used). When io_uring
  // cannot be set up at all, the queue runs every request synchronously
  // with pread/pwrite and `notice()` says why.
  static std::unique_ptr<UringQueue> Create(int fd, unsigned depth,
                                            std::span<const std::span<uint8_t>> buffers = {});
  virtual ~UringQueue() = default;

  // Queues one request; `buffer_index` is the registered buffer holding
  // `buf` or -1. At most depth() requests may be outstanding.
  virtual Status Submit(Op op, uint64_t offset, std::span<uint8_t> buf, int buffer_index,
                        uint64_t tag) = 0;
  // Waits for at least one completion (if any are outstanding) and returns
  // all that are ready.
  virtual Status Reap(std::vector<Completion>* out) = 0;
  virtual unsigned outstanding() const = 0;
  virtual unsigned depth() const = 0;
  virtual bool uses_uring() const = 0;
  virtual bool uses_registered_buffers() const = 0;
  // Why io_uring is not used ("" when it is).
  virtual const std::string& notice() const = 0;
};

}  // namespace strata

#endif  // STRATA_ENGINE_BACKUP_URING_READER_H_
