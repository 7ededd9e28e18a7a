// Concurrency of the quiesce Coordinator (labels "tsan" and "unit": runs
// under ThreadSanitizer and ASan+UBSan). Threads freeze and thaw random
// subsets of the fake system's filesystems, some with short deadlines so the
// watchdog releases handles at the same time, some with a counted hook,
// against a fake backend that sleeps in every call (widening the windows in
// which the coordinator's lock is not held). The fake backend fails any
// freeze of a frozen filesystem and any thaw of a thawed one, so a counting
// race shows up as a failed call. While a thread holds a quiesced handle,
// its filesystems must be frozen. Seed in STRATA_SEED.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <random>
#include <thread>

#include "strata/quiesce.h"
#include "tests/quiesce_fake_system.h"
#include "tests/test_util.h"

namespace strata::quiesce {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

void RunThreads(bool can_thaw_part, bool with_hooks) {
  uint64_t seed = strata::testing::TestSeed();
  SCOPED_TRACE("STRATA_SEED=" + std::to_string(seed));
  FakeSystem sys;
  auto state = std::make_shared<FakeBackend::State>();
  state->delay = 1ms;
  state->can_thaw_part = can_thaw_part;
  strata::testing::TempDir t;
  std::string hooks = t.File("hooks"), log = t.File("hooks.log");
  fs::create_directories(hooks);
  ::chmod(hooks.c_str(), 0755);
  WriteText(hooks + "/10-db", "#!/bin/sh\necho \"$1\" >> '" + log + "'\n");
  ::chmod((hooks + "/10-db").c_str(), 0755);
  const std::vector<std::pair<std::string, std::string>> disks = {
      {"vda", "/fake/a"}, {"vdb", "/fake/b"}, {"vdc1", "/fake/c"}, {"dm-0", "/fake/d"}};
  std::atomic<int> failures{0}, expired{0}, interrupted{0}, frozen_ok{0};
  {
    Coordinator c(std::make_unique<FakeBackend>(state), sys.Options());
    auto worker = [&](int w) {
      std::mt19937_64 rng(seed + static_cast<uint64_t>(w));
      for (int op = 0; op < 60; ++op) {
        FreezeRequest r;
        std::vector<std::string> mounts;
        for (const auto& [d, m] : disks) {
          if (rng() % 2) {
            r.targets.push_back(d);
            mounts.push_back(m);
          }
        }
        if (r.targets.empty()) continue;
        r.deadline = rng() % 4 == 0 ? std::chrono::milliseconds(1 + rng() % 10) : 10s;
        if (with_hooks && rng() % 8 == 0) r.hook_dir = hooks;
        auto h = c.Freeze(r);
        if (!h.has_value()) {
          ADD_FAILURE() << "freeze: " << h.error().ToString();
          ++failures;
          continue;
        }
        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000));
        if (can_thaw_part) {
          // Read the backend's state first, then the verdict: a handle
          // still quiesced after that read must have had all its
          // filesystems frozen during it.
          bool all_frozen = true;
          {
            std::lock_guard<std::mutex> lock(state->mu);
            for (const auto& m : mounts) all_frozen = all_frozen && state->frozen[m];
          }
          if (c.Quiesced(*h)) {
            EXPECT_TRUE(all_frozen) << "a quiesced handle's filesystem was not frozen";
            ++frozen_ok;
          }
        }
        auto rep = c.Thaw(*h);
        if (!rep.has_value()) {
          ADD_FAILURE() << "thaw: " << rep.error().ToString();
          ++failures;
          continue;
        }
        expired += rep->expired;
        interrupted += rep->interrupted;
      }
    };
    std::vector<std::thread> threads;
    for (int w = 0; w < 4; ++w) threads.emplace_back(worker, w);
    for (auto& th : threads) th.join();
    EXPECT_TRUE(c.Handles().empty());
    EXPECT_TRUE(c.Counts().empty());
  }
  EXPECT_EQ(failures.load(), 0);
  {
    std::lock_guard<std::mutex> lock(state->mu);
    for (const auto& [m, f] : state->frozen) EXPECT_FALSE(f) << m << " left frozen";
  }
  // The hook alternates freeze/thaw: never frozen twice, never thawed twice.
  std::string text = ReadText(log);
  std::string expect_next = "freeze";
  size_t runs = 0;
  for (size_t p = 0, nl; (nl = text.find('\n', p)) != std::string::npos; p = nl + 1, ++runs) {
    std::string line = text.substr(p, nl - p);
    ASSERT_EQ(line, expect_next) << "hook run " << runs << ":\n" << text;
    expect_next = expect_next == "freeze" ? "thaw" : "freeze";
  }
  EXPECT_EQ(expect_next, "freeze") << "unbalanced hook runs";
  std::printf("%s: %d handles expired, %d interrupted, %d quiesced checks, %zu hook runs\n",
              can_thaw_part ? "partial thaws" : "all-or-nothing", expired.load(),
              interrupted.load(), frozen_ok.load(), runs);
}

TEST(QuiesceConcurrency, RandomFreezeThawAndExpiryFromFourThreads) { RunThreads(true, true); }

TEST(QuiesceConcurrency, AllOrNothingBackendFromFourThreads) { RunThreads(false, false); }

}  // namespace
}  // namespace strata::quiesce
