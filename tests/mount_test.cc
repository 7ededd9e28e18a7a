// strata mount / umount on real FUSE and loop devices (label "serve"; as
// root, skipped with the reason otherwise): backups of disks holding ext4
// file systems made by mkfs.ext4 with known files, mounted with
// --partitions, compared file by file with sha256sum; strata umount leaves
// nothing mounted and no loop device behind, and never touches a mount it
// did not make. Only mounts under the test's own directory are touched.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/test_util.h"

namespace strata {
namespace {

using testing::RunCommand;
using testing::RunOk;

std::string S(const std::string& args) { return testing::Tool("strata") + " " + args; }
std::string Q(const std::string& s) { return testing::ShellQuote(s); }

std::string Skip() {
  if (::geteuid() != 0) return "not root (loop devices and mounts need root)";
  if (::access("/dev/fuse", R_OK | W_OK) != 0) return "no /dev/fuse";
  if (::access("/dev/loop-control", R_OK | W_OK) != 0) return "no /dev/loop-control (loop devices)";
  for (const char* c : {"mkfs.ext4", "sfdisk", "sha256sum", "losetup"}) {
    if (!testing::HaveCommand(c)) return std::string(c) + " is not installed (scripts/setup.sh installs it)";
  }
  return "";
}

// Mount targets at or under `dir`, from /proc/self/mountinfo.
std::vector<std::string> MountsUnder(const std::string& dir) {
  std::vector<std::string> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ss(line);
    std::string f[5];
    for (auto& x : f) ss >> x;
    if (f[4] == dir || f[4].rfind(dir + "/", 0) == 0) out.push_back(f[4]);
  }
  return out;
}

bool Alive(pid_t pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), {});
  size_t p = stat.rfind(')');
  return p == std::string::npos || p + 2 >= stat.size() || (stat[p + 2] != 'Z' && stat[p + 2] != 'X');
}

// Undoes whatever is still mounted under the test's directory when a test
// fails half-way: strata umount first, then plain lazy unmounts of what is
// left there (all of it made by this test).
struct MountGuard {
  std::string dir;
  ~MountGuard() {
    if (MountsUnder(dir).empty()) return;
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
      if (entry.is_directory()) (void)RunCommand(S("umount " + Q(entry.path().string())));
    }
    auto left = MountsUnder(dir);
    std::sort(left.begin(), left.end(), [](auto& a, auto& b) { return a.size() > b.size(); });
    for (const std::string& m : left) ::umount2(m.c_str(), MNT_DETACH);
  }
};

// Files with random contents (and a name with spaces) under `root`.
void MakeFiles(const std::string& root, std::mt19937_64& rng, int n) {
  std::filesystem::create_directories(root + "/dir with spaces/deeper");
  for (int i = 0; i < n; ++i) {
    std::string sub = i % 3 == 0 ? "" : i % 3 == 1 ? "/dir with spaces" : "/dir with spaces/deeper";
    std::vector<uint8_t> data(rng() % 2 ? rng() % 5000 : rng() % (3 << 20));
    for (auto& b : data) b = static_cast<uint8_t>(rng() % 7 == 0 ? 0 : rng());
    testing::WriteFileBytes(root + sub + "/file " + std::to_string(i) + ".bin", data);
  }
}

// sha256sum of every file under `root`, by relative path, sorted (lost+found
// left out): equal listings mean the same files with the same contents.
std::string Sums(const std::string& root) {
  return RunOk("cd " + Q(root) + " && find . -path ./lost+found -prune -o -type f -print0 | sort -z | "
               "xargs -0 -r sha256sum");
}

// A GPT disk image with two ext4 partitions populated from directories.
void MakeDisk(const std::string& disk, const std::string& p1, const std::string& p2) {
  RunOk("truncate -s 128M " + Q(disk));
  RunOk("printf 'label: gpt\\nstart=2048, size=100000, type=L\\nstart=104448, size=120000, type=L\\n' | sfdisk -q " +
        Q(disk));
  RunOk("mkfs.ext4 -q -F -E offset=" + std::to_string(2048 * 512) + " -d " + Q(p1) + " " + Q(disk) + " 50000k");
  RunOk("mkfs.ext4 -q -F -E offset=" + std::to_string(104448 * 512) + " -d " + Q(p2) + " " + Q(disk) + " 60000k");
}

pid_t DaemonPid(const std::string& dir) {
  auto state = nlohmann::json::parse(RunOk("cat " + Q(dir + "/.strata-mount")), nullptr, false);
  if (!state.is_object() || !state.contains("pid")) return -1;
  return state["pid"].get<pid_t>();
}

std::vector<std::string> LoopsBackedBy(const std::string& file) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator("/sys/block")) {
    std::ifstream in(e.path().string() + "/loop/backing_file");
    std::string b;
    if (in && std::getline(in, b) && b == file) out.push_back(e.path().filename().string());
  }
  return out;
}

