// Benchmarks of the change tracker (issue 3 targets, docs/benchmarks.md):
//   Mark <= 10 ns single-threaded for random 4 KiB writes over a 1 TiB disk
//   at 64 KiB granularity, near-linear to 2 threads, with and without the
//   intent log; checkpoint <= 10 ms with 1% dirty; ChangedSince over 100
//   generations <= 50 ms; memory per TiB tracked.
// State directories live under $STRATA_BENCH_DIR or /tmp.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "strata/tracker.h"

namespace strata {
namespace {

constexpr uint64_t kTiB = uint64_t{1} << 40;
constexpr uint64_t k4K = 4096;
constexpr size_t kOffsets = 1 << 20;

std::string FreshDir(const std::string& name) {
  const char* base = std::getenv("STRATA_BENCH_DIR");
  std::string dir = std::string(base && *base ? base : "/tmp") + "/strata-bench-" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

std::unique_ptr<Tracker> MakeTracker(const std::string& name, uint64_t gran, bool intent,
                                     uint32_t region_shift = 26) {
  TrackerOptions o;
  o.disk_size = kTiB;
  o.granularity_bytes = gran;
  o.intent_log = intent;
  o.intent_region_shift = region_shift;
  auto t = Tracker::Create(FreshDir(name), o);
  if (!t) std::abort();
  return std::move(t).value();
}

// Random 4 KiB-aligned offsets over 1 TiB, one table per thread.
const std::vector<uint64_t>& RandomOffsets(int thread) {
  static std::vector<uint64_t> tables[8];
  auto& v = tables[thread];
  if (v.empty()) {
    std::mt19937_64 rng(1234 + static_cast<uint64_t>(thread));
    v.resize(kOffsets);
    for (auto& o : v) o = (rng() % (kTiB / k4K)) * k4K;
  }
  return v;
}

// One shared tracker per configuration, created by thread 0 before the run.
struct Shared {
  std::unique_ptr<Tracker> t;
};

template <bool kIntent, uint64_t kGran>
void BM_MarkRandom4K(benchmark::State& state) {
  static Shared shared;
  if (state.thread_index() == 0) {
    // 1 GiB intent regions: the steady-state cost of the intent check is one
    // load whatever the region size, and the warm-up below (recording every
    // region: one fsync each) stays at 1024 fsyncs instead of 16384.
    shared.t = MakeTracker("mark-random", kGran, kIntent, 30);
    // Warm-up: every intent region recorded and every bitmap chunk
    // allocated, so the loop measures the steady state.
    for (uint64_t off = 0; off < kTiB; off += uint64_t{1} << 30) (void)shared.t->Mark(off, 1);
  }
  const auto& offs = RandomOffsets(state.thread_index());
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(shared.t->Mark(offs[i], k4K));
    i = (i + 1) & (kOffsets - 1);
  }
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) {
    state.counters["fsyncs"] = static_cast<double>(shared.t->IntentSyncs());
    state.counters["active_MiB"] =
        static_cast<double>(shared.t->ActiveMemoryBytes()) / (1 << 20);
    (void)shared.t->Close();
    shared.t.reset();
  }
}
BENCHMARK_TEMPLATE(BM_MarkRandom4K, false, 65536)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK_TEMPLATE(BM_MarkRandom4K, true, 65536)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK_TEMPLATE(BM_MarkRandom4K, false, 4096)->Threads(1)->Threads(2)->UseRealTime();

template <bool kIntent>
void BM_MarkSequential4K(benchmark::State& state) {
  static Shared shared;
  if (state.thread_index() == 0) {
    shared.t = MakeTracker("mark-seq", 65536, kIntent, 30);
    for (uint64_t off = 0; off < kTiB; off += uint64_t{1} << 30) (void)shared.t->Mark(off, 1);
  }
  // Each thread writes its own sequential stream in its half of the disk.
  uint64_t base = static_cast<uint64_t>(state.thread_index()) * (kTiB / 2);
  uint64_t off = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(shared.t->Mark(base + off, k4K));
    off = (off + k4K) & (kTiB / 2 - 1);
  }
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) {
    (void)shared.t->Close();
    shared.t.reset();
  }
}
BENCHMARK_TEMPLATE(BM_MarkSequential4K, false)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK_TEMPLATE(BM_MarkSequential4K, true)->Threads(1)->Threads(2)->UseRealTime();

