// Crash recovery and the edges of issue 17 on real filesystems: ext4 and xfs
// images this test formats and loop-mounts under its own TempDir (root and
// loop devices needed; skipped with the reason otherwise). Every request is
// confined to the TempDir (--confine / confine_to); nothing else is frozen.
//
// - The daemon is SIGKILLed at random points between journal and freeze and
//   between freeze and thaw; `strata thaw --all` must thaw exactly what was
//   frozen, and leave alone a filesystem the test froze itself.
// - Recovery checks the device number: another filesystem mounted at the
//   journaled mount point is not thawed.
// - A thaw goes through the descriptor taken at freeze time: a filesystem
//   mounted over the mount point meanwhile is not thawed.
// - Two handles with hooks, thawed in either order: each hook runs freeze
//   once (before the freeze: it can still write) and thaw once (after the
//   last thaw: it can write again).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "strata/quiesce.h"
#include "tests/quiesce_loop_mount.h"
#include "tests/test_util.h"

namespace strata::quiesce {
namespace {

namespace fs = std::filesystem;
using strata::testing::RunCommand;
using strata::testing::ShellQuote;
using strata::testing::TempDir;
using namespace std::chrono_literals;
using Json = nlohmann::json;

// Runs `strata ARGS...` in a child process with extra environment; returns
// its pid. Output goes to `log`.
pid_t SpawnStrata(const std::vector<std::string>& args, const std::vector<std::string>& env,
                  const std::string& log) {
  std::string strata = strata::testing::Tool("strata");
  std::vector<std::string> argv = {strata};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    for (const auto& e : env) ::putenv(const_cast<char*>(e.c_str()));
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    ::execv(strata.c_str(), cargv.data());
    ::_exit(127);
  }
  return pid;
}

int WaitChild(pid_t pid) {
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return st;
}

// The state letter of /proc/PID/stat ('R', 'S', 'T' stopped, 'Z'), or 0
// when the process is gone.
char ProcState(pid_t pid) {
  std::string stat = ReadText("/proc/" + std::to_string(pid) + "/stat");
  size_t close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return 0;
  return stat[close + 2];
}

bool WaitState(pid_t pid, char state, std::chrono::milliseconds timeout) {
  auto end = Clock::now() + timeout;
  while (Clock::now() < end) {
    if (ProcState(pid) == state) return true;
    std::this_thread::sleep_for(1ms);
  }
  return false;
}

// SIGKILLs `pid` (our daemon) and waits until it is dead (zombie or gone;
// its descriptors and flocks are released by then).
void KillAndWait(pid_t pid) {
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  auto end = Clock::now() + 10s;
  while (Clock::now() < end) {
    (void)::waitpid(pid, nullptr, WNOHANG);  // ours once its parent exited (subreaper)
    char s = ProcState(pid);
    if (s == 0 || s == 'Z' || s == 'X') return;
    std::this_thread::sleep_for(1ms);
  }
  FAIL() << "daemon " << pid << " did not die";
}

void ReapZombies() {
  while (::waitpid(-1, nullptr, WNOHANG) > 0) {
  }
}

std::vector<std::string> JournalFiles(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string n = e.path().filename().string();
    if (n.rfind("journal-", 0) == 0) out.push_back(n);
  }
  return out;
}

// The pid in the name of the first journal in `dir` (journal-PID-NONCE).
pid_t WaitJournalPid(const std::string& dir, std::chrono::milliseconds timeout) {
  auto end = Clock::now() + timeout;
  while (Clock::now() < end) {
    for (const auto& n : JournalFiles(dir)) return std::atoi(n.c_str() + 8);
    std::this_thread::sleep_for(1ms);
  }
  return 0;
}

std::set<std::string> Set(const Json& list) {
  std::set<std::string> out;
  for (const auto& s : list) out.insert(s.get<std::string>());
  return out;
}

