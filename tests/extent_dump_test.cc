// extent-dump as users run it: its JSON must equal `qemu-img map
// --output=json` byte for byte on raw images; --set prints extent sets;
// errors are one line with exit status 1 (2 for usage).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <random>

#include "strata/extent_set.h"
#include "tests/test_util.h"

namespace strata {
namespace {

using testing::RunCommand;
using testing::ShellQuote;
using testing::Tool;

std::string Dump(const std::string& args) { return Tool("extent-dump") + " " + args; }

// A sparse raw image of `size` bytes with random data runs.
void MakeSparse(const std::string& path, uint64_t size, std::mt19937_64& rng, int runs) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0);
  std::vector<uint8_t> buf;
  for (int i = 0; i < runs; ++i) {
    uint64_t off = (rng() % size) & ~uint64_t{4095};
    size_t len = std::min<uint64_t>(size - off, 4096 * (1 + rng() % 64));
    buf.assign(len, static_cast<uint8_t>(1 + rng() % 255));
    ASSERT_EQ(::pwrite(fd, buf.data(), len, static_cast<off_t>(off)), static_cast<ssize_t>(len));
  }
  ::close(fd);
}

TEST(ExtentDump, JsonEqualsQemuImgMapOnRawImages) {
  if (!testing::HaveCommand("qemu-img")) GTEST_SKIP() << "qemu-img not installed";
  testing::TempDir dir;
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const uint64_t sizes[] = {1 << 20, (64 << 20) + 12345, uint64_t{1} << 32, 1000};
  int n = 0;
  for (uint64_t size : sizes) {
    for (int rep = 0; rep < 3; ++rep) {
      std::string img = dir.File("img" + std::to_string(n++) + ".raw");
      MakeSparse(img, size, rng, rep * 10);
      std::string ours = testing::RunOk(Dump("--output json " + ShellQuote(img)));
      std::string qemu =
          testing::RunOk("qemu-img map -f raw --output=json " + ShellQuote(img));
      ASSERT_FALSE(qemu.empty());
      EXPECT_EQ(ours, qemu) << "image " << img << " size " << size;
    }
  }
}

TEST(ExtentDump, HumanOutputHasTableAndSummary) {
  testing::TempDir dir;
  std::string img = dir.File("h.raw");
  std::mt19937_64 rng(7);
  MakeSparse(img, 8 << 20, rng, 0);
  int fd = ::open(img.c_str(), O_WRONLY);
  std::vector<uint8_t> d(65536, 1);
  ASSERT_EQ(::pwrite(fd, d.data(), d.size(), 1 << 20), 65536);
  ::close(fd);
  auto r = RunCommand(Dump(ShellQuote(img)));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("raw image, virtual size 8 MiB"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("0x100000"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("data 64 KiB in 1 runs"), std::string::npos) << r.out;
}

TEST(ExtentDump, PrintsSerialisedSets) {
  testing::TempDir dir;
  ExtentSet s = *ExtentSet::Create(10000384, 65536);
  ASSERT_TRUE(s.Add(0, 1).ok());
  ASSERT_TRUE(s.Add(10000000, 384).ok());
  std::string bytes = s.Serialize();
  std::string path = dir.File("set.xs");
  testing::WriteFileBytes(path, {bytes.begin(), bytes.end()});
  auto r = RunCommand(Dump("--set " + ShellQuote(path) + " --output json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[{\"start\": 0, \"length\": 65536},\n{\"start\": 9961472, \"length\": 38912}]\n");
  auto h = RunCommand(Dump("--set " + ShellQuote(path)));
  ASSERT_EQ(h.exit_code, 0);
  EXPECT_NE(h.out.find("102 KiB in 2 runs"), std::string::npos) << h.out;
  // A corrupted set: exit 1, one line naming the file.
  bytes[20] ^= 1;
  testing::WriteFileBytes(path, {bytes.begin(), bytes.end()});
  auto bad = RunCommand(Dump("--set " + ShellQuote(path)));
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find(path), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("checksum"), std::string::npos) << bad.err;
  EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad.err;
}

TEST(ExtentDump, ErrorsAndUsage) {
  auto missing = RunCommand(Dump("/nonexistent/disk.img"));
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("/nonexistent/disk.img"), std::string::npos);
  EXPECT_EQ(RunCommand(Dump("")).exit_code, 2);
  EXPECT_EQ(RunCommand(Dump("--no-such-flag x")).exit_code, 2);
  EXPECT_EQ(RunCommand(Dump("--output xml x")).exit_code, 2);
  EXPECT_EQ(RunCommand(Dump("a b")).exit_code, 2);
  auto help = RunCommand(Dump("--help"));
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("Usage: extent-dump"), std::string::npos);
}

}  // namespace
}  // namespace strata
