// CompareExtentMaps against a byte-by-byte model: thousands of random pairs
// of synthetic FIEMAP maps (shared and moved extents, holes, unwritten,
// doubtful flags, overlaps, unsorted input, extents past the end) must give
// exactly the blocks and the per-reason byte counts the model gives.
#include "formats/raw/extent_map_diff.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <random>
#include <sstream>

#include "tests/test_util.h"

namespace strata {
namespace {

using Map = std::vector<PhysicalExtent>;

// What one byte of a file is, by the rules in extent_map_diff.h.
struct ByteInfo {
  enum Kind { kZero, kMapped, kDoubt } kind = kZero;
  bool shared = false;
  uint64_t phys = 0;
};

std::vector<ByteInfo> ModelBytes(const Map& map, uint64_t size) {
  std::vector<ByteInfo> bytes(size);
  std::vector<int> cover(size, 0);
  for (const PhysicalExtent& e : map) {
    for (uint64_t b = e.logical; b < size && b - e.logical < e.length; ++b) {
      if (++cover[b] > 1) {
        bytes[b].kind = ByteInfo::kDoubt;
        continue;
      }
      ByteInfo& x = bytes[b];
      if (e.flags & ~kExtentTrustedFlags) {
        x.kind = ByteInfo::kDoubt;
      } else if (e.flags & kExtentUnwritten) {
        x.kind = ByteInfo::kZero;
      } else if (e.physical > std::numeric_limits<uint64_t>::max() - e.length) {
        x.kind = ByteInfo::kDoubt;
      } else {
        x.kind = ByteInfo::kMapped;
        x.shared = (e.flags & kExtentShared) != 0;
        x.phys = e.physical + (b - e.logical);
      }
    }
  }
  return bytes;
}

struct ModelResult {
  std::vector<bool> changed_blocks;
  ExtentMapDiffStats stats;
};

ModelResult Model(const Map& old_map, uint64_t old_size, const Map& new_map, uint64_t new_size,
                  uint64_t gran) {
  const uint64_t common = std::min(old_size, new_size), total = std::max(old_size, new_size);
  auto a = ModelBytes(old_map, common), b = ModelBytes(new_map, common);
  ModelResult r;
  r.changed_blocks.assign((total + gran - 1) / gran, false);
  r.stats.compared_bytes = common;
  r.stats.tail_bytes = total - common;
  for (uint64_t i = 0; i < total; ++i) {
    bool changed = true;
    if (i < common) {
      const ByteInfo& x = a[i];
      const ByteInfo& y = b[i];
      changed = true;
      if (x.kind == ByteInfo::kDoubt || y.kind == ByteInfo::kDoubt) {
        ++r.stats.doubtful_bytes;
      } else if (x.kind == ByteInfo::kZero && y.kind == ByteInfo::kZero) {
        ++r.stats.equal_bytes;
        changed = false;
      } else if (x.kind != y.kind) {
        ++r.stats.hole_bytes;
      } else if (x.phys != y.phys) {
        ++r.stats.moved_bytes;
      } else if (!x.shared || !y.shared) {
        ++r.stats.unshared_bytes;
      } else {
        ++r.stats.equal_bytes;
        changed = false;
      }
    }
    if (changed) r.changed_blocks[i / gran] = true;
  }
  return r;
}

std::string Describe(const Map& m, uint64_t size) {
  std::ostringstream os;
  os << "size " << size << ":";
  for (const auto& e : m) {
    os << " {" << e.logical << "+" << e.length << " @" << e.physical << " f=0x" << std::hex
       << e.flags << std::dec << "}";
  }
  return os.str();
}

// Random flags: mostly shared, sometimes not, unwritten, doubtful or unknown.
uint32_t RandomFlags(std::mt19937_64& rng) {
  switch (rng() % 12) {
    case 0: return 0;
    case 1: return kExtentUnwritten;
    case 2: return kExtentUnwritten | kExtentShared;
    case 3: return kExtentEncoded | kExtentShared;
    case 4: return kExtentDataInline | kExtentNotAligned;
    case 5: return kExtentDelalloc | kExtentUnknown;
    case 6: return kExtentShared | 0x00100000;  // a flag this code does not know
    case 7: return kExtentMerged | kExtentShared;
    default: return kExtentShared;
  }
}

Map RandomMap(std::mt19937_64& rng, uint64_t size, uint64_t unit) {
  Map m;
  uint64_t pos = 0;
  const uint64_t limit = size + size / 4 + unit;  // extents may run past the end
  while (pos < limit) {
    uint64_t gap = rng() % 3 == 0 ? unit * (rng() % 4) : 0;
    uint64_t len = unit * (1 + rng() % 8);
    PhysicalExtent e{pos + gap, unit * (rng() % 64) + (rng() % 5 == 0 ? 1 : 0), len,
                     RandomFlags(rng)};
    if (rng() % 50 == 0) e.physical = std::numeric_limits<uint64_t>::max() - rng() % 100;
    m.push_back(e);
    pos = e.logical + e.length;
  }
  return m;
}

// A later clone of the file `m` describes: most extents kept, some moved to
// new physical blocks, some punched, split or given other flags.
Map Mutate(const Map& m, std::mt19937_64& rng, uint64_t unit) {
  Map out;
  for (const PhysicalExtent& e : m) {
    switch (rng() % 10) {
      case 0:  // rewritten: new place, unshared
        out.push_back({e.logical, 1000000 + unit * (rng() % 64), e.length,
                       rng() % 2 ? 0u : kExtentShared});
        break;
      case 1:  // punched
        break;
      case 2: {  // split: the middle part rewritten
        uint64_t cut = e.length / 3, cut2 = 2 * e.length / 3;
        out.push_back({e.logical, e.physical, cut, e.flags});
        out.push_back({e.logical + cut, 2000000 + rng() % 4096, cut2 - cut, 0});
        out.push_back({e.logical + cut2, e.physical + cut2, e.length - cut2, e.flags});
        break;
      }
      case 3:
        out.push_back({e.logical, e.physical, e.length, RandomFlags(rng)});
        break;
      default:
        out.push_back(e);
    }
  }
  if (rng() % 8 == 0 && !out.empty()) {  // an overlapping extent
    PhysicalExtent x = out[rng() % out.size()];
    x.logical += x.length / 2;
    out.push_back(x);
  }
  if (rng() % 8 == 0 && !out.empty()) {  // an extent nested inside another
    PhysicalExtent x = out[rng() % out.size()];
    x.logical += x.length / 4;
    x.length = std::max<uint64_t>(1, x.length / 4);
    x.physical += 7;
    out.push_back(x);
  }
  if (rng() % 8 == 0) std::shuffle(out.begin(), out.end(), rng);
  if (rng() % 10 == 0 && !out.empty()) out.push_back({out.back().logical, 5, 0, 0});  // empty
  return out;
}

void CheckPair(const Map& old_map, uint64_t old_size, const Map& new_map, uint64_t new_size,
               uint64_t gran) {
  SCOPED_TRACE("old " + Describe(old_map, old_size) + "\nnew " + Describe(new_map, new_size) +
               "\ngranularity " + std::to_string(gran));
  ExtentMapDiffStats stats;
  auto got = CompareExtentMaps(old_map, old_size, new_map, new_size,
                               *Granularity::FromBytes(gran), &stats);
  ASSERT_TRUE(got.has_value()) << got.error().ToString();
  ModelResult want = Model(old_map, old_size, new_map, new_size, gran);
  ASSERT_EQ(got->disk_size(), std::max(old_size, new_size));
  for (uint64_t blk = 0; blk < want.changed_blocks.size(); ++blk) {
    ASSERT_EQ(got->Contains(blk * gran), want.changed_blocks[blk]) << "block " << blk;
  }
  EXPECT_EQ(got->BlockCount(),
            static_cast<uint64_t>(std::count(want.changed_blocks.begin(),
                                             want.changed_blocks.end(), true)));
  EXPECT_EQ(stats.compared_bytes, want.stats.compared_bytes);
  EXPECT_EQ(stats.equal_bytes, want.stats.equal_bytes);
  EXPECT_EQ(stats.doubtful_bytes, want.stats.doubtful_bytes);
  EXPECT_EQ(stats.unshared_bytes, want.stats.unshared_bytes);
  EXPECT_EQ(stats.moved_bytes, want.stats.moved_bytes);
  EXPECT_EQ(stats.hole_bytes, want.stats.hole_bytes);
  EXPECT_EQ(stats.tail_bytes, want.stats.tail_bytes);
}

// Whether CompareExtentMaps and the model agree on blocks and counts.
bool Agrees(const Map& old_map, uint64_t old_size, const Map& new_map, uint64_t new_size,
            uint64_t gran) {
  ExtentMapDiffStats st;
  auto got = CompareExtentMaps(old_map, old_size, new_map, new_size,
                               *Granularity::FromBytes(gran), &st);
  if (!got.has_value()) return false;
  ModelResult want = Model(old_map, old_size, new_map, new_size, gran);
  for (uint64_t blk = 0; blk < want.changed_blocks.size(); ++blk) {
    if (got->Contains(blk * gran) != want.changed_blocks[blk]) return false;
  }
  const ExtentMapDiffStats& w = want.stats;
  return got->BlockCount() == static_cast<uint64_t>(std::count(want.changed_blocks.begin(),
                                                               want.changed_blocks.end(), true)) &&
         st.equal_bytes == w.equal_bytes && st.doubtful_bytes == w.doubtful_bytes &&
         st.unshared_bytes == w.unshared_bytes && st.moved_bytes == w.moved_bytes &&
         st.hole_bytes == w.hole_bytes && st.tail_bytes == w.tail_bytes &&
         st.compared_bytes == w.compared_bytes;
}

// Drops extents one at a time while the disagreement remains.
void Shrink(Map* old_map, uint64_t old_size, Map* new_map, uint64_t new_size, uint64_t gran) {
  for (bool progress = true; progress;) {
    progress = false;
    for (Map* m : {old_map, new_map}) {
      for (size_t i = 0; i < m->size();) {
        Map trial = *m;
        trial.erase(trial.begin() + static_cast<ptrdiff_t>(i));
        Map saved = *m;
        *m = trial;
        if (!Agrees(*old_map, old_size, *new_map, new_size, gran)) {
          progress = true;
        } else {
          *m = saved;
          ++i;
        }
      }
    }
  }
}

TEST(ExtentMapDiff, MatchesByteModelOnRandomMaps) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("seed=" + std::to_string(seed) + " (rerun with STRATA_SEED)");
  std::printf("seed=%llu\n", static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 3000; ++trial) {
    const uint64_t units[] = {1, 512, 4096};
    const uint64_t unit = units[rng() % 3];
    const uint64_t grans[] = {512, 1024, 4096, 8192};
    const uint64_t gran = grans[rng() % 4];
    const uint64_t max_size = unit == 1 ? 300 : 40000;
    const uint64_t old_size = rng() % 6 == 0 ? 0 : rng() % max_size;
    uint64_t new_size = old_size;
    if (rng() % 3 == 0) new_size = rng() % max_size;
    Map old_map = RandomMap(rng, old_size, unit);
    Map new_map = rng() % 6 == 0 ? RandomMap(rng, new_size, unit) : Mutate(old_map, rng, unit);
    if (!Agrees(old_map, old_size, new_map, new_size, gran)) {
      Shrink(&old_map, old_size, &new_map, new_size, gran);
      ADD_FAILURE() << "trial " << trial << " disagrees with the model; shrunk case follows";
      CheckPair(old_map, old_size, new_map, new_size, gran);
      return;
    }
  }
}

// Regression cases (each also covered by the random test above).
TEST(ExtentMapDiff, IdenticalSharedMapsAreUnchanged) {
  Map m = {{0, 1 << 20, 65536, kExtentShared}, {131072, 2 << 20, 8192, kExtentShared | 1}};
  auto s = CompareExtentMaps(m, 200000, m, 200000, Granularity::Default());
  ASSERT_TRUE(s.has_value());
  EXPECT_TRUE(s->empty());
}

TEST(ExtentMapDiff, UnsharedOrEncodedIsChangedEvenAtTheSameAddress) {
  Map a = {{0, 4096, 4096, 0}, {4096, 8192, 4096, kExtentShared | kExtentEncoded}};
  auto s = CompareExtentMaps(a, 8192, a, 8192, *Granularity::FromBytes(4096));
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->BlockCount(), 2u);
}