class QuiesceRecovery : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* t : {"ext4", "xfs"}) {
      std::string why = SkipReason(t);
      if (!why.empty()) GTEST_SKIP() << why;
    }
    // Orphaned daemons re-parent to us, so we can reap them.
    ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    a_ = std::make_unique<LoopMount>(dir_, "ext4", "a");
    b_ = std::make_unique<LoopMount>(dir_, "xfs", "b");
    ASSERT_TRUE(a_->ok() && b_->ok());
    ASSERT_TRUE(a_->CheckOwnMount());
    ASSERT_TRUE(b_->CheckOwnMount());
    state_ = a_->dir() + "/state";
  }
  void TearDown() override {
    if (a_ && a_->ok()) (void)Strata("thaw --all");
    ReapZombies();
  }
  strata::testing::CommandResult Strata(const std::string& args, const std::string& env = "") {
    return RunCommand(env + " STRATA_QUIESCE_DIR=" + ShellQuote(state_) + " " +
                      ShellQuote(strata::testing::Tool("strata")) + " " + args);
  }
  pid_t DaemonPid() {
    auto st = Strata("status --json");
    auto j = Json::parse(st.out, nullptr, false);
    return j.is_object() && j.value("running", false) ? j.value("pid", 0) : 0;
  }
  // Runs thaw --all and returns its JSON report (exit status in *rc).
  Json ThawAll(int* rc) {
    auto r = Strata("thaw --all --json");
    *rc = r.exit_code;
    Json j = Json::parse(r.out, nullptr, false);
    EXPECT_TRUE(j.is_object()) << r.out << r.err;
    return j;
  }
  bool Writable(const LoopMount& m, const std::string& tag) {
    Writer w(m.mnt() + "/w-" + tag, m.dir() + "/w-" + fs::path(m.mnt()).filename().string() + "-" +
                                         tag);
    return w.Wait(20s);
  }

  TempDir dir_;
  std::unique_ptr<LoopMount> a_, b_;
  std::string state_;
};

