// The repository CLI as users run it: backup, restore, verify, merge; kill -9
// in the middle of a backup; refusals and corruption reports.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <random>
#include <regex>

#include "tests/test_util.h"

namespace strata {
namespace {

using testing::RunCommand;
using testing::RunOk;
using testing::ShellQuote;

std::string S(const std::string& args) { return testing::Tool("strata") + " " + args; }

void Scribble(const std::string& path, std::mt19937_64& rng, int n) {
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  off_t size = ::lseek(fd, 0, SEEK_END);
  std::vector<uint8_t> buf;
  for (int i = 0; i < n; ++i) {
    size_t len = 4096 * (1 + rng() % 32);
    off_t off = static_cast<off_t>((rng() % (static_cast<uint64_t>(size) - len)) & ~uint64_t{4095});
    buf.assign(len, static_cast<uint8_t>(rng() % 3 == 0 ? 0 : rng()));
    ASSERT_EQ(::pwrite(fd, buf.data(), len, off), static_cast<ssize_t>(len));
  }
  ::close(fd);
}

std::vector<std::string> Ids(const std::string& repo) {
  std::string out = RunOk(S("list --json --repo " + ShellQuote(repo)));
  std::vector<std::string> ids;
  std::regex re("\"id\": \"([0-9a-f]{32})\"");
  for (std::sregex_iterator it(out.begin(), out.end(), re), end; it != end; ++it) {
    ids.push_back((*it)[1]);
  }
  return ids;
}

TEST(BackupCli, FullScanRestoreVerifyMerge) {
  testing::TempDir dir;
  std::mt19937_64 rng(testing::TestSeed());
  std::string disk = dir.File("disk.raw"), repo = dir.File("repo");
  RunOk(S("generate --size 64M --fill 0.3 --seed 5 " + ShellQuote(disk)));
  RunOk(S("init " + ShellQuote(repo)));
  std::vector<std::vector<uint8_t>> points;
  RunOk(S("backup --repo " + ShellQuote(repo) + " --full " + ShellQuote(disk)));
  points.push_back(testing::ReadFileBytes(disk));
  for (int i = 0; i < 3; ++i) {
    Scribble(disk, rng, 10);
    auto r = RunCommand(S("backup --json --repo " + ShellQuote(repo) + " --scan " + ShellQuote(disk)));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("\"source\": \"scan\""), std::string::npos) << r.out;
    points.push_back(testing::ReadFileBytes(disk));
  }
  auto ids = Ids(repo);
  ASSERT_EQ(ids.size(), 4u);
  for (size_t i = 0; i < ids.size(); ++i) {
    std::string out = dir.File("out" + std::to_string(i) + ".raw");
    RunOk(S("restore --repo " + ShellQuote(repo) + " --backup " + ids[i].substr(0, 8) + " " +
            ShellQuote(out)));
    EXPECT_TRUE(testing::ReadFileBytes(out) == points[i]) << "backup " << i;
  }
  auto v = RunCommand(S("verify --repo " + ShellQuote(repo) + " --against " + ShellQuote(disk)));
  EXPECT_EQ(v.exit_code, 0) << v.err;
  // A restore never overwrites an existing file without --force.
  auto again = RunCommand(S("restore --repo " + ShellQuote(repo) + " " + ShellQuote(dir.File("out0.raw"))));
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.err.find("--force"), std::string::npos);
  // Remove a middle backup: the later ones still restore to their points.
  RunOk(S("merge --repo " + ShellQuote(repo) + " --remove " + ids[1]));
  RunOk(S("merge --repo " + ShellQuote(repo) + " --fold " + ids[3]));  // drops ids[2]
  auto left = Ids(repo);
  ASSERT_EQ(left.size(), 2u);
  EXPECT_EQ(left[0], ids[0]);
  EXPECT_EQ(left[1], ids[3]);
  std::string out = dir.File("after-merge.raw");
  RunOk(S("restore --repo " + ShellQuote(repo) + " " + ShellQuote(out)));
  EXPECT_TRUE(testing::ReadFileBytes(out) == points[3]);
  RunOk(S("merge --repo " + ShellQuote(repo) + " --synthetic-full latest"));
  std::filesystem::remove(out);
  RunOk(S("restore --repo " + ShellQuote(repo) + " " + ShellQuote(out)));
  EXPECT_TRUE(testing::ReadFileBytes(out) == points[3]);
  RunOk(S("verify --repo " + ShellQuote(repo)));
}