TEST(ExtentMapDiff, HoleAndUnwrittenAreBothZeros) {
  Map a = {{0, 4096, 4096, kExtentUnwritten}};
  Map b = {};
  auto s = CompareExtentMaps(a, 8192, b, 8192, *Granularity::FromBytes(4096));
  ASSERT_TRUE(s.has_value());
  EXPECT_TRUE(s->empty());
  Map c = {{0, 4096, 4096, kExtentShared}};
  s = CompareExtentMaps(a, 8192, c, 8192, *Granularity::FromBytes(4096));
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->ToExtents(), (std::vector<ByteExtent>{{0, 4096}}));
}

TEST(ExtentMapDiff, SizeDifferenceIsAChangedTail) {
  Map a = {{0, 4096, 12288, kExtentShared}};
  ExtentMapDiffStats st;
  auto s = CompareExtentMaps(a, 5000, a, 12288, *Granularity::FromBytes(4096), &st);
  ASSERT_TRUE(s.has_value());
  // [5000, 12288) differs: blocks 1 and 2.
  EXPECT_EQ(s->ToExtents(), (std::vector<ByteExtent>{{4096, 8192}}));
  EXPECT_EQ(st.tail_bytes, 12288u - 5000u);
}

TEST(ExtentMapDiff, SameBytesAtDifferentOffsetsAreChanged) {
  // The new file maps [4096, 8192) to what the old one had at [0, 4096).
  Map a = {{0, 1 << 20, 8192, kExtentShared}};
  Map b = {{0, 1 << 20, 4096, kExtentShared}, {4096, 1 << 20, 4096, kExtentShared}};
  auto s = CompareExtentMaps(a, 8192, b, 8192, *Granularity::FromBytes(4096));
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->ToExtents(), (std::vector<ByteExtent>{{4096, 4096}}));
}

TEST(ExtentMapDiff, RejectsSizesPast2To63) {
  auto s = CompareExtentMaps({}, uint64_t{1} << 63 | 1, {}, 0, Granularity::Default());
  EXPECT_FALSE(s.has_value());
}

}  // namespace
}  // namespace strata