// The acceptance test of issue 17's first bullet. Each trial SIGKILLs the
// daemon at one of three kinds of points (round robin, parameters random):
//   0: stopped (SIGSTOP) at a freeze step: "journaled" (intent durable,
//      nothing frozen), "froze-one" (first FIFREEZE done), "frozen";
//   1: stopped at a thaw step: "thawed-one", "thawed" (before the journal
//      says so);
//   2: at a random time (0-20 ms) into a freeze or a thaw, with a random
//      sleep (0.5-3 ms) at every step.
// After each kill `strata thaw --all` must: exit 0; for kinds 0 and 1 report
// exactly the expected filesystems as recovered (were frozen) and
// not_frozen (journaled only); leave both test filesystems writable and no
// journal behind; and never thaw the control filesystem the test froze
// itself (still frozen after every trial).
TEST_F(QuiesceRecovery, SigkillAtRandomPointsThawAllThawsWhatWasFrozenAndNothingElse) {
  LoopMount control(dir_, "ext4", "control");
  ASSERT_TRUE(control.ok());
  ASSERT_TRUE(control.CheckOwnMount());
  ASSERT_EQ(RunCommand("fsfreeze -f " + ShellQuote(control.mnt())).exit_code, 0);
  ASSERT_TRUE(IsFrozen(control.mnt()));

  uint64_t seed = strata::testing::TestSeed();
  std::printf("STRATA_SEED=%llu\n", static_cast<unsigned long long>(seed));
  SCOPED_TRACE("STRATA_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::vector<LoopMount*> all = {a_.get(), b_.get()};  // mount order
  std::string confine = "--confine " + ShellQuote(a_->dir());
  std::map<std::string, int> kinds;
  int recovered_total = 0, not_frozen_total = 0;
  const int kTrials = 60;
  for (int trial = 0; trial < kTrials; ++trial) {
    SCOPED_TRACE("trial " + std::to_string(trial));
    // A non-empty subset, kept in mount order.
    std::vector<LoopMount*> set;
    while (set.empty()) {
      for (LoopMount* m : all) {
        if (rng() % 2) set.push_back(m);
      }
    }
    std::vector<std::string> targets = {"freeze", "--json", "--deadline", "60"};
    targets.push_back("--confine");
    targets.push_back(a_->dir());
    for (LoopMount* m : set) targets.push_back(m->mnt());
    std::string log = a_->dir() + "/trial.log";
    std::set<std::string> expect_recovered, expect_not_frozen, journaled;
    bool exact = true;
    int kind = trial % 3;
    if (kind == 0) {
      const char* steps[] = {"journaled", "froze-one", "frozen"};
      std::string step = steps[rng() % 3];
      kinds["freeze/" + step]++;
      pid_t client = SpawnStrata(targets, {"STRATA_QUIESCE_DIR=" + state_,
                                           "STRATA_QUIESCE_TEST_STOP_AT=" + step},
                                 log);
      pid_t daemon = WaitJournalPid(state_, 10s);
      ASSERT_GT(daemon, 0) << ReadText(log);
      ASSERT_TRUE(WaitState(daemon, 'T', 10s)) << "daemon did not stop at " << step;
      KillAndWait(daemon);
      (void)WaitChild(client);
      // Freeze order is reverse mount order.
      for (size_t i = 0; i < set.size(); ++i) {
        LoopMount* m = set[set.size() - 1 - i];
        bool frozen = step == "frozen" || (step == "froze-one" && i == 0);
        (frozen ? expect_recovered : expect_not_frozen).insert(m->mnt());
      }
    } else if (kind == 1) {
      const char* steps[] = {"thawed-one", "thawed"};
      std::string step = steps[rng() % 2];
      kinds["thaw/" + step]++;
      auto f = Strata(
          "freeze --deadline 60 " + confine + " " + [&] {
            std::string t;
            for (LoopMount* m : set) t += ShellQuote(m->mnt()) + " ";
            return t;
          }(),
          "STRATA_QUIESCE_TEST_STOP_AT=" + step);
      ASSERT_EQ(f.exit_code, 0) << f.err;
      pid_t daemon = DaemonPid();
      ASSERT_GT(daemon, 0);
      pid_t client = SpawnStrata({"thaw", "1"}, {"STRATA_QUIESCE_DIR=" + state_}, log);
      ASSERT_TRUE(WaitState(daemon, 'T', 10s)) << "daemon did not stop at " << step;
      KillAndWait(daemon);
      (void)WaitChild(client);
      // Thaw order is mount order.
      for (size_t i = 0; i < set.size(); ++i) {
        bool thawed = step == "thawed" || i == 0;
        (thawed ? expect_not_frozen : expect_recovered).insert(set[i]->mnt());
      }
    } else {
      exact = false;
      int sleep_us = 500 + static_cast<int>(rng() % 2500);
      std::string env = "STRATA_QUIESCE_TEST_STEP_SLEEP_US=" + std::to_string(sleep_us);
      auto f = Strata("freeze --deadline 60 " + confine + " " + ShellQuote(set[0]->mnt()), env);
      ASSERT_EQ(f.exit_code, 0) << f.err;
      pid_t daemon = DaemonPid();
      ASSERT_GT(daemon, 0);
      for (LoopMount* m : set) journaled.insert(m->mnt());
      pid_t client;
      if (rng() % 2) {
        kinds["random/thaw"]++;
        client = SpawnStrata({"thaw", "1"}, {"STRATA_QUIESCE_DIR=" + state_}, log);
      } else {
        kinds["random/freeze"]++;
        client = SpawnStrata(targets, {"STRATA_QUIESCE_DIR=" + state_}, log);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 20000));
      KillAndWait(daemon);
      (void)WaitChild(client);
    }
    ReapZombies();
    int rc = 0;
    Json rep = ThawAll(&rc);
    ASSERT_EQ(rc, 0) << rep.dump();
    std::set<std::string> recovered = Set(rep["recovered"]);
    std::set<std::string> not_frozen = Set(rep["not_frozen"]);
    EXPECT_TRUE(rep["not_recovered"].empty()) << rep.dump();
    if (exact) {
      EXPECT_EQ(recovered, expect_recovered) << rep.dump();
      EXPECT_EQ(not_frozen, expect_not_frozen) << rep.dump();
    } else {
      for (const auto& m : recovered) EXPECT_TRUE(journaled.count(m)) << m;
      for (const auto& m : not_frozen) EXPECT_TRUE(journaled.count(m)) << m;
    }
    recovered_total += static_cast<int>(recovered.size());
    not_frozen_total += static_cast<int>(not_frozen.size());
    for (LoopMount* m : all) {
      EXPECT_FALSE(IsFrozen(m->mnt())) << m->mnt() << " still frozen after thaw --all";
    }
    EXPECT_TRUE(IsFrozen(control.mnt())) << "thaw --all thawed a filesystem it never froze";
    EXPECT_TRUE(JournalFiles(state_).empty()) << "a journal was left behind";
    if (::testing::Test::HasFailure()) break;
  }
  // Whatever we observed, the filesystems take writes again.
  EXPECT_TRUE(Writable(*a_, "end"));
  EXPECT_TRUE(Writable(*b_, "end"));
  EXPECT_TRUE(IsFrozen(control.mnt()));
  ASSERT_EQ(RunCommand("fsfreeze -u " + ShellQuote(control.mnt())).exit_code, 0);
  std::string summary;
  for (const auto& [k, n] : kinds) summary += " " + k + "=" + std::to_string(n);
  std::printf("%d trials (seed %llu):%s; thaw --all thawed %d frozen filesystems and found %d "
              "journaled but not frozen\n",
              kTrials, static_cast<unsigned long long>(seed), summary.c_str(), recovered_total,
              not_frozen_total);
}

