// `strata backup --reflink` on loop-mounted XFS and btrfs the test makes
// itself (issue 18): randomized histories of writes, hole punches, fallocate
// and overwrites with reflink backups in between, every backup restored and
// compared with the model; the change set covers every written byte (its
// over-report is printed); a writer that keeps writing during the backup;
// refusals (no reflink support, a clone removed or modified).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/loop_fs.h"
#include "tests/test_util.h"

namespace strata {
namespace {

using Json = nlohmann::json;
using testing::RunCommand;
using testing::RunOk;
using testing::ShellQuote;

std::string S(const std::string& args) { return testing::Tool("strata") + " " + args; }

Json Backup(const std::string& args) {
  auto r = RunCommand(S("backup --json " + args));
  EXPECT_EQ(r.exit_code, 0) << args << ": " << r.err;
  Json j = Json::parse(r.out, nullptr, false);
  return j.is_discarded() ? Json() : j;
}

std::vector<uint8_t> Restore(const std::string& repo, const std::string& id, const std::string& out) {
  std::filesystem::remove(out);
  RunOk(S("restore --repo " + ShellQuote(repo) + " --backup " + id + " " + ShellQuote(out)));
  auto b = testing::ReadFileBytes(out);
  std::filesystem::remove(out);
  return b;
}

// Random writes of the kinds a VM disk sees; `written` receives every byte
// range touched.
void Mutate(const std::string& path, std::vector<uint8_t>* model, std::mt19937_64& rng,
            std::vector<std::pair<uint64_t, uint64_t>>* written) {
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  const uint64_t size = model->size();
  for (int i = 0, n = 1 + static_cast<int>(rng() % 8); i < n; ++i) {
    int kind = static_cast<int>(rng() % 5);
    uint64_t len = 1 + rng() % (kind == 0 ? 4096 : (512 << 10));
    uint64_t off = rng() % (size - len);
    if (kind <= 2) {  // data (unaligned, aligned, overwrite of a hot block)
      if (kind == 1) off &= ~uint64_t{4095};
      if (kind == 2) off = 8192;
      std::vector<uint8_t> buf(len);
      for (auto& b : buf) b = static_cast<uint8_t>(rng());
      ASSERT_EQ(::pwrite(fd, buf.data(), len, static_cast<off_t>(off)), static_cast<ssize_t>(len));
      std::copy(buf.begin(), buf.end(), model->begin() + static_cast<long>(off));
    } else if (kind == 3) {  // hole punch
      ASSERT_EQ(::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off),
                            static_cast<off_t>(len)), 0);
      std::fill(model->begin() + static_cast<long>(off), model->begin() + static_cast<long>(off + len), 0);
    } else {  // preallocation: reads as zeros where it was a hole, keeps data elsewhere
      ASSERT_EQ(::fallocate(fd, FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off), static_cast<off_t>(len)), 0);
      continue;  // changes no byte
    }
    written->push_back({off, len});
  }
  ::close(fd);
}

