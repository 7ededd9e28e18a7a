// Benchmarks of the extent algebra (issue 2 targets, docs/benchmarks.md):
//   >= 50 M random adds/s and >= 200 M blocks/s iterated on one core,
//   a union of 100 sparse sets in milliseconds, a 1 TiB set with 1% dirty
//   at 64 KiB under 1 MiB of memory.
#include <benchmark/benchmark.h>
#include <malloc.h>

#include <random>
#include <vector>

#include "strata/extent_set.h"

namespace strata {
namespace {

constexpr uint64_t kTiB = uint64_t{1} << 40;
constexpr uint64_t k64K = 64 * 1024;


// A 1 TiB set at 64 KiB with `fraction` of its blocks dirty at random.
ExtentSet DirtySet(double fraction, uint64_t seed) {
  ExtentSet s = *ExtentSet::Create(kTiB, k64K);
  uint64_t blocks = kTiB / k64K;
  uint64_t n = static_cast<uint64_t>(static_cast<double>(blocks) * fraction);
  std::mt19937_64 rng(seed);
  for (uint64_t i = 0; i < n; ++i) (void)s.AddBlocks({rng() % blocks, 1});
  s.Optimize();
  return s;
}

void BM_AddSequential64K(benchmark::State& state) {
  ExtentSet s = *ExtentSet::Create(kTiB, k64K);
  uint64_t off = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(s.Add(off, k64K));
    off += k64K;
    if (off >= kTiB) off = 0;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_AddSequential64K);

// Random 4 KiB marks over a 1 TiB address space; state.range(0) is the
// granularity. The set fills up over the run, like a real generation.
// splitmix64: a PRNG cheap enough (~1 ns) not to hide in the measurement, so
// offsets never repeat in a cycle and the set keeps growing as a real
// generation does.
inline uint64_t SplitMix(uint64_t* x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
  z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
  return z ^ (z >> 31);
}

void BM_AddRandom4K(benchmark::State& state) {
  ExtentSet s = *ExtentSet::Create(kTiB, static_cast<uint64_t>(state.range(0)));
  uint64_t x = 1;
  for (auto _ : state) {
    benchmark::DoNotOptimize(s.Add(SplitMix(&x) & (kTiB - 4096), 4096));
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["final_dirty_pct"] = 100.0 * static_cast<double>(s.ByteCount()) / kTiB;
}
BENCHMARK(BM_AddRandom4K)->Arg(64 * 1024)->Arg(4096);

// The same random 4 KiB marks through AddBlockList in batches of
// state.range(0) blocks (how the tracker and bitmap loaders add many blocks).
void BM_AddRandom4KBatched(benchmark::State& state) {
  const Granularity g = Granularity::Default();
  ExtentSet s = *ExtentSet::Create(kTiB, g);
  const size_t batch = static_cast<size_t>(state.range(0));
  std::vector<uint64_t> blocks(batch);
  uint64_t x = 1;
  for (auto _ : state) {
    for (auto& b : blocks) b = g.BlockOf(SplitMix(&x) & (kTiB - 4096));
    benchmark::DoNotOptimize(s.AddBlockList(blocks));
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * batch));
  state.counters["final_dirty_pct"] = 100.0 * static_cast<double>(s.ByteCount()) / kTiB;
}
BENCHMARK(BM_AddRandom4KBatched)->Arg(1 << 12)->Arg(1 << 16)->Arg(1 << 18);

// Building a whole 1%-dirty generation of a 1 TiB disk at 64 KiB from random
// 4 KiB marks (167,772 of them) into a fresh set: range(0) = 0 adds one mark
// per Add call, 1 passes them all to AddBlockList at once.
void BM_Build1PctGeneration(benchmark::State& state) {
  const Granularity g = Granularity::Default();
  const size_t n = (kTiB / g.bytes()) / 100;
  std::vector<uint64_t> offsets(n), blocks(n);
  uint64_t x = 7;
  for (size_t i = 0; i < n; ++i) {
    offsets[i] = SplitMix(&x) & (kTiB - 4096);
    blocks[i] = g.BlockOf(offsets[i]);
  }
  for (auto _ : state) {
    ExtentSet s = *ExtentSet::Create(kTiB, g);
    if (state.range(0) == 0) {
      for (uint64_t o : offsets) benchmark::DoNotOptimize(s.Add(o, 4096));
    } else {
      benchmark::DoNotOptimize(s.AddBlockList(blocks));
    }
    benchmark::DoNotOptimize(s);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));
}
BENCHMARK(BM_Build1PctGeneration)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

void BM_Union100Sparse(benchmark::State& state) {
  std::vector<ExtentSet> sets;
  for (int i = 0; i < 100; ++i) sets.push_back(DirtySet(0.001, 100 + i));  // 0.1% each
  std::vector<const ExtentSet*> ptrs;
  for (auto& s : sets) ptrs.push_back(&s);
  for (auto _ : state) {
    auto u = ExtentSet::UnionAll(ptrs);
    benchmark::DoNotOptimize(u);
  }
  state.counters["result_blocks"] = static_cast<double>(ExtentSet::UnionAll(ptrs)->BlockCount());
}
BENCHMARK(BM_Union100Sparse)->Unit(benchmark::kMillisecond);

void BM_Union100SparsePairwise(benchmark::State& state) {
  std::vector<ExtentSet> sets;
  for (int i = 0; i < 100; ++i) sets.push_back(DirtySet(0.001, 100 + i));
  for (auto _ : state) {
    ExtentSet u = sets[0];
    for (int i = 1; i < 100; ++i) (void)u.UnionWith(sets[i]);
    benchmark::DoNotOptimize(u);
  }
}
BENCHMARK(BM_Union100SparsePairwise)->Unit(benchmark::kMillisecond);

// 1M runs of 1..127 blocks separated by gaps: blocks iterated per second.
void BM_IterateRuns1M(benchmark::State& state) {
  ExtentSet s = *ExtentSet::Create(uint64_t{1} << 50, 4096);
  std::mt19937_64 rng(5);
  uint64_t b = 0, total = 0;
  for (int i = 0; i < (1 << 20); ++i) {
    uint64_t len = 1 + rng() % 127;
    (void)s.AddBlocks({b, len});
    total += len;
    b += len + 1 + rng() % 64;
  }
  s.Optimize();
  for (auto _ : state) {
    ExtentSet::RunIterator it(s);
    BlockRange r;
    uint64_t n = 0, runs = 0;
    while (it.NextBlocks(&r)) {
      n += r.count;
      ++runs;
    }
    if (n != total || runs != (1u << 20)) state.SkipWithError("iteration lost blocks");
    benchmark::DoNotOptimize(n);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * total));
  state.counters["runs"] = 1 << 20;
}
BENCHMARK(BM_IterateRuns1M)->Unit(benchmark::kMillisecond);

