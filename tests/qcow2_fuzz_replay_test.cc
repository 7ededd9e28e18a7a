// Replays the qcow2 fuzz target over the seed corpus (made by
// fuzz/make_corpus.sh with qemu-img) and over deterministic mutations of it,
// so the parsers' robustness is checked by every ordinary test run (and
// under ASan/UBSan in the sanitizer build). Set STRATA_SEED to replay a run.
#include <dirent.h>
#include <gtest/gtest.h>

#include <chrono>
#include <random>

#include "fuzz/qcow2_fuzz_one.h"
#include "tests/test_util.h"

namespace strata {
namespace {

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') out.push_back(dir + "/" + e->d_name);
    }
    closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(Qcow2FuzzReplay, SeedCorpusAndMutations) {
  if (!testing::HaveCommand("qemu-img")) GTEST_SKIP() << "qemu-img not installed";
  testing::TempDir dir;
  testing::RunOk(std::string(STRATA_SOURCE_DIR) + "/fuzz/make_corpus.sh " +
                 testing::ShellQuote(dir.path()));
  // An extra corpus directory (e.g. crashes found by the fuzzer) can be
  // replayed too: STRATA_QCOW2_CORPUS=/path.
  std::vector<std::string> files = ListDir(dir.path());
  if (const char* extra = std::getenv("STRATA_QCOW2_CORPUS")) {
    for (auto& f : ListDir(extra)) files.push_back(f);
  }
  ASSERT_GE(files.size(), 9u);
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("STRATA_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto start = std::chrono::steady_clock::now();
  size_t runs = 0;
  for (const std::string& f : files) {
    SCOPED_TRACE(f);
    std::vector<uint8_t> seed_bytes = testing::ReadFileBytes(f);
    ASSERT_FALSE(seed_bytes.empty());
    fuzz::Qcow2FuzzOne(seed_bytes.data(), seed_bytes.size());
    for (int m = 0; m < 150; ++m) {
      std::vector<uint8_t> b = seed_bytes;
      int flips = 1 + static_cast<int>(rng() % 4);
      for (int k = 0; k < flips; ++k) {
        // Mostly the header cluster, where the tables are described;
        // sometimes anywhere (L1/L2, snapshot table, bitmap directory).
        size_t pos = (rng() % 3) ? rng() % std::min<size_t>(b.size(), 512) : rng() % b.size();
        switch (rng() % 4) {
          case 0: b[pos] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
          case 1: b[pos] = static_cast<uint8_t>(rng()); break;
          case 2: b[pos] = 0xff; break;
          default: b[pos] = 0; break;
        }
      }
      if (rng() % 10 == 0) b.resize(rng() % b.size());
      fuzz::Qcow2FuzzOne(b.data(), b.size());
      ++runs;
    }
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("replayed %zu seeds and %zu mutations in %.2f s\n", files.size(), runs, secs);
}

}  // namespace
}  // namespace strata