void History(testing::LoopFs& fs, const char* what, uint64_t seed) {
  SCOPED_TRACE(std::string(what) + " seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::string disk = fs.mnt() + "/disk.raw", repo = fs.mnt() + "/../" + std::string(what) + "-repo";
  std::vector<uint8_t> model(16 << 20, 0);
  for (size_t i = 0; i < model.size(); i += 65536) {
    if (rng() % 3 == 0) std::fill(model.begin() + static_cast<long>(i), model.begin() + static_cast<long>(i + 65536), 'a' + rng() % 26);
  }
  testing::WriteFileBytes(disk, model);
  RunOk(S("init " + ShellQuote(repo)));
  std::string R = " --repo " + ShellQuote(repo) + " ";
  std::vector<std::pair<std::string, std::vector<uint8_t>>> points;
  Json full = Backup(R + "--full --reflink " + ShellQuote(disk));
  ASSERT_EQ(full["end"]["kind"], "reflink-clone") << full;
  points.push_back({full["id"], model});
  uint64_t needed = 0, reported = 0;
  for (int round = 0; round < 8; ++round) {
    std::vector<std::pair<uint64_t, uint64_t>> written;
    Mutate(disk, &model, rng, &written);
    Json inc = Backup(R + "--reflink " + ShellQuote(disk));
    ASSERT_FALSE(inc.is_null());
    EXPECT_EQ(inc["parent"], points.back().first);
    points.push_back({inc["id"], model});
    // Over-report: changed bytes against the 64 KiB blocks the writes touched.
    std::vector<bool> touched(model.size() / 65536 + 1);
    for (auto& [o, l] : written) {
      for (uint64_t b = o / 65536; b <= (o + l - 1) / 65536; ++b) touched[b] = true;
    }
    for (bool t : touched) needed += t ? 65536 : 0;
    reported += inc["changed_bytes"].get<uint64_t>();
    // Only the newest clone is kept.
    size_t clones = 0;
    for (auto& e : std::filesystem::directory_iterator(fs.mnt() + "/.strata-snapshots")) clones += e.is_regular_file();
    EXPECT_EQ(clones, 1u);
  }
  for (auto& [id, bytes] : points) {
    EXPECT_TRUE(Restore(repo, id, fs.mnt() + "/out.raw") == bytes) << "backup " << id;
  }
  std::printf("%s: %zu reflink backups restored; change sets %.2fx the 64 KiB blocks writes and punches touched (a touch "
              "that leaves bytes as they were need not be reported)\n", what, points.size(),
              needed ? static_cast<double>(reported) / static_cast<double>(needed) : 0.0);
  RunOk(S("verify" + R));
}

TEST(ReflinkBackup, XfsHistoriesRestoreEveryPoint) {
  testing::TempDir dir;
  std::unique_ptr<testing::LoopFs> fs(testing::MakeXfs(dir));
  if (!fs->skip().empty()) GTEST_SKIP() << fs->skip();
  History(*fs, "xfs", testing::TestSeed());
}

TEST(ReflinkBackup, BtrfsHistoriesRestoreEveryPoint) {
  testing::TempDir dir;
  std::unique_ptr<testing::LoopFs> fs(testing::MakeBtrfs(dir, ""));
  if (!fs->skip().empty()) GTEST_SKIP() << fs->skip();
  History(*fs, "btrfs", testing::TestSeed());
}

TEST(ReflinkBackup, BtrfsCompressedHistoriesRestoreEveryPoint) {
  testing::TempDir dir;
  std::unique_ptr<testing::LoopFs> fs(testing::MakeBtrfs(dir, "compress=zstd"));
  if (!fs->skip().empty()) GTEST_SKIP() << fs->skip();
  History(*fs, "btrfs-zstd", testing::TestSeed() + 1);
}

// A writer keeps writing during the backup: the backup equals the clone (a
// point in time), and the next incremental carries the later writes.
TEST(ReflinkBackup, WriterDuringTheBackup) {
  testing::TempDir dir;
  std::unique_ptr<testing::LoopFs> fs(testing::MakeXfs(dir));
  if (!fs->skip().empty()) GTEST_SKIP() << fs->skip();
  const std::string disk = fs->mnt() + "/disk.raw", repo = dir.File("repo");
  std::string R = " --repo " + ShellQuote(repo) + " ";
  RunOk(S("generate --size 128M --fill 0.5 --seed 4 " + ShellQuote(disk)));
  RunOk(S("init " + ShellQuote(repo)));
  Backup(R + "--full --reflink " + ShellQuote(disk));
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    int fd = ::open(disk.c_str(), O_RDWR);
    std::mt19937_64 rng(7);
    std::vector<uint8_t> buf(65536);
    while (!stop) {
      for (auto& b : buf) b = static_cast<uint8_t>(rng());
      (void)::pwrite(fd, buf.data(), buf.size(), static_cast<off_t>((rng() % 2048) * 65536));
      ::fsync(fd);
    }
    ::close(fd);
  });
  ::usleep(50000);
  Json inc = Backup(R + "--reflink " + ShellQuote(disk));
  const std::string clone = inc["end"]["name"];
  auto at_clone = testing::ReadFileBytes(clone);
  stop = true;
  writer.join();
  EXPECT_TRUE(Restore(repo, inc["id"], dir.File("o.raw")) == at_clone) << "the backup is not the clone's point in time";
  Json next = Backup(R + "--reflink " + ShellQuote(disk));
  EXPECT_TRUE(Restore(repo, next["id"], dir.File("o.raw")) == testing::ReadFileBytes(disk));
}

TEST(ReflinkBackup, RefusesWhatItCannotProve) {
  testing::TempDir dir;
  std::unique_ptr<testing::LoopFs> fs(testing::MakeXfs(dir));
  if (!fs->skip().empty()) GTEST_SKIP() << fs->skip();
  const std::string disk = fs->mnt() + "/disk.raw", repo = dir.File("repo");
  std::string R = " --repo " + ShellQuote(repo) + " ";
  RunOk(S("generate --size 8M --fill 0.5 --seed 2 " + ShellQuote(disk)));
  RunOk(S("init " + ShellQuote(repo)));
  // No parent at a clone yet.
  auto none = RunCommand(S("backup" + R + "--reflink " + ShellQuote(disk)));
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.err.find("--scan --reflink"), std::string::npos) << none.err;
  Json full = Backup(R + "--full --reflink " + ShellQuote(disk));
  const std::string clone = full["end"]["name"];
  // A modified clone.
  {
    int fd = ::open(clone.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "x", 1, 0), 1);
    ::close(fd);
  }
  auto modified = RunCommand(S("backup" + R + "--reflink " + ShellQuote(disk)));
  EXPECT_EQ(modified.exit_code, 1);
  EXPECT_NE(modified.err.find("modified"), std::string::npos) << modified.err;
  // A removed clone.
  std::filesystem::remove(clone);
  auto gone = RunCommand(S("backup" + R + "--reflink " + ShellQuote(disk)));
  EXPECT_EQ(gone.exit_code, 1);
  EXPECT_NE(gone.err.find("gone"), std::string::npos) << gone.err;
  // --scan --reflink starts the chain again.
  Backup(R + "--scan --reflink " + ShellQuote(disk));
  Json inc = Backup(R + "--reflink " + ShellQuote(disk));
  EXPECT_TRUE(Restore(repo, inc["id"], dir.File("o.raw")) == testing::ReadFileBytes(disk));
  // A file system without reflinks: a clear error.
  testing::LoopFs ext4(dir.path(), "ext4", "mkfs.ext4 -q -F", "");
  if (ext4.skip().empty()) {
    const std::string d2 = ext4.mnt() + "/disk.raw";
    RunOk(S("generate --size 4M --seed 3 " + ShellQuote(d2)));
    auto r = RunCommand(S("backup" + R + "--full --reflink " + ShellQuote(d2)));
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("reflink"), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace strata
