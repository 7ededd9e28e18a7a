// ExtentSet against a naive std::vector<bool> model, plus edge cases.
#include "strata/extent_set.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "tests/test_util.h"

namespace strata {
namespace {

// A naive model: one bool per block, but only inside a few windows of the
// disk, so disks with more than 2^32 blocks can be modelled too. Random
// operations stay inside one window at a time.
class Model {
 public:
  Model(uint64_t disk_size, Granularity g) : size_(disk_size), g_(g) {
    uint64_t blocks = g.BlocksFor(disk_size);
    auto add_window = [&](uint64_t first, uint64_t count) {
      if (blocks == 0) return;
      first = std::min(first, blocks - 1);
      count = std::min(count, blocks - first);
      for (auto& w : windows_) {  // merge overlaps into one window
        if (first < w.first + w.count && w.first < first + count) {
          uint64_t lo = std::min(w.first, first), hi = std::max(w.first + w.count, first + count);
          w = {lo, hi - lo};
          return;
        }
      }
      windows_.push_back({first, count});
    };
    add_window(0, 3000);
    if (blocks > (uint64_t{1} << 32) + 1500) add_window((uint64_t{1} << 32) - 1500, 3000);
    add_window(blocks > 3000 ? blocks - 3000 : 0, 3000);
    std::sort(windows_.begin(), windows_.end(),
              [](const BlockRange& a, const BlockRange& b) { return a.first < b.first; });
    for (size_t i = 1; i < windows_.size(); ++i) {  // sorted windows must not overlap
      if (windows_[i].first < windows_[i - 1].end()) {
        uint64_t end = std::max(windows_[i].end(), windows_[i - 1].end());
        windows_[i - 1].count = end - windows_[i - 1].first;
        windows_.erase(windows_.begin() + static_cast<long>(i));
        --i;
      }
    }
    uint64_t total = 0;
    for (auto& w : windows_) total += w.count;
    bits_.assign(total, false);
  }

  const std::vector<BlockRange>& windows() const { return windows_; }
  size_t Index(uint64_t block) const {
    size_t base = 0;
    for (auto& w : windows_) {
      if (block >= w.first && block < w.end()) return base + (block - w.first);
      base += w.count;
    }
    ADD_FAILURE() << "block outside model windows: " << block;
    return 0;
  }
  void Set(uint64_t first, uint64_t count, bool v) {
    for (uint64_t b = first; b < first + count; ++b) bits_[Index(b)] = v;
  }
  bool Get(uint64_t b) const { return bits_[Index(b)]; }
  uint64_t Count() const { return std::count(bits_.begin(), bits_.end(), true); }
  // Maximal byte runs, clipped to the disk size.
  std::vector<ByteExtent> Runs() const {
    std::vector<ByteExtent> out;
    for (auto& w : windows_) {
      for (uint64_t b = w.first; b < w.end(); ++b) {
        if (!Get(b)) continue;
        uint64_t start = g_.OffsetOf(b), end = std::min(size_, g_.OffsetOf(b + 1));
        if (!out.empty() && out.back().end() == start) {
          out.back().length = end - out.back().offset;
        } else {
          out.push_back({start, end - start});
        }
      }
    }
    return out;
  }
  uint64_t Bytes() const {
    uint64_t n = 0;
    for (auto& r : Runs()) n += r.length;
    return n;
  }
  void Apply(const Model& o, int op) {
    for (size_t i = 0; i < bits_.size(); ++i) {
      bool a = bits_[i], b = o.bits_[i];
      bits_[i] = op == 0 ? (a || b) : op == 1 ? (a && b) : op == 2 ? (a && !b) : (a != b);
    }
  }

