// A fake system for quiesce tests: a mountinfo file and a sysfs tree under
// a TempDir (no real device or filesystem is involved).
#ifndef STRATA_TESTS_QUIESCE_FAKE_SYSTEM_H_
#define STRATA_TESTS_QUIESCE_FAKE_SYSTEM_H_

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "strata/quiesce.h"
#include "tests/test_util.h"

namespace strata::quiesce {

inline void WriteText(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::trunc);
  f << text;
}

inline std::string ReadText(const std::string& path) {
  std::ifstream f(path);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

// A fake system: mountinfo + sysfs tree. Disks (maj 250):
//   vda(250:0) -> fs /fake/a;  vdb(250:16) -> fs /fake/b
//   vdc(250:32) with partitions vdc1(250:33) -> /fake/c, vdc2(250:34)
//   dm-0(251:0) over vdc2 and vdd(250:48) -> /fake/d (also bind at /fake/d2)
//   rootdisk = the real root filesystem's device -> "/"
class FakeSystem {
 public:
  FakeSystem() {
    sys_ = dir_.File("sys");
    struct stat st;
    EXPECT_EQ(::stat("/", &st), 0);
    root_major_ = major(st.st_dev);
    root_minor_ = minor(st.st_dev);
    Disk("vda", 250, 0);
    Disk("vdb", 250, 16);
    Disk("vdc", 250, 32);
    Partition("vdc", "vdc1", 250, 33);
    Partition("vdc", "vdc2", 250, 34);
    Disk("vdd", 250, 48);
    Disk("dm-0", 251, 0);
    Stack("dm-0", "vdc2");
    Stack("dm-0", "vdd");
    Disk("rootdisk", root_major_, root_minor_);
    std::string root_dev = std::to_string(root_major_) + ":" + std::to_string(root_minor_);
    WriteText(mountinfo(), "20 1 " + root_dev +
                               " / / rw,relatime shared:1 - ext4 /dev/root rw\n"
                               "30 20 250:0 / /fake/a rw,relatime shared:2 - ext4 /dev/vda rw\n"
                               "31 20 250:16 / /fake/b rw,relatime - xfs /dev/vdb rw\n"
                               "32 20 250:33 / /fake/c rw - ext4 /dev/vdc1 rw\n"
                               "33 20 251:0 / /fake/d rw - xfs /dev/mapper/vg-lv rw\n"
                               "34 20 251:0 /sub /fake/d2 rw - xfs /dev/mapper/vg-lv rw\n"
                               "35 20 0:40 / /fake/tmp rw - tmpfs tmpfs rw\n");
  }
  std::string mountinfo() const { return dir_.File("mountinfo"); }
  const std::string& sys() const { return sys_; }
  const strata::testing::TempDir& dir() const { return dir_; }

  Coordinator::Options Options(const std::string& confine = "/fake") const {
    Coordinator::Options o;
    o.mountinfo_path = mountinfo();
    o.sysfs_root = sys_;
    o.confine_to = confine;
    return o;
  }

 private:
  void Disk(const std::string& name, unsigned ma, unsigned mi) {
    std::string d = sys_ + "/class/block/" + name;
    std::filesystem::create_directories(d + "/holders");
    std::filesystem::create_directories(d + "/slaves");
    WriteText(d + "/dev", std::to_string(ma) + ":" + std::to_string(mi) + "\n");
    std::filesystem::create_directories(sys_ + "/dev/block");
    std::filesystem::create_symlink("../../class/block/" + name,
                       sys_ + "/dev/block/" + std::to_string(ma) + ":" + std::to_string(mi));
  }
  void Partition(const std::string& disk, const std::string& name, unsigned ma, unsigned mi) {
    std::string d = sys_ + "/class/block/" + disk + "/" + name;
    std::filesystem::create_directories(d + "/holders");
    WriteText(d + "/dev", std::to_string(ma) + ":" + std::to_string(mi) + "\n");
    WriteText(d + "/partition", "1\n");
    std::filesystem::create_symlink(disk + "/" + name, sys_ + "/class/block/" + name);
    std::filesystem::create_symlink("../../class/block/" + name,
                       sys_ + "/dev/block/" + std::to_string(ma) + ":" + std::to_string(mi));
  }
  void Stack(const std::string& upper, const std::string& lower) {
    WriteText(sys_ + "/class/block/" + lower + "/holders/" + upper, "");
    WriteText(sys_ + "/class/block/" + upper + "/slaves/" + lower, "");
  }

  strata::testing::TempDir dir_;
  std::string sys_;
  unsigned root_major_ = 0, root_minor_ = 0;
};

}  // namespace strata::quiesce

#endif  // STRATA_TESTS_QUIESCE_FAKE_SYSTEM_H_
