// The consistency contract of tracker.h under concurrency: writer threads
// mark random ranges and log each mark with timestamps from one global
// atomic sequence; a checkpointer takes checkpoints (and flushes) and logs
// when each began and returned; a reader queries meanwhile. Afterwards every
// logged write must be in one of the generations the contract allows:
//   L = last checkpoint that returned before the mark began,
//   U = the generation before the first checkpoint that began after the
//       mark returned (the active generation if none);
// the write's blocks must be in some generation g with L <= g <= U. Also
// every reported block must have been written by someone (no garbage).
// Runs under ThreadSanitizer too (label "tsan").
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "strata/tracker.h"
#include "tests/test_util.h"

namespace strata {
namespace {

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr int kCheckpoints = 60;
#else
constexpr int kCheckpoints = 200;
#endif
constexpr int kWriters = 3;

struct WriteLog {
  uint64_t start, end;   // sequence numbers before Mark began / after it returned
  uint64_t first, last;  // blocks
};
struct CpLog {
  uint64_t begin, end;
  std::string name;
};

void RunContractTest(bool intent_log, uint64_t seed) {
  SCOPED_TRACE("seed " + std::to_string(seed) + (intent_log ? " intent" : " no-intent"));
  testing::TempDir tmp;
  const uint64_t gran = 4096, size = 16 << 20;  // 4096 blocks
  TrackerOptions o;
  o.disk_size = size;
  o.granularity_bytes = gran;
  o.intent_log = intent_log;
  o.intent_region_shift = 20;  // 16 regions of 1 MiB
  auto tr = Tracker::Create(tmp.File("st"), o);
  ASSERT_TRUE(tr.has_value()) << tr.error().ToString();
  Tracker& t = **tr;

  std::atomic<uint64_t> clock{1};
  std::atomic<bool> stop{false};
  std::vector<CpLog> cps;
  // c0 before any writer starts, so every write has a checkpoint before it.
  {
    uint64_t b = clock.fetch_add(1);
    ASSERT_TRUE(t.Checkpoint("c0").has_value());
    cps.push_back({b, clock.fetch_add(1), "c0"});
  }
  std::vector<std::vector<WriteLog>> logs(kWriters);
  std::atomic<int> errors{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      std::mt19937_64 rng(seed * 31 + static_cast<uint64_t>(w));
      while (!stop.load(std::memory_order_relaxed)) {
        uint64_t off = rng() % size;
        uint64_t len = 1 + rng() % std::min<uint64_t>(size - off, rng() % 8 == 0 ? 200000 : 8192);
        uint64_t s = clock.fetch_add(1);
        if (!t.Mark(off, len).ok()) errors.fetch_add(1);
        uint64_t e = clock.fetch_add(1);
        auto& log = logs[static_cast<size_t>(w)];
        log.push_back({s, e, off / gran, (off + len - 1) / gran});
        // Pace the writers so the log stays small (~10^5 marks per writer).
        if (log.size() % 8 == 0) std::this_thread::sleep_for(std::chrono::microseconds(1));
      }
    });
  }
  std::thread reader([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      auto r = t.ChangedSince("c0");
      if (!r.has_value()) errors.fetch_add(1);
      std::this_thread::yield();
    }
  });
  for (int i = 1; i <= kCheckpoints; ++i) {
    std::string name = "c" + std::to_string(i);
    uint64_t b = clock.fetch_add(1);
    auto c = t.Checkpoint(name);
    uint64_t e = clock.fetch_add(1);
    ASSERT_TRUE(c.has_value()) << c.error().ToString();
    cps.push_back({b, e, name});
    if (i % 7 == 0) {
      ASSERT_TRUE(t.Flush().ok());
    }
    std::this_thread::sleep_for(std::chrono::microseconds(1500));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  stop = true;
  for (auto& th : writers) th.join();
  reader.join();
  ASSERT_EQ(errors.load(), 0);

  // Generations g = 0..n: g < n is (c_g, c_{g+1}], g == n the active one.
  const size_t n = cps.size() - 1;
  std::vector<ExtentSet> gens;
  for (size_t g = 0; g <= n; ++g) {
    auto r = g < n ? t.ChangedBetween(cps[g].name, cps[g + 1].name) : t.ChangedSince(cps[g].name);
    ASSERT_TRUE(r.has_value()) << r.error().ToString();
    gens.push_back(std::move(r).value());
  }
  std::set<uint64_t> written;
  size_t total = 0, racing = 0;
  for (const auto& log : logs) {
    for (const WriteLog& w : log) {
      ++total;
      size_t lo = 0, hi = n;
      for (size_t k = 0; k <= n; ++k) {
        if (cps[k].end < w.start) lo = k;
      }
      for (size_t k = n; k >= 1; --k) {
        if (cps[k].begin > w.end) hi = k - 1;
      }
      ASSERT_LE(lo, hi);
      if (hi > lo) ++racing;
      for (uint64_t b = w.first; b <= w.last; ++b) {
        written.insert(b);
        bool found = false;
        for (size_t g = lo; g <= hi && !found; ++g) found = gens[g].Contains(b * gran);
        ASSERT_TRUE(found) << "block " << b << " of a mark in [" << w.start << ", " << w.end
                           << "] is in no generation " << lo << ".." << hi;
      }
    }
  }
  for (const ExtentSet& g : gens) {
    for (const BlockRange& r : g.ToBlockRanges()) {
      for (uint64_t b = r.first; b < r.end(); ++b) {
        ASSERT_TRUE(written.count(b)) << "block " << b << " reported but never written";
      }
    }
  }
  std::printf("%zu marks, %zu racing a checkpoint, %zu checkpoints\n", total, racing, n);
  EXPECT_GT(total, static_cast<size_t>(kCheckpoints));
  ASSERT_TRUE(t.Close().ok());
}

TEST(TrackerConcurrencyTest, ContractHoldsWithoutIntentLog) {
  RunContractTest(false, testing::TestSeed());
}

TEST(TrackerConcurrencyTest, ContractHoldsWithIntentLog) {
  RunContractTest(true, testing::TestSeed());
}

}  // namespace
}  // namespace strata
