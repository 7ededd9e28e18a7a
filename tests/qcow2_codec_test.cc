// qcow2 codec pieces against naive models, and bitmap decoding of random bit
// patterns against both a naive model and QEMU's own export (qemu-nbd -B).
#include <gtest/gtest.h>

#include <random>
#include <regex>

#include "extents/endian.h"
#include "formats/qcow2/qcow2_format.h"
#include "strata/qcow2_image.h"
#include "tests/test_util.h"

namespace strata {
namespace {

using testing::RunOk;
using testing::ShellQuote;

TEST(Qcow2Codec, RefcountWidthsMatchNaiveModel) {
  std::mt19937_64 rng(testing::TestSeed());
  std::vector<uint8_t> block(512);
  for (auto& b : block) b = static_cast<uint8_t>(rng());
  for (uint32_t order = 0; order <= 6; ++order) {
    const uint32_t bits = 1u << order;
    const uint64_t n = 512 * 8 / bits;
    for (uint64_t i = 0; i < n; ++i) {
      // Naive: concatenate the entry's bits; sub-byte entries start at the
      // least significant bit, wider ones are big-endian.
      uint64_t want = 0;
      if (bits < 8) {
        for (uint32_t k = 0; k < bits; ++k) {
          uint64_t bit = i * bits + k;
          want |= uint64_t((block[bit / 8] >> (bit % 8)) & 1) << k;
        }
      } else {
        for (uint32_t k = 0; k < bits / 8; ++k) want = want << 8 | block[i * bits / 8 + k];
      }
      ASSERT_EQ(qcow2::RefcountAt(block, order, i), want) << "order " << order << " index " << i;
    }
  }
}

TEST(Qcow2Codec, CompressedDescriptorEveryClusterSize) {
  std::mt19937_64 rng(testing::TestSeed());
  for (uint32_t cb = 9; cb <= 21; ++cb) {
    qcow2::Header h;
    h.version = 3;
    h.cluster_bits = cb;
    const uint32_t shift = 62 - (cb - 8);
    const uint64_t max_sectors = uint64_t{1} << (cb - 8);
    for (int k = 0; k < 200; ++k) {
      uint64_t off = rng() & ((uint64_t{1} << std::min<uint32_t>(shift, 56)) - 1);
      uint64_t sectors = 1 + rng() % max_sectors;
      uint64_t e = qcow2::kL2Compressed | ((sectors - 1) << shift) | off;
      auto m = qcow2::DecodeL2(e, 0, 0, h, 0x10000, 3, "img");
      ASSERT_TRUE(m.has_value()) << m.error().ToString();
      EXPECT_EQ(m->kind, qcow2::ClusterKind::kCompressed);
      EXPECT_EQ(m->host_offset, off);
      EXPECT_EQ(m->compressed_size, sectors * 512 - (off & 511));
    }
    if (shift > 56) {  // offset bits 56.. must be zero
      auto bad = qcow2::DecodeL2(qcow2::kL2Compressed | (uint64_t{1} << 56), 0, 0, h, 0x10000, 3,
                                 "img");
      EXPECT_FALSE(bad.has_value());
    }
  }
}

// QEMU's export of `bitmap` as byte extents (see qcow2_test.cc).
std::vector<ByteExtent> QemuBitmap(const std::string& img, const std::string& bitmap) {
  std::string out = RunOk("nbdinfo --json --map=qemu:dirty-bitmap:" + bitmap +
                          " -- [ qemu-nbd -r -B " + ShellQuote(bitmap) + " -f qcow2 " +
                          ShellQuote(img) + " ]");
  std::vector<ByteExtent> v;
  std::regex re(R"re("offset": (\d+), "length": (\d+), "type": (\d+))re");
  for (auto it = std::sregex_iterator(out.begin(), out.end(), re); it != std::sregex_iterator();
       ++it) {
    if (std::stoi((*it)[3]) & 1) {
      ByteExtent e{std::stoull((*it)[1]), std::stoull((*it)[2])};
      if (!v.empty() && v.back().end() == e.offset) v.back().length += e.length;
      else v.push_back(e);
    }
  }
  return v;
}

TEST(Qcow2Codec, RandomBitmapDataMatchesNaiveModelAndQemu) {
  if (!testing::HaveCommand("qemu-img") || !testing::HaveCommand("nbdinfo")) {
    GTEST_SKIP() << "qemu-img / nbdinfo not installed";
  }
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("STRATA_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  testing::TempDir d;
  std::string p = d.File("r.qcow2");
  const uint64_t size = (4u << 20) + 1536;  // a partial last granule
  RunOk("qemu-img create -q -f qcow2 " + ShellQuote(p) + " " + std::to_string(size));
  for (uint32_t g : {512u, 4096u, 65536u}) {
    RunOk("qemu-img bitmap --add -g " + std::to_string(g) + " " + ShellQuote(p) + " g" +
          std::to_string(g));
  }
  RunOk("qemu-io -f qcow2 -c 'write 0 4k' -c 'write 3M 64k' " + ShellQuote(p) + " >/dev/null");
  std::vector<uint8_t> bytes = testing::ReadFileBytes(p);
  auto h = qcow2::ParseHeader(bytes, bytes.size(), p);
  ASSERT_TRUE(h.has_value());
  auto dir = qcow2::ParseBitmapDirectory(
      std::span<const uint8_t>(bytes).subspan(h->bitmaps.directory_offset,
                                              h->bitmaps.directory_size),
      *h, bytes.size(), p);
  ASSERT_TRUE(dir.has_value()) << dir.error().ToString();
  std::map<std::string, std::vector<bool>> naive;
  for (const auto& b : *dir) {
    ASSERT_EQ(b.table_size, 1u);
    uint64_t data = LoadBE64(bytes.data() + b.table_offset) & qcow2::kOffsetMask;
    ASSERT_NE(data, 0u);
    const uint64_t g = uint64_t{1} << b.granularity_bits;
    const uint64_t nbits = (size + g - 1) / g;
    std::vector<bool> bits(nbits);
    // Runs of random lengths, so both long runs and single bits occur.
    for (uint64_t i = 0; i < nbits;) {
      bool v = rng() & 1;
      uint64_t len = 1 + rng() % (rng() % 4 == 0 ? 300 : 5);
      for (uint64_t k = 0; k < len && i < nbits; ++k, ++i) bits[i] = v;
    }
    for (uint64_t i = 0; i < (nbits + 7) / 8; ++i) bytes[data + i] = 0;
    for (uint64_t i = 0; i < nbits; ++i) {
      if (bits[i]) bytes[data + i / 8] |= uint8_t(1u << (i % 8));
    }
    naive[b.name] = bits;
  }
  testing::WriteFileBytes(p, bytes);
  auto q = OpenQcow2Image(p);
  ASSERT_TRUE(q.has_value()) << q.error().ToString();
  for (const auto& [name, bits] : naive) {
    SCOPED_TRACE(name);
    auto set = (*q)->LoadBitmap(name);
    ASSERT_TRUE(set.has_value()) << set.error().ToString();
    const uint64_t g = std::stoull(name.substr(1));
    std::vector<ByteExtent> want;
    for (uint64_t i = 0; i < bits.size(); ++i) {
      if (!bits[i]) continue;
      uint64_t s = i * g, e = std::min(size, s + g);
      if (!want.empty() && want.back().end() == s) want.back().length += e - s;
      else want.push_back({s, e - s});
    }
    EXPECT_EQ(set->ToExtents(), want);
    EXPECT_EQ(set->ToExtents(), QemuBitmap(p, name));
  }
}

}  // namespace
}  // namespace strata