void BM_Serialize1TiB1Pct(benchmark::State& state) {
  ExtentSet s = DirtySet(0.01, 9);
  size_t bytes = 0;
  for (auto _ : state) {
    std::string out = s.Serialize();
    bytes = out.size();
    benchmark::DoNotOptimize(out);
  }
  state.counters["serialized_bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_Serialize1TiB1Pct)->Unit(benchmark::kMicrosecond);

void BM_Deserialize1TiB1Pct(benchmark::State& state) {
  std::string bytes = DirtySet(0.01, 9).Serialize();
  std::span<const uint8_t> in(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  for (auto _ : state) {
    auto r = ExtentSet::Deserialize(in);
    if (!r) state.SkipWithError("deserialize failed");
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(BM_Deserialize1TiB1Pct)->Unit(benchmark::kMicrosecond);

// Heap bytes held by a 1 TiB set with 1% of its 64 KiB blocks dirty, measured
// with mallinfo2 around its construction.
void BM_Memory1TiB1Pct(benchmark::State& state) {
  for (auto _ : state) {
    size_t before = mallinfo2().uordblks;
    ExtentSet s = DirtySet(0.01, 11);
    size_t after = mallinfo2().uordblks;
    state.counters["heap_bytes"] = static_cast<double>(after - before);
    state.counters["roaring_bytes"] = static_cast<double>(s.MemoryBytes());
    state.counters["dirty_blocks"] = static_cast<double>(s.BlockCount());
  }
}
BENCHMARK(BM_Memory1TiB1Pct)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace strata

BENCHMARK_MAIN();