// The daemon is killed after journaling the freeze of A but before freezing
// it; A is then unmounted and another filesystem, frozen by the test, is
// mounted at A's mount point. Recovery must not thaw it (device mismatch),
// must say so and keep the journal; with A back in place, recovery settles.
TEST_F(QuiesceRecovery, RecoveryThawsOnlyTheJournaledDevice) {
  LoopMount other(dir_, "ext4", "other");
  ASSERT_TRUE(other.ok());
  std::string log = a_->dir() + "/client.log";
  pid_t client = SpawnStrata({"freeze", "--deadline", "60", "--confine", a_->dir(), a_->mnt()},
                             {"STRATA_QUIESCE_DIR=" + state_,
                              "STRATA_QUIESCE_TEST_STOP_AT=journaled"},
                             log);
  pid_t daemon = WaitJournalPid(state_, 10s);
  ASSERT_GT(daemon, 0) << ReadText(log);
  ASSERT_TRUE(WaitState(daemon, 'T', 10s));
  KillAndWait(daemon);
  (void)WaitChild(client);
  // Swap: A out, `other` in at A's mount point, frozen by us.
  ASSERT_EQ(RunCommand("umount " + ShellQuote(a_->mnt())).exit_code, 0);
  ASSERT_EQ(RunCommand("mount " + ShellQuote(other.dev()) + " " + ShellQuote(a_->mnt())).exit_code,
            0);
  ASSERT_EQ(RunCommand("fsfreeze -f " + ShellQuote(a_->mnt())).exit_code, 0);
  int rc = 0;
  Json rep = ThawAll(&rc);
  EXPECT_EQ(rc, 1) << "something could not be recovered: exit status 1";
  ASSERT_EQ(rep["not_recovered"].size(), 1u) << rep.dump();
  EXPECT_NE(rep["not_recovered"][0].get<std::string>().find("now holds device"), std::string::npos)
      << rep.dump();
  EXPECT_TRUE(rep["recovered"].empty()) << rep.dump();
  EXPECT_TRUE(IsFrozen(a_->mnt())) << "recovery thawed a filesystem it never froze";
  EXPECT_EQ(JournalFiles(state_).size(), 1u) << "the journal must be kept";
  auto st = Strata("status");
  EXPECT_NE(st.out.find("LEFT FROZEN by a killed process: " + a_->mnt()), std::string::npos)
      << st.out;
  // Put A back: now the journaled device is there (and not frozen).
  ASSERT_EQ(RunCommand("fsfreeze -u " + ShellQuote(a_->mnt())).exit_code, 0);
  ASSERT_EQ(RunCommand("umount " + ShellQuote(a_->mnt())).exit_code, 0);
  ASSERT_EQ(RunCommand("mount " + ShellQuote(a_->dev()) + " " + ShellQuote(a_->mnt())).exit_code,
            0);
  rep = ThawAll(&rc);
  EXPECT_EQ(rc, 0) << rep.dump();
  EXPECT_EQ(Set(rep["not_frozen"]), std::set<std::string>{a_->mnt()}) << rep.dump();
  EXPECT_TRUE(JournalFiles(state_).empty());
}

