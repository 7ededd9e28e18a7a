// Archives: round trips through the writer and reader, and every single-byte
// corruption or truncation detected.
#include <gtest/gtest.h>
#include <zstd.h>

#include <filesystem>
#include <random>

#include "strata/archive.h"
#include "engine/backup/archive_writer.h"
#include "strata/pipeline.h"
#include "tests/test_util.h"

namespace strata {
namespace {

std::vector<uint8_t> Compress(const std::vector<uint8_t>& raw) {
  std::vector<uint8_t> out(ZSTD_compressBound(raw.size()));
  size_t n = ZSTD_compress(out.data(), out.size(), raw.data(), raw.size(), 1);
  EXPECT_FALSE(ZSTD_isError(n));
  out.resize(n);
  return out;
}

// A small archive: two frames (one holding two extents), zero extents
// between; returns the guest bytes each data extent holds.
std::string WriteSample(const std::string& path, std::mt19937_64& rng,
                        std::vector<std::pair<ExtentRecord, std::vector<uint8_t>>>* truth, int nframes = 2) {
  ArchiveHeader h;
  h.id = NewArchiveId();
  h.disk_size = 1 << 20;
  h.granularity_shift = 12;
  h.chunk_size = 64 << 10;
  h.created_unix_ns = 123456789;
  h.source = SourceKind::kTracker;
  h.source_name = "cp-1";
  auto w = ArchiveWriter::Create(path, h);
  EXPECT_TRUE(w.has_value());
  uint64_t guest = 0;
  for (int f = 0; f < nframes; ++f) {
    std::vector<uint8_t> raw;
    std::vector<ExtentRecord> recs;
    for (int k = 0; k < 2; ++k) {
      std::vector<uint8_t> d(4096 * (1 + rng() % 3));
      for (size_t i = 0; i < d.size(); ++i) d[i] = static_cast<uint8_t>(i % 7 == 0 ? rng() : 'a' + i % 13);
      ExtentRecord r;
      r.guest_offset = guest;
      r.length = static_cast<uint32_t>(d.size());
      r.frame = 0;
      r.offset_in_frame = static_cast<uint32_t>(raw.size());
      r.hash = Xxh3_128(d.data(), d.size());
      raw.insert(raw.end(), d.begin(), d.end());
      recs.push_back(r);
      truth->push_back({r, d});
      guest += d.size() + 8192;
      ExtentRecord z;
      z.guest_offset = guest - 8192;
      z.length = 4096;
      recs.push_back(z);
    }
    auto c = Compress(raw);
    EXPECT_TRUE((*w)->Add(c, static_cast<uint32_t>(raw.size()), recs).ok());
  }
  EXPECT_TRUE((*w)->Finish().has_value());
  return IdToHex(h.id);
}

TEST(Archive, RoundTrip) {
  testing::TempDir dir;
  std::mt19937_64 rng(testing::TestSeed());
  std::vector<std::pair<ExtentRecord, std::vector<uint8_t>>> truth;
  std::string path = dir.File("a.sar");
  std::string id = WriteSample(path, rng, &truth);
  auto r = ArchiveReader::Open(path);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(IdToHex((*r)->header().id), id);
  EXPECT_EQ((*r)->header().source_name, "cp-1");
  EXPECT_EQ((*r)->header().created_unix_ns, 123456789u);
  EXPECT_EQ((*r)->index().frames.size(), 2u);
  EXPECT_EQ((*r)->index().extents.size(), 8u);  // 4 data + 4 zero
  ASSERT_TRUE(VerifyArchive(**r).ok());
  std::vector<uint8_t> raw;
  for (auto& [rec, bytes] : truth) {
    const ExtentRecord* found = nullptr;
    for (auto& e : (*r)->index().extents) {
      if (e.guest_offset == rec.guest_offset) found = &e;
    }
    ASSERT_NE(found, nullptr);
    ASSERT_TRUE((*r)->ReadFrame(found->frame, &raw, nullptr).ok());
    EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), raw.begin() + found->offset_in_frame));
  }
  auto cov = (*r)->Coverage();
  ASSERT_TRUE(cov.has_value());
  EXPECT_EQ(cov->ByteCount(), (*r)->logical_bytes());
  // No temporary file is left beside it.
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) { (void)e; ++files; }
  EXPECT_EQ(files, 1);
}

// An archive of many megabytes whose frames have odd compressed sizes: the
// writer's O_DIRECT path carries unaligned remainders between flushes and
// pads then truncates the last block; the file must read back exactly.
TEST(Archive, LargeArchiveWithOddFrameSizesReadsBack) {
  testing::TempDir dir;
  std::mt19937_64 rng(testing::TestSeed());
  ArchiveHeader h;
  h.id = NewArchiveId();
  h.disk_size = 64 << 20;
  h.granularity_shift = 9;
  h.chunk_size = 1 << 20;
  const std::string path = dir.File("big.sar");
  auto w = ArchiveWriter::Create(path, h);
  ASSERT_TRUE(w.has_value()) << w.error().ToString();
  std::vector<std::vector<uint8_t>> frames;
  uint64_t guest = 0;
  while (guest < (40u << 20)) {
    std::vector<uint8_t> raw(512 * (1 + rng() % 1024));
    for (auto& b : raw) b = static_cast<uint8_t>(rng() % 3 ? rng() : 0);
    ExtentRecord r;
    r.guest_offset = guest;
    r.length = static_cast<uint32_t>(raw.size());
    r.offset_in_frame = 0;
    r.hash = Xxh3_128(raw.data(), raw.size());
    ASSERT_TRUE((*w)->Add(Compress(raw), r.length, {&r, 1}).ok());
    guest += raw.size();
    frames.push_back(std::move(raw));
  }
  auto foot = (*w)->Finish();
  ASSERT_TRUE(foot.has_value()) << foot.error().ToString();
  EXPECT_EQ(std::filesystem::file_size(path), foot->index_offset + foot->index_size + kArchiveFooterSize);
  auto r = ArchiveReader::Open(path);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  ASSERT_EQ((*r)->index().frames.size(), frames.size());
  ASSERT_TRUE(VerifyArchive(**r).ok());
  std::vector<uint8_t> raw;
  for (uint32_t i = 0; i < frames.size(); ++i) {
    ASSERT_TRUE((*r)->ReadFrame(i, &raw, nullptr).ok());
    ASSERT_TRUE(raw == frames[i]) << "frame " << i;
  }
}

