// Crash safety: a child process (tracker_crash_child) marks random writes
// and logs each to a pipe after Mark returns; the parent SIGKILLs it at a
// random moment, reopens the state and checks that ChangedSince covers every
// logged write. Hundreds of iterations; prints the over-approximation.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <random>
#include <thread>

#include "strata/tracker.h"
#include "extents/endian.h"
#include "tests/test_util.h"

namespace strata {
namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kIterations = 60;
#else
constexpr int kIterations = 200;
#endif

TEST(TrackerCrashTest, SigkillNeverLosesAnAcknowledgedMark) {
  uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  testing::TempDir tmp;
  const std::string dir = tmp.File("st");
  const uint64_t size = 256 << 20, gran = 4096;
  {
    TrackerOptions o;
    o.disk_size = size;
    o.granularity_bytes = gran;
    o.intent_region_shift = 20;  // 1 MiB regions
    auto t = Tracker::Create(dir, o);
    ASSERT_TRUE(t.has_value()) << t.error().ToString();
    ASSERT_TRUE((*t)->Checkpoint("it0").has_value());
    ASSERT_TRUE((*t)->Close().ok());
  }
  const std::string child = std::string(STRATA_BIN_DIR) + "/tests/tracker_crash_child";
  uint64_t total_marks = 0, total_logged_bytes = 0, total_reported = 0, total_added = 0;
  int unclean = 0;
  for (int it = 1; it <= kIterations; ++it) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    uint64_t child_seed = rng();
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      std::string fd = std::to_string(fds[1]), s = std::to_string(child_seed);
      ::execl(child.c_str(), child.c_str(), dir.c_str(), fd.c_str(), s.c_str(), nullptr);
      ::_exit(127);
    }
    ::close(fds[1]);
    // Read the log while the child runs, then kill it at a random moment
    // (sometimes while it is still opening/recovering).
    ::fcntl(fds[0], F_SETFL, O_NONBLOCK);
    std::string log;
    char buf[65536];
    // Mostly wait for the first acknowledged mark (the child has opened and
    // recovered), then kill after a random delay; one time in eight kill at
    // a random moment from the start (during exec, open or recovery).
    if (rng() % 8 != 0) {
      auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      while (log.empty() && std::chrono::steady_clock::now() < limit) {
        ssize_t n = ::read(fds[0], buf, sizeof buf);
        if (n > 0) log.append(buf, static_cast<size_t>(n));
        else std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(rng() % 20000);
    while (std::chrono::steady_clock::now() < deadline) {
      ssize_t n = ::read(fds[0], buf, sizeof buf);
      if (n > 0) log.append(buf, static_cast<size_t>(n));
      else std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    ::kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "child exited early with status " << status;
    ::fcntl(fds[0], F_SETFL, 0);
    for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) log.append(buf, static_cast<size_t>(n));
    ::close(fds[0]);
    ASSERT_EQ(log.size() % 16, 0u);

    auto t = Tracker::Open(dir);
    ASSERT_TRUE(t.has_value()) << t.error().ToString();
    const RecoveryInfo& rec = (*t)->recovery();
    ASSERT_FALSE(rec.active_unknown) << (rec.problems.empty() ? "" : rec.problems[0]);
    ASSERT_TRUE(rec.problems.empty()) << rec.problems[0];
    unclean += !rec.clean_shutdown;
    total_added += rec.added_bytes;
    auto since = (*t)->ChangedSince("it" + std::to_string(it - 1));
    ASSERT_TRUE(since.has_value()) << since.error().ToString();
    auto logged = ExtentSet::Create(size, gran);
    ASSERT_TRUE(logged.has_value());
    const uint8_t* p = reinterpret_cast<const uint8_t*>(log.data());
    for (size_t i = 0; i < log.size(); i += 16) {
      uint64_t off = LoadLE64(p + i), len = LoadLE64(p + i + 8);
      ASSERT_TRUE(since->ContainsRange(off, len))
          << "iteration " << it << ": acknowledged mark [" << off << ", +" << len << ") lost";
      ASSERT_TRUE(logged->Add(off, len).ok());
      ++total_marks;
    }
    total_logged_bytes += logged->ByteCount();
    total_reported += since->ByteCount();
    // Next iteration starts from a fresh checkpoint; the child's own
    // checkpoints are removed (merging forward) to exercise Remove too.
    ASSERT_TRUE((*t)->Checkpoint("it" + std::to_string(it)).has_value());
    for (const CheckpointInfo& c : (*t)->List()) {
      if (c.name.rfind("child-", 0) == 0 || (c.name != "it" + std::to_string(it) && rng() % 2)) {
        ASSERT_TRUE((*t)->Remove(c.name).ok());
      }
    }
    ASSERT_TRUE((*t)->Close().ok());
  }
  std::printf(
      "%d kills (%d unclean), %llu acknowledged marks; logged %llu bytes, reported %llu bytes: "
      "over-approximation %llu bytes (%.1f%%); intent-log recovery added %llu bytes\n",
      kIterations, unclean, static_cast<unsigned long long>(total_marks),
      static_cast<unsigned long long>(total_logged_bytes),
      static_cast<unsigned long long>(total_reported),
      static_cast<unsigned long long>(total_reported - total_logged_bytes),
      total_logged_bytes ? 100.0 * static_cast<double>(total_reported - total_logged_bytes) /
                               static_cast<double>(total_logged_bytes)
                         : 0.0,
      static_cast<unsigned long long>(total_added));
  EXPECT_GT(total_marks, static_cast<uint64_t>(kIterations));
  EXPECT_GT(unclean, kIterations * 3 / 4);
}

}  // namespace
}  // namespace strata
