#include "engine/backup/uring_reader.h"

#include <liburing.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace strata {

namespace {

class RealUring : public UringQueue {
 public:
  ~RealUring() override {
    if (registered_) io_uring_unregister_buffers(&ring_);
    io_uring_queue_exit(&ring_);
  }

  static std::unique_ptr<UringQueue> TryCreate(int fd, unsigned depth,
                                               std::span<const std::span<uint8_t>> buffers,
                                               std::string* why) {
    std::unique_ptr<RealUring> q(new RealUring);
    q->fd_ = fd;
    q->depth_ = depth;
    int rc = io_uring_queue_init(depth, &q->ring_, 0);
    if (rc < 0) {
      *why = std::string("io_uring unavailable (") + std::strerror(-rc) +
             "), using positional reads and writes";
      return nullptr;
    }
    if (!buffers.empty()) {
      std::vector<iovec> iov;
      for (auto b : buffers) iov.push_back({b.data(), b.size()});
      rc = io_uring_register_buffers(&q->ring_, iov.data(), static_cast<unsigned>(iov.size()));
      // Fails with ENOMEM under an 8 MiB RLIMIT_MEMLOCK (unprivileged users
      // here): plain buffers work, so this is reported only through
      // uses_registered_buffers(), not as a notice users would see each run.
      q->registered_ = rc == 0;
    }
    return q;
  }

  Status Submit(Op op, uint64_t offset, std::span<uint8_t> buf, int buffer_index,
                uint64_t tag) override {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {
      int rc = io_uring_submit(&ring_);
      if (rc < 0) return Status::FromErrno(-rc, "io_uring_submit");
      sqe = io_uring_get_sqe(&ring_);
      if (sqe == nullptr) return Status::Busy("io_uring submission queue full");
    }
    unsigned n = static_cast<unsigned>(buf.size());
    if (op == Op::kRead) {
      if (registered_ && buffer_index >= 0) {
        io_uring_prep_read_fixed(sqe, fd_, buf.data(), n, offset, buffer_index);
      } else {
        io_uring_prep_read(sqe, fd_, buf.data(), n, offset);
      }
    } else {
      if (registered_ && buffer_index >= 0) {
        io_uring_prep_write_fixed(sqe, fd_, buf.data(), n, offset, buffer_index);
      } else {
        io_uring_prep_write(sqe, fd_, buf.data(), n, offset);
      }
    }
    io_uring_sqe_set_data64(sqe, tag);
    ++outstanding_;
    return Status::Ok();
  }

  Status Reap(std::vector<Completion>* out) override {
    if (outstanding_ == 0) return Status::Ok();
    int rc = io_uring_submit_and_wait(&ring_, 1);
    if (rc < 0 && rc != -EINTR) return Status::FromErrno(-rc, "io_uring_submit_and_wait");
    io_uring_cqe* cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      out->push_back({io_uring_cqe_get_data64(cqe), cqe->res});
      ++seen;
    }
    io_uring_cq_advance(&ring_, seen);
    outstanding_ -= seen;
    return Status::Ok();
  }

  unsigned outstanding() const override { return outstanding_; }
  unsigned depth() const override { return depth_; }
  bool uses_uring() const override { return true; }
  bool uses_registered_buffers() const override { return registered_; }
  const std::string& notice() const override { return notice_; }

 private:
  io_uring ring_{};
  int fd_ = -1;
  unsigned depth_ = 0, outstanding_ = 0;
  bool registered_ = false;
  std::string notice_;
};

// Fallback: every request completes at Submit time with pread/pwrite.
class SyncQueue : public UringQueue {
 public:
  SyncQueue(int fd, unsigned depth, std::string notice)
      : fd_(fd), depth_(depth), notice_(std::move(notice)) {}

  Status Submit(Op op, uint64_t offset, std::span<uint8_t> buf, int, uint64_t tag) override {
    size_t done = 0;
    int64_t result = 0;
    while (done < buf.size()) {
      ssize_t n = op == Op::kRead
                      ? ::pread(fd_, buf.data() + done, buf.size() - done, static_cast<off_t>(offset + done))
                      : ::pwrite(fd_, buf.data() + done, buf.size() - done, static_cast<off_t>(offset + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        result = -errno;
        break;
      }
      if (n == 0) break;
      done += static_cast<size_t>(n);
    }
    ready_.push_back({tag, result < 0 ? result : static_cast<int64_t>(done)});
    return Status::Ok();
  }
  Status Reap(std::vector<Completion>* out) override {
    out->insert(out->end(), ready_.begin(), ready_.end());
    ready_.clear();
    return Status::Ok();
  }
  unsigned outstanding() const override { return static_cast<unsigned>(ready_.size()); }
  unsigned depth() const override { return depth_; }
  bool uses_uring() const override { return false; }
  bool uses_registered_buffers() const override { return false; }
  const std::string& notice() const override { return notice_; }

 private:
  int fd_;
  unsigned depth_;
  std::string notice_;
  std::vector<Completion> ready_;
};

}  // namespace

std::unique_ptr<UringQueue> UringQueue::Create(int fd, unsigned depth,
                                               std::span<const std::span<uint8_t>> buffers) {
  std::string why;
  if (const char* e = std::getenv("STRATA_NO_URING"); e && *e && *e != '0') {
    why = "io_uring disabled by STRATA_NO_URING, using positional reads and writes";
  } else if (auto q = RealUring::TryCreate(fd, depth, buffers, &why)) {
    return q;
  }
  return std::make_unique<SyncQueue>(fd, depth, why);
}

}  // namespace strata