TEST(Archive, EverySingleByteCorruptionIsDetected) {
  testing::TempDir dir;
  std::mt19937_64 rng(testing::TestSeed());
  std::vector<std::pair<ExtentRecord, std::vector<uint8_t>>> truth;
  std::string path = dir.File("a.sar");
  WriteSample(path, rng, &truth);
  const std::vector<uint8_t> good = testing::ReadFileBytes(path);
  ASSERT_GT(good.size(), 200u);
  std::string bad_path = dir.File("bad.sar");
  for (size_t i = 0; i < good.size(); ++i) {
    std::vector<uint8_t> bad = good;
    bad[i] ^= static_cast<uint8_t>(1 + rng() % 255);
    testing::WriteFileBytes(bad_path, bad);
    auto r = ArchiveReader::Open(bad_path);
    if (!r.has_value()) {
      EXPECT_NE(r.error().message().find(bad_path), std::string::npos) << r.error().message();
      continue;
    }
    Status s = VerifyArchive(**r);
    ASSERT_FALSE(s.ok()) << "flip at byte " << i << " of " << good.size() << " went unnoticed";
    EXPECT_NE(s.message().find(bad_path), std::string::npos) << s.message();
  }
  for (size_t n = 0; n < good.size(); n += 7) {
    testing::WriteFileBytes(bad_path, {good.begin(), good.begin() + static_cast<long>(n)});
    auto r = ArchiveReader::Open(bad_path);
    ASSERT_FALSE(r.has_value()) << "truncation to " << n << " bytes accepted";
  }
}

// Verify decompresses frames on several threads; whatever the thread count
// and the timing, the error names the first damaged frame in file order.
TEST(Archive, VerifyNamesTheFirstBadFrameWithAnyThreadCount) {
  testing::TempDir dir;
  std::mt19937_64 rng(testing::TestSeed());
  std::vector<std::pair<ExtentRecord, std::vector<uint8_t>>> truth;
  std::string path = dir.File("a.sar");
  WriteSample(path, rng, &truth, 9);
  const std::vector<uint8_t> good = testing::ReadFileBytes(path);
  std::vector<FrameRecord> frames;
  {
    auto r = ArchiveReader::Open(path);
    ASSERT_TRUE(r.has_value()) << r.error().ToString();
    frames = (*r)->index().frames;
    for (unsigned t : {1u, 2u, 8u}) ASSERT_TRUE(VerifyArchive(**r, t).ok()) << t << " threads";
  }
  ASSERT_GE(frames.size(), 3u);
  std::string bad_path = dir.File("bad.sar");
  for (int trial = 0; trial < 40; ++trial) {
    std::vector<uint8_t> bad = good;
    size_t a = rng() % frames.size(), b = rng() % frames.size();
    for (size_t f : {a, b}) bad[frames[f].file_offset + rng() % frames[f].compressed_size] ^= 0x5a;
    testing::WriteFileBytes(bad_path, bad);
    auto r = ArchiveReader::Open(bad_path);
    ASSERT_TRUE(r.has_value()) << r.error().ToString();
    std::string want = "frame " + std::to_string(std::min(a, b)) + " ";
    for (unsigned t : {1u, 2u, 3u, 8u}) {
      Status s = VerifyArchive(**r, t);
      ASSERT_FALSE(s.ok()) << t << " threads, frames " << a << " and " << b;
      EXPECT_NE(s.message().find(want), std::string::npos) << t << " threads: " << s.message();
    }
  }
}

TEST(Archive, WriterRejectsDisorderAndAbandonsCleanly) {
  testing::TempDir dir;
  ArchiveHeader h;
  h.id = NewArchiveId();
  h.disk_size = 1 << 20;
  h.granularity_shift = 12;
  h.chunk_size = 1 << 16;
  std::string path = dir.File("x.sar");
  {
    auto w = ArchiveWriter::Create(path, h);
    ASSERT_TRUE(w.has_value());
    ExtentRecord z;
    z.guest_offset = 8192;
    z.length = 4096;
    ASSERT_TRUE((*w)->Add({}, 0, std::span<const ExtentRecord>(&z, 1)).ok());
    z.guest_offset = 0;  // going backwards
    EXPECT_EQ((*w)->Add({}, 0, std::span<const ExtentRecord>(&z, 1)).code(),
              StatusCode::kInvalidArgument);
    z.guest_offset = (1 << 20) - 100;  // past the disk
    z.length = 4096;
    EXPECT_FALSE((*w)->Add({}, 0, std::span<const ExtentRecord>(&z, 1)).ok());
    // Destroyed without Finish: nothing appears.
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(Archive, IdsRoundTripAndReject) {
  ArchiveId id = NewArchiveId();
  auto back = IdFromHex(IdToHex(id));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, id);
  EXPECT_FALSE(IdFromHex("xyz").has_value());
  EXPECT_FALSE(IdFromHex(std::string(32, 'g')).has_value());
  EXPECT_NE(NewArchiveId(), id);
}

}  // namespace
}  // namespace strata