 private:
  uint64_t size_;
  Granularity g_;
  std::vector<BlockRange> windows_;
  std::vector<bool> bits_;
};

struct Pair {
  ExtentSet set;
  Model model;
};

// A random byte range inside one model window.
ByteExtent RandomRange(std::mt19937_64& rng, const Model& m, const ExtentSet& s) {
  const auto& ws = m.windows();
  const BlockRange& w = ws[rng() % ws.size()];
  const Granularity g = s.granularity();
  uint64_t lo = g.OffsetOf(w.first);
  uint64_t hi = std::min(s.disk_size(), g.OffsetOf(w.end()));
  uint64_t a = lo + rng() % (hi - lo);
  uint64_t max_len = hi - a;
  uint64_t len;
  switch (rng() % 4) {
    case 0: len = 1 + rng() % std::min<uint64_t>(max_len, 4096); break;      // small
    case 1: len = 1 + rng() % std::min<uint64_t>(max_len, g.bytes() * 64); break;
    case 2: len = max_len; break;                                             // to window end
    default: len = 1 + rng() % max_len; break;
  }
  return {a, len};
}

void ExpectSame(const ExtentSet& s, const Model& m, const std::string& where) {
  ASSERT_EQ(s.BlockCount(), m.Count()) << where;
  ASSERT_EQ(s.ToExtents(), m.Runs()) << where;
  ASSERT_EQ(s.ByteCount(), m.Bytes()) << where;
  ASSERT_EQ(s.empty(), m.Count() == 0) << where;
}

void RunProperty(uint64_t disk_size, uint64_t gran_bytes, uint64_t seed, int steps) {
  SCOPED_TRACE("seed=" + std::to_string(seed) + " disk=" + std::to_string(disk_size) +
               " granularity=" + std::to_string(gran_bytes) + " (replay: STRATA_SEED=" +
               std::to_string(seed) + ")");
  std::mt19937_64 rng(seed);
  Granularity g = *Granularity::FromBytes(gran_bytes);
  Pair a{*ExtentSet::Create(disk_size, g), Model(disk_size, g)};
  for (int step = 0; step < steps; ++step) {
    std::string where = "step " + std::to_string(step);
    int op = static_cast<int>(rng() % 10);
    if (op <= 3) {
      ByteExtent r = RandomRange(rng, a.model, a.set);
      ASSERT_TRUE(a.set.Add(r.offset, r.length).ok()) << where;
      BlockRange br = g.Cover(r);
      a.model.Set(br.first, br.count, true);
    } else if (op <= 5) {
      ByteExtent r = RandomRange(rng, a.model, a.set);
      ASSERT_TRUE(a.set.Remove(r.offset, r.length).ok()) << where;
      BlockRange br = g.Cover(r);
      a.model.Set(br.first, br.count, false);
    } else if (op <= 8) {
      // Build a second random set and combine.
      Pair b{*ExtentSet::Create(disk_size, g), Model(disk_size, g)};
      int n = 1 + static_cast<int>(rng() % 8);
      for (int i = 0; i < n; ++i) {
        ByteExtent r = RandomRange(rng, b.model, b.set);
        ASSERT_TRUE(b.set.Add(r.offset, r.length).ok());
        BlockRange br = g.Cover(r);
        b.model.Set(br.first, br.count, true);
      }
      int which = static_cast<int>(rng() % 4);
      if (rng() % 2) {  // in place
        Status s = which == 0   ? a.set.UnionWith(b.set)
                   : which == 1 ? a.set.IntersectWith(b.set)
                   : which == 2 ? a.set.Subtract(b.set)
                                : a.set.SymmetricDifferenceWith(b.set);
        ASSERT_TRUE(s.ok()) << where;
      } else {  // as new sets
        auto r = which == 0   ? ExtentSet::Union(a.set, b.set)
                 : which == 1 ? ExtentSet::Intersection(a.set, b.set)
                 : which == 2 ? ExtentSet::Difference(a.set, b.set)
                              : ExtentSet::SymmetricDifference(a.set, b.set);
        ASSERT_TRUE(r.has_value()) << where;
        a.set = std::move(*r);
      }
      a.model.Apply(b.model, which);
      where += " op " + std::to_string(which);
    } else {
      // Point and range queries against the model.
      ByteExtent r = RandomRange(rng, a.model, a.set);
      BlockRange br = g.Cover(r);
      bool all = true, any = false;
      for (uint64_t b = br.first; b < br.end(); ++b) {
        all &= a.model.Get(b);
        any |= a.model.Get(b);
      }
      ASSERT_EQ(a.set.ContainsRange(r.offset, r.length), all) << where;
      ASSERT_EQ(a.set.Intersects(r.offset, r.length), any) << where;
      ASSERT_EQ(a.set.Contains(r.offset), a.model.Get(br.first)) << where;
    }
    ExpectSame(a.set, a.model, where);
    if (step % 16 == 0) {
      ExtentSet copy = a.set;
      copy.Optimize();
      ASSERT_TRUE(copy == a.set) << where;
    }
  }
}

TEST(ExtentSetProperty, RandomOperationsMatchModel) {
  const uint64_t base = testing::TestSeed();
  struct Geo { uint64_t size, gran; };
  const Geo geos[] = {
      {10 * 1024 * 1024, 64 * 1024},              // small, exact multiple
      {10000384, 64 * 1024},                      // partial last block
      {1000, 512},                                // smaller than one granule... plus tail
      {(uint64_t{1} << 41) + 12345, 512},         // > 2^32 blocks (2^32 boundary window)
      {(uint64_t{1} << 50) + 4096, 64 * 1024},    // > 2^32 blocks at 64 KiB
      {kMaxDiskSize, 4096},                        // the largest disk
      {3 * (uint64_t{1} << 30) + 7, 64 * 1024 * 1024},  // coarsest granularity
  };
  int i = 0;
  for (const Geo& geo : geos) {
    // 7 geometries x 150 sequences x 60 operations: over a thousand sequences.
    for (int rep = 0; rep < 150 / testing::kSanitizerSlowdown; ++rep) {
      RunProperty(geo.size, geo.gran, base + 1000 * i + rep, 60);
    }
    ++i;
  }
}

TEST(ExtentSet, RejectsBadArguments) {
  EXPECT_FALSE(ExtentSet::Create(1 << 20, 1000).has_value());           // not a power of two
  EXPECT_FALSE(ExtentSet::Create(1 << 20, 256).has_value());            // too small
  EXPECT_FALSE(ExtentSet::Create(1 << 20, uint64_t{1} << 27).has_value());  // too large
  EXPECT_FALSE(ExtentSet::Create(kMaxDiskSize + 1, 4096).has_value());
  ExtentSet s = *ExtentSet::Create(1 << 20, 4096);
  EXPECT_EQ(s.Add(UINT64_MAX - 10, 100).code(), StatusCode::kInvalidArgument);  // overflow
  EXPECT_EQ(s.Add((1 << 20) - 1, 2).code(), StatusCode::kInvalidArgument);      // past the end
  EXPECT_EQ(s.Add(1 << 20, 1).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.Remove(0, (1 << 20) + 1).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.AddBlocks({256, 1}).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(s.empty());
  ExtentSet other = *ExtentSet::Create(1 << 20, 512);
  EXPECT_EQ(s.UnionWith(other).code(), StatusCode::kInvalidArgument);
  ExtentSet bigger = *ExtentSet::Create(2 << 20, 4096);
  EXPECT_EQ(s.Subtract(bigger).code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(ExtentSet::Union(s, bigger).has_value());
}

TEST(ExtentSet, EdgeCases) {
  ExtentSet s = *ExtentSet::Create(10000, 4096);  // 3 blocks, last one 1808 bytes
  EXPECT_TRUE(s.Add(0, 0).ok());                  // zero length: no-op
  EXPECT_TRUE(s.empty());
  EXPECT_TRUE(s.Add(10000, 0).ok());              // zero length at the very end
  EXPECT_TRUE(s.Add(9999, 1).ok());               // the last byte
  EXPECT_EQ(s.ToExtents(), (std::vector<ByteExtent>{{8192, 1808}}));
  EXPECT_EQ(s.ByteCount(), 1808u);
  EXPECT_TRUE(s.Add(4095, 2).ok());               // straddles blocks 0 and 1
  EXPECT_EQ(s.ToExtents(), (std::vector<ByteExtent>{{0, 10000}}));
  EXPECT_EQ(s.BlockCount(), 3u);
  EXPECT_TRUE(s.ContainsRange(0, 10000));
  EXPECT_FALSE(s.ContainsRange(0, 10001));
  EXPECT_FALSE(s.Contains(10000));
  EXPECT_TRUE(s.Remove(4096, 1).ok());            // rounded outward: all of block 1
  EXPECT_EQ(s.ToExtents(), (std::vector<ByteExtent>{{0, 4096}, {8192, 1808}}));
  EXPECT_TRUE(s.Intersects(4000, 200));
  EXPECT_FALSE(s.Intersects(4096, 4096));
  EXPECT_TRUE(s.ContainsRange(5, 0));
  ExtentSet empty_disk = *ExtentSet::Create(0, 4096);
  EXPECT_EQ(empty_disk.Add(0, 1).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(empty_disk.Add(0, 0).ok());
  EXPECT_TRUE(empty_disk.ToExtents().empty());
}

TEST(ExtentSet, RunsCoalesceAcrossShardBoundary) {
  // 512 B granularity: blocks 2^32-2 .. 2^32+1 straddle two shards.
  ExtentSet s = *ExtentSet::Create(uint64_t{1} << 42, 512);
  uint64_t b = (uint64_t{1} << 32) - 2;
  ASSERT_TRUE(s.AddBlocks({b, 4}).ok());
  EXPECT_EQ(s.ToBlockRanges(), (std::vector<BlockRange>{{b, 4}}));
  EXPECT_EQ(s.BlockCount(), 4u);
  ASSERT_TRUE(s.RemoveBlocks({b + 1, 2}).ok());
  EXPECT_EQ(s.ToBlockRanges(), (std::vector<BlockRange>{{b, 1}, {b + 3, 1}}));
}

TEST(ExtentSet, GranularityChange) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int iter = 0; iter < 50; ++iter) {
    uint64_t size = 1 + rng() % (64 << 20);
    ExtentSet s = *ExtentSet::Create(size, 4096);
    for (int i = 0; i < 20; ++i) {
      uint64_t off = rng() % size, len = 1 + rng() % std::min<uint64_t>(size - off, 1 << 20);
      ASSERT_TRUE(s.Add(off, len).ok());
    }
    // Coarser: a 64 KiB block is set iff any of its 4 KiB blocks is.
    ExtentSet coarse = *s.WithGranularity(*Granularity::FromBytes(65536));
    for (uint64_t cb = 0; cb < coarse.disk_blocks(); ++cb) {
      bool any = s.Intersects(cb * 65536, std::min<uint64_t>(65536, size - cb * 65536));
      ASSERT_EQ(coarse.Contains(cb * 65536), any) << "coarse block " << cb;
    }
    // Finer: same bytes exactly (finer than the source granularity).
    ExtentSet fine = *s.WithGranularity(*Granularity::FromBytes(512));
    ASSERT_EQ(fine.ToExtents(), s.ToExtents());
    ASSERT_EQ(fine.ByteCount(), s.ByteCount());
    // Back to the original granularity is the identity.
    ASSERT_TRUE(*fine.WithGranularity(s.granularity()) == s);
  }
}

TEST(ExtentSet, ResizeClips) {
  ExtentSet s = *ExtentSet::Create(1 << 20, 4096);
  ASSERT_TRUE(s.Add(0, 1 << 20).ok());
  ASSERT_TRUE(s.Resize(10000).ok());
  EXPECT_EQ(s.ToExtents(), (std::vector<ByteExtent>{{0, 10000}}));
  ASSERT_TRUE(s.Resize(1 << 21).ok());  // growing adds nothing
  EXPECT_EQ(s.ToExtents(), (std::vector<ByteExtent>{{0, 12288}}));
  EXPECT_EQ(s.disk_blocks(), 512u);
  EXPECT_FALSE(s.Resize(kMaxDiskSize + 1).ok());
}

TEST(ExtentSet, UnionAllMatchesPairwise) {
  std::mt19937_64 rng(testing::TestSeed());
  const uint64_t size = uint64_t{1} << 44;  // crosses shards at 512 B
  std::vector<ExtentSet> sets;
  ExtentSet expect = *ExtentSet::Create(size, 512);
  for (int i = 0; i < 20; ++i) {
    ExtentSet s = *ExtentSet::Create(size, 512);
    for (int j = 0; j < 50; ++j) {
      uint64_t off = rng() % (size - (1 << 20));
      ASSERT_TRUE(s.Add(off, 1 + rng() % (1 << 20)).ok());
    }
    ASSERT_TRUE(expect.UnionWith(s).ok());
    sets.push_back(std::move(s));
  }
  std::vector<const ExtentSet*> ptrs;
  for (auto& s : sets) ptrs.push_back(&s);
  auto all = ExtentSet::UnionAll(ptrs);
  ASSERT_TRUE(all.has_value());
  EXPECT_TRUE(*all == expect);
  EXPECT_FALSE(ExtentSet::UnionAll({}).has_value());
}

}  // namespace
}  // namespace strata

namespace strata {
namespace {

TEST(ExtentSet, CopiesAndMovesAreIndependent) {
  // Regression: the hot-path shard cache was copied along, so adding to a
  // copy wrote into the original's bitmap.
  ExtentSet a = *ExtentSet::Create(1 << 30, 4096);
  ASSERT_TRUE(a.Add(0, 4096).ok());  // primes a's cache
  ExtentSet b = a;
  ASSERT_TRUE(b.Add(8192, 4096).ok());
  EXPECT_EQ(a.BlockCount(), 1u);
  EXPECT_EQ(b.BlockCount(), 2u);
  ExtentSet c = *ExtentSet::Create(1 << 30, 4096);
  c = a;
  ASSERT_TRUE(c.Add(16384, 4096).ok());
  EXPECT_EQ(a.BlockCount(), 1u);
  ExtentSet d = std::move(c);
  ASSERT_TRUE(c.Add(65536, 4096).ok());  // the moved-from set is empty and usable
  EXPECT_EQ(c.BlockCount(), 1u);
  EXPECT_EQ(d.BlockCount(), 2u);
  ASSERT_TRUE(a.Add(32768, 4096).ok());  // a's own cache still works
  EXPECT_EQ(a.BlockCount(), 2u);
  EXPECT_EQ(b.BlockCount(), 2u);
}

TEST(ExtentSet, AddBlockListEqualsSingleAdds) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (uint64_t size : {uint64_t{1} << 30, (uint64_t{1} << 43) + 512, kMaxDiskSize}) {
    for (int rep = 0; rep < 5; ++rep) {
      ExtentSet a = *ExtentSet::Create(size, 512), b = a;
      std::vector<uint64_t> list;
      size_t n = static_cast<size_t>(rng() % 200000);  // crosses the 64 Ki chunking
      for (size_t i = 0; i < n; ++i) {
        // Clustered near a few spots (incl. shard edges) plus uniform picks.
        uint64_t base = (rng() % 3 == 0) ? (uint64_t{1} << 32) - 50 : rng() % a.disk_blocks();
        list.push_back(std::min(a.disk_blocks() - 1, base + rng() % 100));
      }
      ASSERT_TRUE(a.AddBlockList(list).ok());
      for (uint64_t blk : list) ASSERT_TRUE(b.AddBlocks({blk, 1}).ok());
      ASSERT_TRUE(a == b);
      list.push_back(a.disk_blocks());  // one past the end: rejected, set unchanged
      EXPECT_EQ(a.AddBlockList(list).code(), StatusCode::kInvalidArgument);
      ASSERT_TRUE(a == b);
    }
  }
}

}  // namespace
}  // namespace strata