// A restore that cannot fit fails before writing data, with one line naming
// the output; O_DIRECT and page-cache restores agree byte for byte.
TEST(BackupCli, RestoreToAFullDiskFailsClearly) {
  testing::TempDir dir;
  std::string disk = dir.File("disk.raw"), repo = dir.File("repo");
  RunOk(S("generate --size 32M --fill 0.5 --seed 9 " + ShellQuote(disk)));
  RunOk(S("init " + ShellQuote(repo)));
  RunOk(S("backup --repo " + ShellQuote(repo) + " --full " + ShellQuote(disk)));
  for (const char* flag : {"", "--no-direct "}) {
    std::string out = dir.File(std::string("out") + (*flag ? "-buffered" : "") + ".raw");
    auto r = RunCommand(S("restore --json " + std::string(flag) + "--repo " + ShellQuote(repo) + " " +
                          ShellQuote(out)));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find(*flag ? "\"direct_io\": false" : "\"direct_io\": true"), std::string::npos)
        << r.out;
    EXPECT_TRUE(testing::ReadFileBytes(out) == testing::ReadFileBytes(disk)) << flag;
  }
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (mount)";
  std::string mnt = dir.File("small");
  std::filesystem::create_directories(mnt);
  ASSERT_EQ(RunCommand("mount -t tmpfs -o size=4M tmpfs " + ShellQuote(mnt)).exit_code, 0);
  std::string out = mnt + "/out.raw";
  auto r = RunCommand(S("restore --repo " + ShellQuote(repo) + " " + ShellQuote(out)));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(out + ": allocating"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("No space left"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  (void)RunCommand("umount " + ShellQuote(mnt));
}

TEST(BackupCli, CorruptionIsReportedWithTheFile) {
  testing::TempDir dir;
  std::string disk = dir.File("disk.raw"), repo = dir.File("repo");
  RunOk(S("generate --size 16M --fill 0.5 --seed 2 " + ShellQuote(disk)));
  RunOk(S("init " + ShellQuote(repo)));
  RunOk(S("backup --repo " + ShellQuote(repo) + " --full " + ShellQuote(disk)));
  std::string archive = repo + "/archives/" + Ids(repo)[0] + ".sar";
  // extent-dump ARCHIVE lists its extents; they add up to what info reports.
  std::string dump = RunOk(testing::Tool("extent-dump") + " --json " + ShellQuote(archive));
  uint64_t sum = 0;
  std::regex len_re("\"length\": ([0-9]+)");
  for (std::sregex_iterator it(dump.begin(), dump.end(), len_re), end; it != end; ++it) {
    sum += std::stoull((*it)[1]);
  }
  std::string info = RunOk(S("info --json " + ShellQuote(archive)));
  EXPECT_NE(info.find("\"logical_bytes\": " + std::to_string(sum)), std::string::npos) << info;
  EXPECT_GT(sum, 0u);
  auto bytes = testing::ReadFileBytes(archive);
  std::mt19937_64 rng(testing::TestSeed());
  for (int i = 0; i < 20; ++i) {
    auto bad = bytes;
    size_t at = rng() % bad.size();
    bad[at] ^= 0x40;
    testing::WriteFileBytes(archive, bad);
    auto r = RunCommand(S("verify --repo " + ShellQuote(repo)));
    EXPECT_EQ(r.exit_code, 1) << "flip at " << at << " not detected";
    EXPECT_NE(r.err.find(archive), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  testing::WriteFileBytes(archive, bytes);
  RunOk(S("verify --repo " + ShellQuote(repo)));
  // A damaged catalog is named too, and nothing is changed.
  std::string catalog = repo + "/catalog";
  auto cat = testing::ReadFileBytes(catalog);
  auto bad = cat;
  bad[20] ^= 1;
  testing::WriteFileBytes(catalog, bad);
  auto r = RunCommand(S("list --repo " + ShellQuote(repo)));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("catalog"), std::string::npos) << r.err;
  EXPECT_TRUE(testing::ReadFileBytes(catalog) == bad);
}

TEST(BackupCli, RefusalsAndUsage) {
  testing::TempDir dir;
  std::string disk = dir.File("disk.raw"), other = dir.File("other.raw"), repo = dir.File("repo");
  RunOk(S("generate --size 8M --seed 1 " + ShellQuote(disk)));
  RunOk(S("generate --size 4M --seed 1 " + ShellQuote(other)));
  auto norepo = RunCommand(S("backup --repo " + ShellQuote(repo) + " --full " + ShellQuote(disk)));
  EXPECT_EQ(norepo.exit_code, 1);
  EXPECT_NE(norepo.err.find("not a strata repository"), std::string::npos) << norepo.err;
  RunOk(S("init " + ShellQuote(repo)));
  EXPECT_EQ(RunCommand(S("init " + ShellQuote(repo))).exit_code, 1);  // already one
  auto noparent = RunCommand(S("backup --repo " + ShellQuote(repo) + " --scan " + ShellQuote(disk)));
  EXPECT_EQ(noparent.exit_code, 1);
  EXPECT_NE(noparent.err.find("--full"), std::string::npos) << noparent.err;
  RunOk(S("backup --repo " + ShellQuote(repo) + " --full " + ShellQuote(disk)));
  auto mismatch = RunCommand(S("backup --repo " + ShellQuote(repo) + " --scan " + ShellQuote(other)));
  EXPECT_EQ(mismatch.exit_code, 1);
  EXPECT_NE(mismatch.err.find("parent backup"), std::string::npos) << mismatch.err;
  EXPECT_EQ(Ids(repo).size(), 1u);
  EXPECT_EQ(RunCommand(S("backup --repo " + ShellQuote(repo) + " " + ShellQuote(disk))).exit_code, 2);
  EXPECT_EQ(RunCommand(S("backup --repo " + ShellQuote(repo) + " --full --scan " + ShellQuote(disk))).exit_code, 2);
  EXPECT_EQ(RunCommand(S("backup --repo " + ShellQuote(repo) + " --full --level 99 " + ShellQuote(disk))).exit_code, 2);
  EXPECT_EQ(RunCommand(S("restore --repo " + ShellQuote(repo) + " --backup zz " + dir.File("o"))).exit_code, 2);
  EXPECT_EQ(RunCommand(S("nosuchcommand")).exit_code, 2);
  auto help = RunCommand(S("backup --help"));
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("--since-snapshot"), std::string::npos);
}

TEST(BackupCli, KillDuringBackupLeavesRepositoryIntact) {
  testing::TempDir dir;
  std::mt19937_64 rng(testing::TestSeed());
  std::string disk = dir.File("disk.raw"), repo = dir.File("repo");
  RunOk(S("generate --size 256M --fill 0.6 --seed 9 " + ShellQuote(disk)));
  RunOk(S("init " + ShellQuote(repo)));
  RunOk(S("backup --repo " + ShellQuote(repo) + " --full --level 3 " + ShellQuote(disk)));
  auto before = testing::ReadFileBytes(repo + "/catalog");
  int killed = 0;
  for (int i = 0; i < 12; ++i) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      ::dup2(null, 2);
      std::string tool = testing::Tool("strata");
      ::execl(tool.c_str(), "strata", "backup", "--repo", repo.c_str(), "--full", "--level", "3",
              disk.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::usleep(static_cast<useconds_t>(rng() % 400000));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (WIFSIGNALED(status)) {
      ++killed;
      // The catalog is exactly as before or has gained one whole backup.
      auto now = testing::ReadFileBytes(repo + "/catalog");
      if (now != before) {
        EXPECT_EQ(Ids(repo).size(), 2u);
        RunOk(S("merge --repo " + ShellQuote(repo) + " --remove latest"));
      }
    }
    auto v = RunCommand(S("verify --repo " + ShellQuote(repo)));
    ASSERT_EQ(v.exit_code, 0) << "after kill " << i << ": " << v.err;
    EXPECT_EQ(Ids(repo).size(), 1u);
    // No partial archive is left visible once the repository is opened again.
    for (auto& e : std::filesystem::directory_iterator(repo + "/archives")) {
      EXPECT_EQ(e.path().string().find(".partial."), std::string::npos) << e.path();
    }
  }
  EXPECT_GT(killed, 0);
}

TEST(BackupCli, DemoRunsTheWholeJob) {
  auto r = RunCommand(S("demo --size 64M"));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("all points restored byte-identically"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("MISMATCH"), std::string::npos) << r.out;
}

TEST(BackupCli, TrackerSource) {
  testing::TempDir dir;
  std::string disk = dir.File("disk.raw"), repo = dir.File("repo"), trk = dir.File("trk");
  RunOk(S("generate --size 64M --fill 0.3 --seed 4 " + ShellQuote(disk)));
  RunOk(S("init " + ShellQuote(repo)));
  RunOk(S("tracker init --tracker " + ShellQuote(trk) + " --size 64M"));
  RunOk(S("checkpoint --tracker " + ShellQuote(trk) + " base"));
  RunOk(S("backup --repo " + ShellQuote(repo) + " --full " + ShellQuote(disk)));
  auto base_image = testing::ReadFileBytes(disk);
  RunOk(S("scribble --tracker " + ShellQuote(trk) + " --fraction 0.05 --seed 3 " + ShellQuote(disk)));
  auto r = RunCommand(S("backup --json --repo " + ShellQuote(repo) + " --tracker " + ShellQuote(trk) +
                        " --since base " + ShellQuote(disk)));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // 5% of the 1024 blocks of 64 KiB were rewritten: exactly those are read.
  EXPECT_NE(r.out.find("\"changed_bytes\": " + std::to_string(51 * 65536)), std::string::npos) << r.out;
  std::string out = dir.File("out.raw");
  RunOk(S("restore --repo " + ShellQuote(repo) + " " + ShellQuote(out)));
  EXPECT_TRUE(testing::ReadFileBytes(out) == testing::ReadFileBytes(disk));
  std::string first = dir.File("first.raw");
  RunOk(S("restore --repo " + ShellQuote(repo) + " --backup " + Ids(repo)[0] + " " + ShellQuote(first)));
  EXPECT_TRUE(testing::ReadFileBytes(first) == base_image);
  // A tracker of another disk size is refused.
  std::string other = dir.File("other");
  RunOk(S("tracker init --tracker " + ShellQuote(other) + " --size 32M"));
  RunOk(S("checkpoint --tracker " + ShellQuote(other) + " base"));
  auto bad = RunCommand(S("backup --repo " + ShellQuote(repo) + " --tracker " + ShellQuote(other) +
                          " --since base " + ShellQuote(disk)));
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_EQ(Ids(repo).size(), 2u);
}

TEST(BackupCli, Qcow2BitmapAndSnapshotSources) {
  if (!testing::HaveCommand("qemu-img") || !testing::HaveCommand("qemu-io")) {
    GTEST_SKIP() << "qemu-utils not installed";
  }
  testing::TempDir dir;
  std::string img = dir.File("vm.qcow2"), repo = dir.File("repo"), q = ShellQuote(img);
  RunOk("qemu-img create -q -f qcow2 " + q + " 64M");
  RunOk("qemu-io -c 'write -P 0x11 0 8M' -c 'write -P 0x12 40M 3M' " + q + " >/dev/null");
  RunOk("qemu-img bitmap --add --granularity 65536 " + q + " b0");
  RunOk(S("init " + ShellQuote(repo)));
  RunOk(S("backup --repo " + ShellQuote(repo) + " --full " + q));
  auto check = [&](const std::string& what) {
    std::string out = dir.File("out.raw");
    std::filesystem::remove(out);
    RunOk(S("restore --repo " + ShellQuote(repo) + " " + ShellQuote(out)));
    auto r = RunCommand("qemu-img compare -q -f raw -F qcow2 " + ShellQuote(out) + " " + q);
    EXPECT_EQ(r.exit_code, 0) << what << ": restored view differs from the qcow2 image " << r.out;
  };
  check("full");
  RunOk("qemu-io -c 'write -P 0x22 4M 1M' -c 'write -z 40M 512k' -c 'write -P 0x23 60M 64k' " + q +
        " >/dev/null");
  auto b = RunCommand(S("backup --json --repo " + ShellQuote(repo) + " --bitmap b0 " + q));
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_NE(b.out.find("\"changed_bytes\": " + std::to_string((1 << 20) + (512 << 10) + 65536)),
            std::string::npos) << b.out;
  check("bitmap");
  RunOk("qemu-img snapshot -c s1 " + q);
  RunOk("qemu-io -c 'write -P 0x33 10M 2M' -c 'discard 0 64k' " + q + " >/dev/null");
  auto sn = RunCommand(S("backup --json --repo " + ShellQuote(repo) + " --since-snapshot s1 " + q));
  ASSERT_EQ(sn.exit_code, 0) << sn.err;
  check("snapshot");
  RunOk(S("verify --repo " + ShellQuote(repo)));
  // A bitmap left in use by a killed writer needs a full backup (or --force).
  RunOk("qemu-io -c 'write -P 0x44 0 64k' -c 'sigraise 9' " + q + " >/dev/null 2>&1 || true");
  auto inuse = RunCommand(S("backup --repo " + ShellQuote(repo) + " --bitmap b0 " + q));
  EXPECT_EQ(inuse.exit_code, 1) << inuse.out;
  EXPECT_NE(inuse.err.find("full backup"), std::string::npos) << inuse.err;
}

}  // namespace
}  // namespace strata