// After strata umount: nothing mounted at or under `dir`, no loop device
// over its disk.raw, the mount process gone.
void ExpectGone(const std::string& dir, pid_t daemon) {
  for (int i = 0; i < 500 && Alive(daemon); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_FALSE(Alive(daemon)) << "the mount process " << daemon << " is still running";
  EXPECT_TRUE(MountsUnder(dir).empty()) << dir << " still has mounts";
  EXPECT_TRUE(LoopsBackedBy(dir + "/disk.raw").empty()) << "a loop device still uses " << dir << "/disk.raw";
}

TEST(Mount, PartitionsOfEveryPointMatchTheirFiles) {
  if (std::string s = Skip(); !s.empty()) GTEST_SKIP() << s;
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  testing::TempDir dir;
  MountGuard guard{dir.path()};
  const std::string a1 = dir.File("a1"), a2 = dir.File("a2"), b = dir.File("b");
  MakeFiles(a1, rng, 9);
  MakeFiles(b, rng, 5);
  // The second point: p1 rewritten with other files, p2 the same.
  MakeFiles(a2, rng, 7);
  const std::string disk = dir.File("disk.raw"), repo = dir.File("repo");
  RunOk(S("init " + Q(repo)));
  MakeDisk(disk, a1, b);
  RunOk(S("backup --repo " + Q(repo) + " --full " + Q(disk)));
  MakeDisk(disk, a2, b);
  RunOk(S("backup --repo " + Q(repo) + " --scan " + Q(disk)));
  auto list = RunOk(S("list --repo " + Q(repo)));

  // Both points mounted at once.
  const std::string m1 = dir.File("m1"), m2 = dir.File("m2");
  std::filesystem::create_directory(m1);
  std::filesystem::create_directory(m2);
  auto first = RunCommand(S("list --json --repo " + Q(repo)) + " | grep -m1 '\"id\"' | cut -d'\"' -f4");
  std::string first_id = first.out.substr(0, first.out.find('\n'));
  auto r1 = RunCommand(S("mount --partitions --repo " + Q(repo) + " --backup " + first_id + " " + Q(m1)));
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  auto r2 = RunCommand(S("mount --partitions --repo " + Q(repo) + " " + Q(m2)));
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_NE(r2.out.find(m2 + "/p1: ext4"), std::string::npos) << r2.out;
  EXPECT_NE(r2.out.find(m2 + "/p2: ext4"), std::string::npos) << r2.out;
  EXPECT_EQ(Sums(m1 + "/p1"), Sums(a1));
  EXPECT_EQ(Sums(m1 + "/p2"), Sums(b));
  EXPECT_EQ(Sums(m2 + "/p1"), Sums(a2));
  EXPECT_EQ(Sums(m2 + "/p2"), Sums(b));
  EXPECT_NE(Sums(m1 + "/p1"), Sums(m2 + "/p1"));
  // The whole disk as a file equals the disk as backed up last.
  EXPECT_EQ(RunCommand("cmp " + Q(m2 + "/disk.raw") + " " + Q(disk)).exit_code, 0);
  // Read-only all the way down.
  EXPECT_NE(RunCommand("touch " + Q(m2 + "/p1/new")).exit_code, 0);
  EXPECT_NE(RunCommand("sh -c 'echo x >> " + m2 + "/disk.raw'").exit_code, 0);

  // A mount strata did not make, inside one of its file systems: umount
  // refuses and leaves everything as it was.
  const std::string foreign = m2 + "/p1/dir with spaces";
  ASSERT_EQ(::mount("tmpfs", foreign.c_str(), "tmpfs", 0, "size=1m"), 0);
  auto refused = RunCommand(S("umount " + Q(m2)));
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("strata did not mount"), std::string::npos) << refused.err;
  EXPECT_EQ(MountsUnder(m2).size(), 4u);
  ASSERT_EQ(::umount2(foreign.c_str(), 0), 0);

  // Not a strata mount at all.
  auto notours = RunCommand(S("umount " + Q(dir.File("a1"))));
  EXPECT_EQ(notours.exit_code, 1);
  EXPECT_NE(notours.err.find("not a strata mount"), std::string::npos) << notours.err;

  pid_t d1 = DaemonPid(m1), d2 = DaemonPid(m2);
  auto u1 = RunCommand(S("umount " + Q(m1)));
  EXPECT_EQ(u1.exit_code, 0) << u1.err;
  ExpectGone(m1, d1);
  auto u2 = RunCommand(S("umount " + Q(m2)));
  EXPECT_EQ(u2.exit_code, 0) << u2.err;
  ExpectGone(m2, d2);
}

// A disk without a partition table: its file system is DIR/p0. SIGTERM to
// the mount process undoes the mount like strata umount.
TEST(Mount, WholeDiskFileSystemAndStopBySignal) {
  if (std::string s = Skip(); !s.empty()) GTEST_SKIP() << s;
  std::mt19937_64 rng(testing::TestSeed());
  testing::TempDir dir;
  MountGuard guard{dir.path()};
  const std::string src = dir.File("src"), disk = dir.File("disk.raw"), repo = dir.File("repo"), m = dir.File("m");
  MakeFiles(src, rng, 6);
  RunOk("truncate -s 64M " + Q(disk) + " && mkfs.ext4 -q -F -d " + Q(src) + " " + Q(disk));
  RunOk(S("init " + Q(repo)));
  RunOk(S("backup --repo " + Q(repo) + " --full " + Q(disk)));
  std::filesystem::create_directory(m);
  auto r = RunCommand(S("mount --partitions --cache 0 --repo " + Q(repo) + " " + Q(m)));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Sums(m + "/p0"), Sums(src));
  pid_t d = DaemonPid(m);
  ASSERT_GT(d, 0);
  ::kill(d, SIGTERM);
  ExpectGone(m, d);
}

}  // namespace
}  // namespace strata