// Checkpoint of a 1 TiB disk with 1% of its 64 KiB blocks dirty (random
// 4 KiB writes): swap, drain, seal into Roaring, write the generation file,
// the manifest and a new intent log (each fsynced).
void BM_Checkpoint1PctDirty(benchmark::State& state) {
  auto t = MakeTracker("checkpoint", 65536, state.range(0) != 0);
  const uint64_t blocks = kTiB / 65536;
  std::mt19937_64 rng(7);
  int n = 0;
  for (auto _ : state) {
    state.PauseTiming();
    const uint64_t span = state.range(0) ? blocks / 64 : blocks;
    for (uint64_t i = 0; i < blocks / 100; ++i) (void)t->Mark((rng() % span) * 65536, k4K);
    state.ResumeTiming();
    auto c = t->Checkpoint("c" + std::to_string(n++));
    if (!c) state.SkipWithError(c.error().ToString().c_str());
  }
  auto list = t->List();
  state.counters["sealed_MiB"] =
      static_cast<double>(list.empty() ? 0 : list.back().changed_bytes) / (1 << 20);
  (void)t->Close();
}
// Arg 1 (intent log on) adds the creation of the next intent log. Its marks
// are 1% of the disk's blocks within the first 1/64 of the disk, so the
// (paused) marking phase makes ~256 intent fsyncs per iteration, not 16384.
BENCHMARK(BM_Checkpoint1PctDirty)->Arg(0)->Iterations(20)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Checkpoint1PctDirty)->Arg(1)->Iterations(3)->Unit(benchmark::kMillisecond);

// The slow path of Mark with the intent log: the first write to a region
// not yet recorded in this intent epoch waits for one append + fsync.
void BM_MarkFirstTouchOfRegion(benchmark::State& state) {
  auto t = MakeTracker("first-touch", 65536, true);
  uint64_t off = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(t->Mark(off, k4K));
    off += uint64_t{64} << 20;
  }
  state.counters["fsyncs"] = static_cast<double>(t->IntentSyncs());
  (void)t->Close();
}
BENCHMARK(BM_MarkFirstTouchOfRegion)->Iterations(300)->Unit(benchmark::kMicrosecond);

// ChangedSince(the oldest of 100 checkpoints): a union of 100 generations,
// each with 10,000 random 4 KiB writes (~0.06% of the disk), plus the active.
void BM_ChangedSince100Generations(benchmark::State& state) {
  auto t = MakeTracker("since", 65536, false);
  std::mt19937_64 rng(9);
  (void)t->Checkpoint("g0");
  for (int g = 1; g <= 100; ++g) {
    for (int i = 0; i < 10000; ++i) (void)t->Mark((rng() % (kTiB / k4K)) * k4K, k4K);
    (void)t->Checkpoint("g" + std::to_string(g));
  }
  uint64_t bytes = 0;
  for (auto _ : state) {
    auto s = t->ChangedSince("g0");
    if (!s) state.SkipWithError(s.error().ToString().c_str());
    else bytes = s->ByteCount();
  }
  state.counters["result_GiB"] = static_cast<double>(bytes) / (1 << 30);
  (void)t->Close();
}
BENCHMARK(BM_ChangedSince100Generations)->Unit(benchmark::kMillisecond);

// Memory of the active bitmaps (active + spare) per TiB, every chunk touched.
void BM_MemoryPerTiB(benchmark::State& state) {
  uint64_t gran = static_cast<uint64_t>(state.range(0));
  auto t = MakeTracker("memory", gran, false);
  for (auto _ : state) {
    for (uint64_t off = 0; off < kTiB; off += uint64_t{1} << 30) (void)t->Mark(off, 1);
    (void)t->Checkpoint("a");  // the spare bitmap gets its chunks too
    for (uint64_t off = 0; off < kTiB; off += uint64_t{1} << 30) (void)t->Mark(off, 1);
    (void)t->Remove("a");
  }
  state.counters["MiB_per_TiB"] = static_cast<double>(t->ActiveMemoryBytes()) / (1 << 20);
  (void)t->Close();
}
BENCHMARK(BM_MemoryPerTiB)->Arg(65536)->Arg(4096)->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace strata

BENCHMARK_MAIN();
