// Serialisation of ExtentSet: round trips, and every corruption rejected.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "strata/checksum.h"
#include "extents/endian.h"
#include "strata/extent_set.h"
#include "tests/test_util.h"

namespace strata {
namespace {

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

ExtentSet RandomSet(std::mt19937_64& rng, uint64_t size, uint64_t gran, int n) {
  ExtentSet s = *ExtentSet::Create(size, gran);
  for (int i = 0; i < n; ++i) {
    uint64_t off = rng() % size;
    uint64_t len = 1 + rng() % std::min<uint64_t>(size - off, gran * 100);
    EXPECT_TRUE(s.Add(off, len).ok());
  }
  if (rng() % 2) s.Optimize();
  return s;
}

TEST(ExtentSetCodec, RoundTrip) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const uint64_t sizes[] = {0, 1, 10000384, uint64_t{1} << 40, (uint64_t{1} << 45) + 3};
  for (uint64_t size : sizes) {
    for (uint64_t gran : {512u, 65536u, 1u << 26}) {
      for (int rep = 0; rep < 5; ++rep) {
        ExtentSet s = size ? RandomSet(rng, size, gran, rep * 40) : *ExtentSet::Create(0, gran);
        std::string bytes = s.Serialize();
        auto back = ExtentSet::Deserialize(Bytes(bytes));
        ASSERT_TRUE(back.has_value()) << back.error().ToString();
        EXPECT_TRUE(*back == s);
        EXPECT_EQ(back->ToExtents(), s.ToExtents());
        EXPECT_EQ(back->Serialize(), bytes);  // deterministic
      }
    }
  }
}

TEST(ExtentSetCodec, EverySingleByteCorruptionAndTruncationIsRejected) {
  std::mt19937_64 rng(testing::TestSeed());
  // Two shards (512 B granularity across 2^32 blocks) so shard headers are covered.
  ExtentSet s = *ExtentSet::Create(uint64_t{1} << 42, 512);
  ASSERT_TRUE(s.Add(0, 1 << 20).ok());
  ASSERT_TRUE(s.Add((uint64_t{1} << 41) + 12345, 77777).ok());
  ASSERT_TRUE(s.Add(uint64_t{1} << 40, 512).ok());
  std::string good = s.Serialize();
  for (size_t i = 0; i < good.size(); ++i) {
    for (uint8_t flip : {uint8_t{0x01}, uint8_t{0x80}, uint8_t{0xff}}) {
      std::string bad = good;
      bad[i] = static_cast<char>(bad[i] ^ flip);
      auto r = ExtentSet::Deserialize(Bytes(bad));
      ASSERT_FALSE(r.has_value()) << "flip " << int(flip) << " at byte " << i << " accepted";
      ASSERT_NE(r.error().message().find("extent set"), std::string::npos);
    }
  }
  for (size_t n = 0; n < good.size(); ++n) {
    auto r = ExtentSet::Deserialize(Bytes(good.substr(0, n)));
    ASSERT_FALSE(r.has_value()) << "truncation to " << n << " bytes accepted";
  }
  auto extended = ExtentSet::Deserialize(Bytes(good + std::string(1, '\0')));
  EXPECT_FALSE(extended.has_value());
}

// A well-checksummed file whose content is inconsistent must still fail:
// rebuild the checksum after tampering with the structure.
std::string Reseal(std::string s) {
  std::string body = s.substr(0, s.size() - 8);
  uint8_t sum[8];
  StoreLE64(sum, Xxh3_64(body.data(), body.size()));
  return body + std::string(reinterpret_cast<char*>(sum), 8);
}

TEST(ExtentSetCodec, InconsistentContentWithValidChecksum) {
  ExtentSet s = *ExtentSet::Create(1 << 20, 4096);
  ASSERT_TRUE(s.Add(0, 1 << 20).ok());
  std::string good = s.Serialize();
  ASSERT_TRUE(ExtentSet::Deserialize(Bytes(Reseal(good))).has_value());
  {  // disk shrunk below the stored blocks: block index beyond the disk size
    std::string bad = good;
    StoreLE64(reinterpret_cast<uint8_t*>(bad.data()) + 24, 4096);
    auto r = ExtentSet::Deserialize(Bytes(Reseal(bad)));
    ASSERT_FALSE(r.has_value());
    EXPECT_NE(r.error().message().find("past the disk"), std::string::npos) << r.error().message();
  }
  {  // wrong block count
    std::string bad = good;
    StoreLE64(reinterpret_cast<uint8_t*>(bad.data()) + 32, 3);
    auto r = ExtentSet::Deserialize(Bytes(Reseal(bad)));
    ASSERT_FALSE(r.has_value());
    EXPECT_NE(r.error().message().find("block count"), std::string::npos);
  }
  {  // bad granularity
    std::string bad = good;
    bad[16] = 40;
    EXPECT_FALSE(ExtentSet::Deserialize(Bytes(Reseal(bad))).has_value());
  }
  {  // newer version: unsupported, not corruption
    std::string bad = good;
    bad[8] = 2;
    auto r = ExtentSet::Deserialize(Bytes(Reseal(bad)));
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code(), StatusCode::kUnsupported);
  }
  {  // garbage roaring payload
    std::string bad = good;
    for (size_t i = 56; i < bad.size() - 8; ++i) bad[i] = static_cast<char>(0xA5);
    EXPECT_FALSE(ExtentSet::Deserialize(Bytes(Reseal(bad))).has_value());
  }
}

}  // namespace
}  // namespace strata
