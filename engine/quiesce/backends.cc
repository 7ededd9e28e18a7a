// FIFREEZE/FITHAW and fake backends.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>

#include "engine/quiesce/quiesce.h"

namespace strata::quiesce {
namespace {

class FifreezeBackend : public Backend {
 public:
  std::string Name() const override { return "fifreeze"; }

  Status Freeze(const std::vector<Filesystem>& fss) override {
    for (size_t i = 0; i < fss.size(); ++i) {
      Status s = Ioctl(fss[i], FIFREEZE, "FIFREEZE");
      if (!s.ok()) {
        // Roll back: nothing of `fss` may stay frozen.
        std::vector<Filesystem> done(fss.begin(), fss.begin() + static_cast<long>(i));
        (void)Thaw(std::vector<Filesystem>(done.rbegin(), done.rend()));
        return s;
      }
    }
    return Status::Ok();
  }

  Status Thaw(const std::vector<Filesystem>& fss) override {
    Status first;
    for (const Filesystem& f : fss) {
      Status s = Ioctl(f, FITHAW, "FITHAW");
      if (!s.ok() && first.ok()) first = s;
    }
    return first;
  }

 private:
  static Status Ioctl(const Filesystem& f, unsigned long request, const char* what) {
    int fd = ::open(f.mount_point.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Status::FromErrno(errno, f.mount_point + ": open for " + what);
    int rc;
    do {
      rc = ::ioctl(fd, request, 0);
    } while (rc < 0 && errno == EINTR);
    int err = errno;
    ::close(fd);
    if (rc == 0) return Status::Ok();
    std::string ctx = f.mount_point + " [" + f.fs_type + " " + f.Key() + "]: " + what;
    if (err == EOPNOTSUPP) {
      return Status::Unsupported(ctx + ": filesystem type " + f.fs_type +
                                 " does not support freezing (EOPNOTSUPP)");
    }
    if (err == EBUSY && request == FIFREEZE) {
      return Status::Busy(ctx + ": already frozen by another process (EBUSY)");
    }
    if (err == EINVAL && request == FITHAW) {
      return Status::InvalidArgument(ctx + ": not frozen (EINVAL)");
    }
    return Status::FromErrno(err, ctx);
  }
};

std::string Mounts(const char* verb, const std::vector<Filesystem>& fss) {
  std::string s = verb;
  for (const auto& f : fss) s += " " + f.mount_point;
  return s;
}

}  // namespace

std::unique_ptr<Backend> MakeFifreezeBackend() { return std::make_unique<FifreezeBackend>(); }

Status FakeBackend::Freeze(const std::vector<Filesystem>& fss) {
  for (const auto& f : fss) {
    for (const auto& bad : state_->fail_freeze) {
      if (bad == f.mount_point) {
        state_->log.push_back(Mounts("freeze-failed", fss));
        return Status(StatusCode::kIoError, f.mount_point + ": FIFREEZE: injected failure");
      }
    }
    if (state_->frozen[f.mount_point]) {
      state_->log.push_back(Mounts("freeze-failed", fss));
      return Status::Busy(f.mount_point + ": already frozen (EBUSY)");
    }
  }
  for (const auto& f : fss) state_->frozen[f.mount_point] = true;
  state_->log.push_back(Mounts("freeze", fss));
  return Status::Ok();
}

Status FakeBackend::Thaw(const std::vector<Filesystem>& fss) {
  Status first;
  for (const auto& f : fss) {
    if (!state_->frozen[f.mount_point] && first.ok()) {
      first = Status::InvalidArgument(f.mount_point + ": not frozen (EINVAL)");
    }
    state_->frozen[f.mount_point] = false;
  }
  state_->log.push_back(Mounts("thaw", fss));
  return first;
}

}  // namespace strata::quiesce
