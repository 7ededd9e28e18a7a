// Raw images: reads, the SEEK_DATA/SEEK_HOLE block-status map, and errors.
#include "formats/raw/raw_image.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <random>

#include "strata/open_image.h"
#include "tests/test_util.h"

namespace strata {
namespace {

// Writes `len` random bytes at `off` of `path` (creating it) and returns them.
std::vector<uint8_t> WriteRandom(const std::string& path, uint64_t off, size_t len,
                                 std::mt19937_64& rng) {
  std::vector<uint8_t> data(len);
  for (auto& b : data) b = static_cast<uint8_t>(rng() | 1);  // never all-zero
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT, 0644);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(::pwrite(fd, data.data(), len, static_cast<off_t>(off)), static_cast<ssize_t>(len));
  ::close(fd);
  return data;
}

std::vector<MapEntry> FullMap(Image& img) {
  std::vector<MapEntry> v;
  EXPECT_TRUE(MapImage(img, [&](const MapEntry& e) {
                v.push_back(e);
                return Status::Ok();
              }).ok());
  return v;
}

TEST(RawImage, SparseFileMapMatchesLayout) {
  testing::TempDir dir;
  std::string p = dir.File("disk.raw");
  std::mt19937_64 rng(testing::TestSeed());
  ASSERT_EQ(::truncate(p.c_str(), 0), -1);  // does not exist yet
  int fd = ::open(p.c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_EQ(::ftruncate(fd, 16 << 20), 0);
  ::close(fd);
  auto a = WriteRandom(p, 1 << 20, 128 << 10, rng);
  auto b = WriteRandom(p, 8 << 20, 4096, rng);
  auto img = OpenRawImage(p);
  ASSERT_TRUE(img.has_value()) << img.error().ToString();
  EXPECT_EQ((*img)->size(), uint64_t{16} << 20);
  EXPECT_EQ((*img)->format(), "raw");
  auto map = FullMap(**img);
  // hole, data, hole, data, hole; offsets equal starts; merged maximal.
  ASSERT_EQ(map.size(), 5u);
  const uint64_t expect[][3] = {{0, 1 << 20, 0}, {1 << 20, 128 << 10, 1},
                                {(1 << 20) + (128 << 10), (8 << 20) - (1 << 20) - (128 << 10), 0},
                                {8 << 20, 4096, 1}, {(8 << 20) + 4096, (8 << 20) - 4096, 0}};
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(map[i].start, expect[i][0]) << i;
    EXPECT_EQ(map[i].length, expect[i][1]) << i;
    EXPECT_EQ(map[i].data, expect[i][2] == 1) << i;
    EXPECT_EQ(map[i].zero, expect[i][2] == 0) << i;
    EXPECT_TRUE(map[i].present);
    EXPECT_TRUE(map[i].has_offset);
    EXPECT_EQ(map[i].offset, map[i].start);
  }
  std::vector<uint8_t> got(a.size());
  ASSERT_TRUE((*img)->Read(1 << 20, got).ok());
  EXPECT_EQ(got, a);
  std::vector<uint8_t> zeros(4096), hole(4096, 0xff);
  ASSERT_TRUE((*img)->Read(4 << 20, hole).ok());
  EXPECT_EQ(hole, zeros);
  // Allocated extents at 64 KiB granularity.
  auto set = AllocatedExtents(**img, Granularity::Default(), false);
  ASSERT_TRUE(set.has_value());
  EXPECT_EQ(set->ToExtents(),
            (std::vector<ByteExtent>{{1 << 20, 128 << 10}, {8 << 20, 64 << 10}}));
}

TEST(RawImage, SizeRoundsUpTo512LikeQemu) {
  testing::TempDir dir;
  std::string p = dir.File("odd.raw");
  std::mt19937_64 rng(1);
  auto d = WriteRandom(p, 0, 1000, rng);
  auto img = OpenRawImage(p);
  ASSERT_TRUE(img.has_value());
  EXPECT_EQ((*img)->size(), 1024u);
  std::vector<uint8_t> all(1024);
  ASSERT_TRUE((*img)->Read(0, all).ok());
  EXPECT_TRUE(std::equal(d.begin(), d.end(), all.begin()));
  EXPECT_EQ(all[1000], 0);
  EXPECT_EQ(all[1023], 0);
  auto map = FullMap(**img);
  ASSERT_EQ(map.size(), 2u);
  EXPECT_EQ(map[0].length, 1000u);
  EXPECT_TRUE(map[0].data);
  EXPECT_EQ(map[1].start, 1000u);
  EXPECT_EQ(map[1].length, 24u);
  EXPECT_TRUE(map[1].zero);
}

TEST(RawImage, ReadsPastTheEndAreRejected) {
  testing::TempDir dir;
  std::string p = dir.File("s.raw");
  std::mt19937_64 rng(2);
  WriteRandom(p, 0, 4096, rng);
  auto img = OpenRawImage(p);
  ASSERT_TRUE(img.has_value());
  std::vector<uint8_t> buf(10);
  Status s = (*img)->Read(4090, buf);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find(p), std::string::npos) << s.message();
  std::vector<MapEntry> out;
  EXPECT_FALSE((*img)->BlockStatus(0, 5000, &out).ok());
}

TEST(RawImage, InMemoryFileIsAllData) {
  auto mem = std::make_unique<MemFile>("mem");
  std::vector<uint8_t> d(3000, 7);
  ASSERT_TRUE(mem->Write(0, d).ok());
  auto img = OpenRawImage(std::move(mem));
  ASSERT_TRUE(img.has_value());
  auto map = FullMap(**img);
  ASSERT_EQ(map.size(), 2u);  // 3000 data bytes, then the 72-byte rounding tail
  EXPECT_TRUE(map[0].data);
  EXPECT_EQ(map[0].length, 3000u);
  EXPECT_TRUE(map[1].zero);
}

TEST(OpenImage, RejectsUnknownFormatAndMissingFiles) {
  auto r = OpenImage("/nonexistent.img", "vmdk");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
  auto m = OpenImage("/nonexistent.img");
  ASSERT_FALSE(m.has_value());
  EXPECT_NE(m.error().message().find("/nonexistent.img"), std::string::npos);
}

}  // namespace
}  // namespace strata
