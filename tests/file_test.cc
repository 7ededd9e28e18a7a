// The I/O seam: MemFile, FaultFile (injected failures, simulated crash) and
// atomic whole-file writes.
#include "strata/file.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

#include "tests/test_util.h"

namespace strata {
namespace {

std::vector<uint8_t> Vec(const std::string& s) { return {s.begin(), s.end()}; }

TEST(MemFile, ReadWriteAndShortReads) {
  MemFile f("m");
  ASSERT_TRUE(f.Write(4, Vec("abcd")).ok());
  EXPECT_EQ(*f.Size(), 8u);
  std::vector<uint8_t> buf(6);
  EXPECT_EQ(*f.Read(2, buf), 6u);
  EXPECT_EQ(buf, (std::vector<uint8_t>{0, 0, 'a', 'b', 'c', 'd'}));
  EXPECT_EQ(*f.Read(6, buf), 2u);
  Status s = f.ReadFull(6, buf);
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_NE(s.message().find("m: short read at 0x6"), std::string::npos) << s.message();
  ASSERT_TRUE(f.ReadZeroPadded(6, buf).ok());
  EXPECT_EQ(buf, (std::vector<uint8_t>{'c', 'd', 0, 0, 0, 0}));
}

TEST(FaultFile, FailsFromTheNthCall) {
  FaultFile f(std::make_unique<MemFile>("x"));
  f.FailFrom(3);
  EXPECT_TRUE(f.Write(0, Vec("1")).ok());
  EXPECT_TRUE(f.Write(1, Vec("2")).ok());
  Status s = f.Write(2, Vec("3"));
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_EQ(s.sys_errno(), 5);
  std::vector<uint8_t> b(1);
  EXPECT_FALSE(f.Read(0, b).has_value());
  f.FailFrom(0);
  EXPECT_TRUE(f.Read(0, b).has_value());
  FaultFile g(std::make_unique<MemFile>("y"));
  g.FailFrom(1, ENOSPC);
  EXPECT_EQ(g.Write(0, Vec("a")).code(), StatusCode::kNoSpace);
}

TEST(FaultFile, CrashDropsUnsyncedWrites) {
  auto mem = std::make_unique<MemFile>("c");
  MemFile* raw = mem.get();
  FaultFile f(std::move(mem));
  ASSERT_TRUE(f.Write(0, Vec("hello")).ok());
  ASSERT_TRUE(f.Sync().ok());
  ASSERT_TRUE(f.Write(1, Vec("EY")).ok());
  ASSERT_TRUE(f.Write(5, Vec(" world")).ok());
  ASSERT_TRUE(f.Truncate(3).ok());
  ASSERT_TRUE(f.Write(0, Vec("J")).ok());
  ASSERT_TRUE(f.Crash().ok());
  EXPECT_EQ(raw->contents(), Vec("hello"));
}

TEST(PosixFile, AtomicWriteReplacesWholeOrNothing) {
  testing::TempDir dir;
  std::string p = dir.File("state");
  ASSERT_TRUE(WriteFileAtomic(p, Vec("first")).ok());
  EXPECT_EQ(*ReadWholeFile(p), Vec("first"));
  ASSERT_TRUE(WriteFileAtomic(p, Vec("second!")).ok());
  EXPECT_EQ(*ReadWholeFile(p), Vec("second!"));
  // No temporaries are left behind.
  int n = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) { (void)e; ++n; }
  EXPECT_EQ(n, 1);
  // A failing write (target directory missing) leaves nothing and says why.
  Status s = WriteFileAtomic(dir.File("nodir/state"), Vec("x"));
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("nodir"), std::string::npos);
}

TEST(PosixFile, ErrorsNameTheFile) {
  auto r = OpenPosixFile("/nonexistent/strata-file", OpenMode::kReadOnly);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kNotFound);
  EXPECT_NE(r.error().message().find("/nonexistent/strata-file"), std::string::npos);
  testing::TempDir dir;
  auto d = OpenPosixFile(dir.path(), OpenMode::kReadOnly);
  ASSERT_FALSE(d.has_value());
  EXPECT_NE(d.error().message().find("is a directory"), std::string::npos);
  ASSERT_TRUE(WriteFileAtomic(dir.File("a"), Vec("x")).ok());
  auto ex = OpenPosixFile(dir.File("a"), OpenMode::kCreateExclusive);
  ASSERT_FALSE(ex.has_value());
  EXPECT_EQ(ex.error().code(), StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace strata
