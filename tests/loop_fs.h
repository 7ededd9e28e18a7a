// A file system made and loop-mounted by a test in its own directory (as
// root; skip() says why not otherwise). The destructor thaws (in case a test
// failed inside a freeze window), unmounts and detaches, on every path; no
// other mount is ever touched.
#ifndef STRATA_TESTS_LOOP_FS_H_
#define STRATA_TESTS_LOOP_FS_H_

#include <unistd.h>

#include <filesystem>
#include <string>

#include "tests/test_util.h"

namespace strata::testing {

// A file system on a loop device over a sparse file in the test's directory.
class LoopFs {
 public:
  // `mkfs` is the command with the image path appended; `opts` mount options.
  LoopFs(const std::string& dir, const std::string& name, const std::string& mkfs,
         const std::string& opts)
      : mnt_(dir + "/" + name + ".mnt") {
    if (::geteuid() != 0) {
      skip_ = "not root (loop mounts need root)";
      return;
    }
    const std::string tool = mkfs.substr(0, mkfs.find(' '));
    if (!testing::HaveCommand(tool) || !testing::HaveCommand("losetup")) {
      skip_ = tool + " or losetup not installed (scripts/setup.sh installs them)";
      return;
    }
    const std::string img = dir + "/" + name + ".img";
    auto mk = testing::RunCommand("truncate -s 512M " + testing::ShellQuote(img) + " && " + mkfs + " " +
                         testing::ShellQuote(img));
    if (mk.exit_code != 0) {
      skip_ = tool + " failed: " + mk.err;
      return;
    }
    auto l = testing::RunCommand("losetup -f --show " + testing::ShellQuote(img));
    if (l.exit_code != 0) {
      skip_ = "no loop device: " + l.err;
      return;
    }
    dev_ = l.out.substr(0, l.out.find('\n'));
    std::filesystem::create_directory(mnt_);
    auto m = testing::RunCommand("mount " + (opts.empty() ? "" : "-o " + testing::ShellQuote(opts) + " ") +
                        testing::ShellQuote(dev_) + " " + testing::ShellQuote(mnt_));
    if (m.exit_code != 0) {
      skip_ = "mount " + tool + " failed: " + m.err;
      return;
    }
    mounted_ = true;
  }
  ~LoopFs() {
    if (mounted_) (void)testing::RunCommand("fsfreeze -u " + testing::ShellQuote(mnt_) + " 2>/dev/null");
    if (mounted_ && testing::RunCommand("umount " + testing::ShellQuote(mnt_)).exit_code != 0) {
      testing::RunCommand("umount -l " + testing::ShellQuote(mnt_));
    }
    if (!dev_.empty()) testing::RunCommand("losetup -d " + testing::ShellQuote(dev_));
  }
  LoopFs(const LoopFs&) = delete;
  LoopFs& operator=(const LoopFs&) = delete;
  const std::string& skip() const { return skip_; }
  const std::string& mnt() const { return mnt_; }

 private:
  std::string mnt_, dev_, skip_;
  bool mounted_ = false;
};

inline LoopFs* MakeXfs(const TempDir& dir, const std::string& name = "xfs") {
  return new LoopFs(dir.path(), name, "mkfs.xfs -q -m reflink=1", "");
}
inline LoopFs* MakeBtrfs(const TempDir& dir, const std::string& opts, const std::string& name = "btrfs") {
  return new LoopFs(dir.path(), name, "mkfs.btrfs -q", opts);
}

}  // namespace strata::testing

#endif  // STRATA_TESTS_LOOP_FS_H_
