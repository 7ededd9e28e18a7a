// FIFREEZE/FITHAW and fake backends.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

#include "strata/quiesce.h"

namespace strata::quiesce {
namespace {

class FifreezeBackend : public Backend {
 public:
  ~FifreezeBackend() override {
    // The Coordinator thaws before destroying its backend; a descriptor
    // still here belongs to a filesystem whose thaw failed.
    for (const auto& [key, fd] : fds_) ::close(fd);
  }

  std::string Name() const override { return "fifreeze"; }

  Status Freeze(const std::vector<Filesystem>& fss, Clock::time_point /*deadline*/) override {
    for (size_t i = 0; i < fss.size(); ++i) {
      Status s = FreezeOne(fss[i]);
      if (!s.ok()) {
        // Roll back: nothing of `fss` may stay frozen.
        std::vector<Filesystem> done(fss.begin(), fss.begin() + static_cast<long>(i));
        (void)Thaw(std::vector<Filesystem>(done.rbegin(), done.rend()));
        return s;
      }
      Step("froze-one");
    }
    return Status::Ok();
  }

  Status Thaw(const std::vector<Filesystem>& fss) override {
    Status first;
    for (const Filesystem& f : fss) {
      Status s = ThawOne(f);
      if (!s.ok() && first.ok()) first = s;
      Step("thawed-one");
    }
    return first;
  }

 private:
  static std::string Context(const Filesystem& f, const char* what) {
    return f.mount_point + " [" + f.fs_type + " " + f.Key() + "]: " + what;
  }

  // Opens the mount point and checks it still holds `f` (the mount may have
  // changed since the targets were resolved).
  static Result<int> OpenChecked(const Filesystem& f, const char* what) {
    int fd = ::open(f.mount_point.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Status::FromErrno(errno, f.mount_point + ": open for " + what);
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      int err = errno;
      ::close(fd);
      return Status::FromErrno(err, f.mount_point + ": fstat");
    }
    if (major(st.st_dev) != f.major || minor(st.st_dev) != f.minor) {
      ::close(fd);
      return Status::NotFound(Context(f, what) + ": the mount point now holds device " +
                              std::to_string(major(st.st_dev)) + ":" +
                              std::to_string(minor(st.st_dev)) + " (the mount changed)");
    }
    return fd;
  }

  static int Ioctl(int fd, unsigned long request) {
    int rc;
    do {
      rc = ::ioctl(fd, request, 0);
    } while (rc < 0 && errno == EINTR);
    return rc == 0 ? 0 : errno;
  }

  Status FreezeOne(const Filesystem& f) {
    STRATA_ASSIGN_OR_RETURN(int fd, OpenChecked(f, "FIFREEZE"));
    int err = Ioctl(fd, FIFREEZE);
    if (err != 0) {
      ::close(fd);
      if (err == EOPNOTSUPP) {
        return Status::Unsupported(Context(f, "FIFREEZE") + ": filesystem type " + f.fs_type +
                                   " does not support freezing (EOPNOTSUPP)");
      }
      if (err == EBUSY) {
        return Status::Busy(Context(f, "FIFREEZE") + ": already frozen by another process (EBUSY)");
      }
      return Status::FromErrno(err, Context(f, "FIFREEZE"));
    }
    std::lock_guard<std::mutex> lock(mu_);
    fds_[f.Key()] = fd;  // thawed through this very descriptor
    return Status::Ok();
  }

  Status ThawOne(const Filesystem& f) {
    int fd = -1;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = fds_.find(f.Key());
      if (it != fds_.end()) {
        fd = it->second;
        fds_.erase(it);
      }
    }
    if (fd < 0) {  // not frozen by us: only thaw the same filesystem
      STRATA_ASSIGN_OR_RETURN(fd, OpenChecked(f, "FITHAW"));
    }
    int err = Ioctl(fd, FITHAW);
    ::close(fd);
    if (err == 0) return Status::Ok();
    if (err == EINVAL) return Status::InvalidArgument(Context(f, "FITHAW") + ": not frozen (EINVAL)");
    return Status::FromErrno(err, Context(f, "FITHAW"));
  }

  std::mutex mu_;
  std::map<std::string, int> fds_;  // Filesystem::Key() -> descriptor frozen through
};

std::string Mounts(const char* verb, const std::vector<Filesystem>& fss) {
  std::string s = verb;
  for (const auto& f : fss) s += " " + f.mount_point;
  return s;
}

}  // namespace

std::unique_ptr<Backend> MakeFifreezeBackend() { return std::make_unique<FifreezeBackend>(); }

Status FakeBackend::Freeze(const std::vector<Filesystem>& fss, Clock::time_point /*deadline*/) {
  std::chrono::milliseconds delay;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    delay = state_->delay;
  }
  if (delay.count() > 0) std::this_thread::sleep_for(delay);
  std::lock_guard<std::mutex> lock(state_->mu);
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
  std::chrono::milliseconds delay;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    delay = state_->delay;
  }
  if (delay.count() > 0) std::this_thread::sleep_for(delay);
  std::lock_guard<std::mutex> lock(state_->mu);
  Status first;
  for (const auto& f : fss) {
    if (!state_->frozen[f.mount_point] && first.ok()) {
      first = Status::InvalidArgument(f.mount_point + ": not frozen (EINVAL)");
    }
    state_->frozen[f.mount_point] = false;
  }
  if (!state_->can_thaw_part) {
    // Like qemu-ga: a thaw thaws everything this backend froze.
    for (auto& [mp, frozen] : state_->frozen) frozen = false;
  }
  state_->log.push_back(Mounts("thaw", fss));
  return first;
}

}  // namespace strata::quiesce