// A is frozen through the library; then, while frozen, another filesystem
// is mounted over A's mount point and frozen by the test. Thaw must thaw A
// (through the descriptor taken at freeze time; A is still reachable
// through a bind mount made beforehand) and leave the other one frozen.
TEST_F(QuiesceRecovery, ThawGoesThroughTheDescriptorTakenAtFreeze) {
  LoopMount other(dir_, "ext4", "other");
  ASSERT_TRUE(other.ok());
  std::string bind = a_->dir() + "/a-bind";
  fs::create_directories(bind);
  ASSERT_EQ(RunCommand("mount --bind " + ShellQuote(a_->mnt()) + " " + ShellQuote(bind)).exit_code,
            0);
  bool over = false;
  {
    Coordinator c(MakeFifreezeBackend(), a_->ConfinedOptions());
    FreezeRequest r;
    r.targets = {a_->mnt()};
    auto h = c.Freeze(r);
    ASSERT_TRUE(h.has_value()) << h.error().ToString();
    ASSERT_TRUE(IsFrozen(bind));
    ASSERT_EQ(RunCommand("mount " + ShellQuote(other.dev()) + " " + ShellQuote(a_->mnt())).exit_code,
              0);
    over = true;
    ASSERT_EQ(RunCommand("fsfreeze -f " + ShellQuote(a_->mnt())).exit_code, 0);
    auto rep = c.Thaw(*h);
    ASSERT_TRUE(rep.has_value()) << rep.error().ToString();
    EXPECT_FALSE(IsFrozen(bind)) << "A was not thawed";
    EXPECT_TRUE(IsFrozen(a_->mnt())) << "the filesystem mounted over A was thawed";
  }
  (void)RunCommand("fsfreeze -u " + ShellQuote(a_->mnt()));
  if (over) (void)RunCommand("umount " + ShellQuote(a_->mnt()));
  (void)RunCommand("umount " + ShellQuote(bind));
  ASSERT_TRUE(a_->CheckOwnMount());
}

// Two handles with the same hook directory over one filesystem, thawed in
// either order, on ext4 and xfs. The freeze hook writes a file on the
// filesystem (it would block, and time out, if the filesystem were already
// frozen); the thaw hook does too (it would block if the filesystem were
// still frozen). Each runs exactly once.
TEST_F(QuiesceRecovery, TwoHandlesWithHooksRunEachHookOnceAtTheRightMoments) {
  for (LoopMount* m : {a_.get(), b_.get()}) {
    for (bool first_a : {true, false}) {
      SCOPED_TRACE(m->mnt() + (first_a ? ": thaw A then B" : ": thaw B then A"));
      std::string hooks = m->dir() + "/hooks", log = m->dir() + "/hooks.log";
      fs::create_directories(hooks);
      ::chmod(hooks.c_str(), 0755);
      {
        std::ofstream(hooks + "/10-db")
            << "#!/bin/sh\n"
               "touch \""
            << m->mnt() << "/hook-$1\" && sync -f \"" << m->mnt()
            << "/hook-$1\" && echo \"db $1\" >> '" << log << "'\n";
      }
      ::chmod((hooks + "/10-db").c_str(), 0755);
      std::ofstream(log, std::ios::trunc).close();
      Coordinator c(MakeFifreezeBackend(), m->ConfinedOptions());
      FreezeRequest r;
      r.targets = {m->mnt()};
      r.hook_dir = hooks;
      r.hook_timeout = 5s;
      auto a = c.Freeze(r);
      ASSERT_TRUE(a.has_value()) << a.error().ToString();
      EXPECT_EQ(ReadText(log), "db freeze\n");
      EXPECT_TRUE(IsFrozen(m->mnt()));
      auto b = c.Freeze(r);
      ASSERT_TRUE(b.has_value()) << b.error().ToString();
      EXPECT_EQ(ReadText(log), "db freeze\n") << "freeze hook ran for the second handle";
      auto first = c.Thaw(first_a ? *a : *b);
      ASSERT_TRUE(first.has_value()) << first.error().ToString();
      EXPECT_TRUE(first->thawed.empty());
      EXPECT_TRUE(IsFrozen(m->mnt())) << "the first thaw released the filesystem";
      EXPECT_EQ(ReadText(log), "db freeze\n") << "thaw hook ran before the last thaw";
      auto second = c.Thaw(first_a ? *b : *a);
      ASSERT_TRUE(second.has_value()) << second.error().ToString();
      EXPECT_EQ(second->thawed, (std::vector<std::string>{m->mnt()}));
      EXPECT_EQ(ReadText(log), "db freeze\ndb thaw\n");
      EXPECT_FALSE(IsFrozen(m->mnt()));
      EXPECT_TRUE(fs::exists(m->mnt() + "/hook-freeze"));
      EXPECT_TRUE(fs::exists(m->mnt() + "/hook-thaw"));
      fs::remove_all(hooks);
    }
  }
}

}  // namespace
}  // namespace strata::quiesce
