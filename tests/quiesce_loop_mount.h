// Real filesystems for quiesce system tests: an image file formatted and
// loop-mounted under the test's own TempDir, and a writer process that
// blocks while its filesystem is frozen. See quiesce_system_test.cc for the
// safety rules (only what the test created is ever frozen).
#ifndef STRATA_TESTS_QUIESCE_LOOP_MOUNT_H_
#define STRATA_TESTS_QUIESCE_LOOP_MOUNT_H_

#include <fcntl.h>
#include <gtest/gtest.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "strata/quiesce.h"
#include "tests/test_util.h"

namespace strata::quiesce {

namespace loop_mount_internal {
namespace fs = std::filesystem;
using strata::testing::RunCommand;
using strata::testing::ShellQuote;
using strata::testing::TempDir;
using namespace std::chrono_literals;

inline std::string RealPath(const std::string& p) {
  char buf[PATH_MAX];
  return ::realpath(p.c_str(), buf) ? std::string(buf) : p;
}

inline std::string ReadText(const std::string& path) {
  std::ifstream f(path);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

// Why real-filesystem tests cannot run here, or "" if they can.
inline std::string SkipReason(const std::string& fs_type) {
  if (::geteuid() != 0) return "needs root (mount, losetup, FIFREEZE)";
  if (!strata::testing::HaveCommand("losetup") || RunCommand("losetup -f").exit_code != 0)
    return "no free loop device (losetup -f failed)";
  if (!strata::testing::HaveCommand("mkfs." + fs_type))
    return "mkfs." + fs_type + " not installed (scripts/setup.sh installs it)";
  return "";
}

// An image file formatted with `fs_type`, attached to a loop device and
// mounted at <tempdir>/mnt. The destructor thaws (only this mount), unmounts
// and detaches, also after a failed assertion.
class LoopMount {
 public:
  // The image is <dir>/<name>.img, the mount point <dir>/<name>.
  LoopMount(const TempDir& dir, const std::string& fs_type, const std::string& name = "mnt")
      : dir_(RealPath(dir.path())) {
    std::string img = dir_ + "/" + name + ".img";
    mnt_ = dir_ + "/" + name;
    // xfs needs >= 300 MiB since xfsprogs 5.19; the file is sparse.
    std::string size = fs_type == "xfs" ? "320M" : "64M";
    if (RunCommand("truncate -s " + size + " " + ShellQuote(img)).exit_code != 0) return;
    auto mk = RunCommand("mkfs." + fs_type + " -q " + ShellQuote(img));
    if (mk.exit_code != 0) {
      ADD_FAILURE() << "mkfs." << fs_type << ": " << mk.err;
      return;
    }
    auto lo = RunCommand("losetup -f --show " + ShellQuote(img));
    if (lo.exit_code != 0) {
      ADD_FAILURE() << "losetup: " << lo.err;
      return;
    }
    dev_ = lo.out.substr(0, lo.out.find('\n'));
    fs::create_directories(mnt_);
    auto m = RunCommand("mount " + ShellQuote(dev_) + " " + ShellQuote(mnt_));
    if (m.exit_code != 0) {
      ADD_FAILURE() << "mount: " << m.err;
      return;
    }
    mounted_ = true;
  }
  ~LoopMount() {
    if (mounted_) {
      // FITHAW on our own mount only; EINVAL (not frozen) is fine.
      (void)RunCommand("fsfreeze -u " + ShellQuote(mnt_) + " 2>/dev/null");
      for (int i = 0; i < 50 && RunCommand("umount " + ShellQuote(mnt_)).exit_code != 0; ++i) {
        std::this_thread::sleep_for(100ms);
      }
    }
    if (!dev_.empty()) (void)RunCommand("losetup -d " + ShellQuote(dev_));
  }
  bool ok() const { return mounted_; }
  const std::string& mnt() const { return mnt_; }
  const std::string& dev() const { return dev_; }
  const std::string& dir() const { return dir_; }

  // The second guard: the mount point is inside our TempDir and the
  // mountinfo entry for it is our loop device.
  ::testing::AssertionResult CheckOwnMount() const {
    if (!PathWithin(mnt_, dir_))
      return ::testing::AssertionFailure() << mnt_ << " outside " << dir_;
    std::string mi = ReadText("/proc/self/mountinfo");
    auto parsed = ParseMountInfo(mi, "mountinfo");
    if (!parsed.has_value()) return ::testing::AssertionFailure() << parsed.error().ToString();
    for (const auto& m : *parsed) {
      if (m.mount_point == mnt_ && m.source == dev_) return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure() << mnt_ << " is not mounted from " << dev_;
  }

  Coordinator::Options ConfinedOptions() const {
    Coordinator::Options o;
    o.confine_to = dir_;
    return o;
  }

 private:
  std::string dir_, mnt_, dev_;
  bool mounted_ = false;
};

// A writer in another process: creates a file on the mount and then a
// marker outside it. Blocks in the kernel while the filesystem is frozen.
class Writer {
 public:
  Writer(const std::string& target, const std::string& marker) : marker_(marker) {
    pid_ = ::fork();
    if (pid_ == 0) {
      int fd = ::open(target.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd < 0) ::_exit(2);
      if (::write(fd, "hello", 5) != 5) ::_exit(3);
      ::fsync(fd);
      ::close(fd);
      int m = ::open(marker.c_str(), O_WRONLY | O_CREAT, 0644);
      ::_exit(m < 0 ? 4 : 0);
    }
  }
  ~Writer() { (void)Wait(30s); }
  bool Done() const { return fs::exists(marker_); }
  // Waits for the child; true when it exited 0 within `t`.
  bool Wait(std::chrono::milliseconds t) {
    if (pid_ <= 0) return exited_ok_;
    auto end = std::chrono::steady_clock::now() + t;
    while (std::chrono::steady_clock::now() < end) {
      int st;
      if (::waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = 0;
        exited_ok_ = WIFEXITED(st) && WEXITSTATUS(st) == 0;
        return exited_ok_;
      }
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }

 private:
  std::string marker_;
  pid_t pid_ = -1;
  bool exited_ok_ = false;
};

// Whether the filesystem holding `path` is frozen right now, probed with
// FIFREEZE: EBUSY means frozen; if the probe froze it, it is thawed at once.
// Only for filesystems the test created.
inline bool IsFrozen(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return false;
  bool frozen = ::ioctl(fd, FIFREEZE, 0) != 0 && errno == EBUSY;
  if (!frozen) ::ioctl(fd, FITHAW, 0);
  ::close(fd);
  return frozen;
}

}  // namespace loop_mount_internal

using loop_mount_internal::IsFrozen;
using loop_mount_internal::LoopMount;
using loop_mount_internal::ReadText;
using loop_mount_internal::RealPath;
using loop_mount_internal::SkipReason;
using loop_mount_internal::Writer;

}  // namespace strata::quiesce

#endif  // STRATA_TESTS_QUIESCE_LOOP_MOUNT_H_
