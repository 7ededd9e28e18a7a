// System tests for quiesce on the real kernel: ext4 and xfs images on loop
// devices that THIS test creates and mounts under its own TempDir, frozen
// with FIFREEZE or through a real qemu-ga (Debian's qemu-guest-agent) run on
// the host. Skips with a reason when not root, without loop devices or
// without mkfs.xfs / qemu-ga.
//
// SAFETY: nothing outside the test's TempDir is ever frozen. Three guards:
// every Coordinator here has confine_to = the TempDir; CheckOwnMount()
// verifies the mount point is inside the TempDir and is mounted from our
// loop device before any freeze; teardown thaws, unmounts and detaches
// even when an assertion failed.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <filesystem>
#include <fstream>
#include <thread>

#include "engine/quiesce/qga.h"
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

class QuiesceRealFs : public ::testing::TestWithParam<std::string> {};

TEST_P(QuiesceRealFs, FreezeBlocksWriterCountsAndThawReleases) {
  std::string why = SkipReason(GetParam());
  if (!why.empty()) GTEST_SKIP() << why;
  TempDir dir;
  LoopMount lm(dir, GetParam());
  ASSERT_TRUE(lm.ok());
  ASSERT_TRUE(lm.CheckOwnMount());
  Coordinator c(MakeFifreezeBackend(), lm.ConfinedOptions());
  FreezeRequest r;
  r.targets = {lm.mnt()};
  auto h1 = c.Freeze(r);
  ASSERT_TRUE(h1.has_value()) << h1.error().ToString();
  // Already frozen: counted, not EBUSY.
  auto h2 = c.Freeze(r);
  ASSERT_TRUE(h2.has_value()) << h2.error().ToString();
  EXPECT_EQ(c.Counts(), (std::map<std::string, int>{{lm.mnt(), 2}}));
  // Another FIFREEZE from outside reports EBUSY: the fs really is frozen.
  EXPECT_NE(RunCommand("fsfreeze -f " + ShellQuote(lm.mnt())).exit_code, 0);

  Writer w(lm.mnt() + "/file", lm.dir() + "/written");
  std::this_thread::sleep_for(500ms);
  EXPECT_FALSE(w.Done()) << "a write completed on a frozen " << GetParam();
  ASSERT_TRUE(c.Thaw(*h1).has_value());
  std::this_thread::sleep_for(300ms);
  EXPECT_FALSE(w.Done()) << "thaw of handle 1 released a filesystem handle 2 still holds";
  auto rep = c.Thaw(*h2);
  ASSERT_TRUE(rep.has_value()) << rep.error().ToString();
  EXPECT_EQ(rep->thawed, (std::vector<std::string>{lm.mnt()}));
  EXPECT_TRUE(w.Wait(20s));
  EXPECT_TRUE(w.Done());
  EXPECT_EQ(ReadText(lm.mnt() + "/file"), "hello");
}

TEST_P(QuiesceRealFs, DeadlineThawsAutomatically) {
  std::string why = SkipReason(GetParam());
  if (!why.empty()) GTEST_SKIP() << why;
  TempDir dir;
  LoopMount lm(dir, GetParam());
  ASSERT_TRUE(lm.ok());
  ASSERT_TRUE(lm.CheckOwnMount());
  Coordinator c(MakeFifreezeBackend(), lm.ConfinedOptions());
  FreezeRequest r;
  r.targets = {lm.mnt()};
  r.deadline = 600ms;
  auto h = c.Freeze(r);
  ASSERT_TRUE(h.has_value()) << h.error().ToString();
  Writer w(lm.mnt() + "/file", lm.dir() + "/written");
  std::this_thread::sleep_for(200ms);
  EXPECT_FALSE(w.Done());
  // Nobody calls Thaw: the watchdog must.
  EXPECT_TRUE(w.Wait(20s)) << "writer still blocked: the deadline did not thaw";
  EXPECT_FALSE(c.Quiesced(*h));
  auto rep = c.Thaw(*h);
  ASSERT_TRUE(rep.has_value());
  EXPECT_TRUE(rep->expired);
  EXPECT_GE(rep->frozen_for, 600ms);
}

TEST_P(QuiesceRealFs, RequestByLoopDeviceFreezesItsFilesystem) {
  std::string why = SkipReason(GetParam());
  if (!why.empty()) GTEST_SKIP() << why;
  TempDir dir;
  LoopMount lm(dir, GetParam());
  ASSERT_TRUE(lm.ok());
  ASSERT_TRUE(lm.CheckOwnMount());
  Coordinator c(MakeFifreezeBackend(), lm.ConfinedOptions());
  std::string name = fs::path(lm.dev()).filename().string();  // "loop3"
  for (const std::string& target : {lm.dev(), name}) {
    auto res = c.Resolve({target});
    ASSERT_TRUE(res.has_value()) << res.error().ToString();
    ASSERT_EQ(res->filesystems.size(), 1u);
    EXPECT_EQ(res->filesystems[0].mount_point, lm.mnt());
    EXPECT_EQ(res->filesystems[0].fs_type, GetParam());
    FreezeRequest r;
    r.targets = {target};
    auto h = c.Freeze(r);
    ASSERT_TRUE(h.has_value()) << h.error().ToString();
    Writer w(lm.mnt() + "/f-" + name, lm.dir() + "/written-" + std::to_string(*h));
    std::this_thread::sleep_for(300ms);
    EXPECT_FALSE(w.Done()) << target;
    ASSERT_TRUE(c.Thaw(*h).has_value());
    EXPECT_TRUE(w.Wait(20s)) << target;
  }
}

INSTANTIATE_TEST_SUITE_P(Fs, QuiesceRealFs, ::testing::Values("ext4", "xfs"),
                         [](const auto& info) { return info.param; });

TEST(QuiesceRealFsMisc, RunQuiescedWithFailingHookLeavesFsWritable) {
  std::string why = SkipReason("ext4");
  if (!why.empty()) GTEST_SKIP() << why;
  TempDir dir;
  LoopMount lm(dir, "ext4");
  ASSERT_TRUE(lm.ok());
  ASSERT_TRUE(lm.CheckOwnMount());
  Coordinator c(MakeFifreezeBackend(), lm.ConfinedOptions());
  std::string hooks = lm.dir() + "/hooks";
  fs::create_directories(hooks);
  ::chmod(hooks.c_str(), 0755);  // whatever the umask: hooks must not be group-writable
  {
    std::ofstream(hooks + "/10-ok") << "#!/bin/sh\necho \"ok $1\" >> " << lm.dir() << "/hooklog\n";
    std::ofstream(hooks + "/20-fail") << "#!/bin/sh\n[ \"$1\" = freeze ] && exit 1\nexit 0\n";
  }
  ::chmod((hooks + "/10-ok").c_str(), 0755);
  ::chmod((hooks + "/20-fail").c_str(), 0755);
  QuiesceRequest q;
  q.targets = {lm.mnt()};
  q.hook_dir = hooks;
  bool ran = false;
  auto r = RunQuiesced(c, q, [&] {
    ran = true;
    return Status::Ok();
  });
  ASSERT_FALSE(r.has_value());
  EXPECT_FALSE(ran);
  EXPECT_EQ(ReadText(lm.dir() + "/hooklog"), "ok freeze\nok thaw\n");
  Writer w(lm.mnt() + "/file", lm.dir() + "/written");
  EXPECT_TRUE(w.Wait(20s)) << "filesystem left frozen after a failed freeze hook";

  // Without the failing hook the window runs, with the fs frozen inside.
  fs::remove(hooks + "/20-fail");
  std::unique_ptr<Writer> inner;
  bool blocked = false;
  ran = false;
  r = RunQuiesced(c, q, [&] {
    ran = true;
    inner = std::make_unique<Writer>(lm.mnt() + "/inner", lm.dir() + "/inner-written");
    std::this_thread::sleep_for(300ms);
    blocked = !inner->Done();
    return Status::Ok();
  });
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_TRUE(ran);
  EXPECT_TRUE(blocked) << "a write completed inside the quiesce window";
  EXPECT_TRUE(r->quiesced);
  EXPECT_EQ(r->mount_points, (std::vector<std::string>{lm.mnt()}));
  EXPECT_GE(r->frozen_for, 300ms);
  EXPECT_TRUE(inner->Wait(20s));
  EXPECT_EQ(ReadText(lm.dir() + "/hooklog"), "ok freeze\nok thaw\nok freeze\nok thaw\n");
}

TEST(QuiesceRealFsMisc, TmpfsIsUnsupportedClearly) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (mount)";
  TempDir dir;
  std::string mnt = RealPath(dir.path()) + "/tmpfs";
  fs::create_directories(mnt);
  ASSERT_EQ(RunCommand("mount -t tmpfs -o size=1M tmpfs " + ShellQuote(mnt)).exit_code, 0);
  {
    Coordinator::Options o;
    o.confine_to = dir.path();
    Coordinator c(MakeFifreezeBackend(), o);
    FreezeRequest r;
    r.targets = {mnt};
    auto h = c.Freeze(r);
    ASSERT_FALSE(h.has_value());
    EXPECT_EQ(h.error().code(), StatusCode::kUnsupported);
    EXPECT_NE(h.error().message().find("EOPNOTSUPP"), std::string::npos) << h.error().message();
    EXPECT_TRUE(c.Counts().empty());
  }
  (void)RunCommand("umount " + ShellQuote(mnt));
}

// ---- the real QEMU guest agent ----------------------------------------------

class QemuGa {
 public:
  explicit QemuGa(const std::string& dir) : dir_(dir) {
    sock_ = dir + "/qga.sock";
    pidfile_ = dir + "/qga.pid";
    // -t: private state dir (never /var/run); no -F: no system hook script.
    std::string cmd = "qemu-ga -m unix-listen -p " + ShellQuote(sock_) + " -f " +
                      ShellQuote(pidfile_) + " -t " + ShellQuote(dir) + " -l " +
                      ShellQuote(dir + "/qga.log") + " -d";
    auto r = RunCommand(cmd);
    for (int i = 0; i < 100 && !(fs::exists(sock_) && fs::exists(pidfile_)); ++i) {
      std::this_thread::sleep_for(50ms);
    }
    std::string pid = ReadText(pidfile_);
    pid_ = std::atoi(pid.c_str());
    if (pid_ <= 0 || !fs::exists(sock_)) {
      error_ = "qemu-ga did not start outside a VM (exit " + std::to_string(r.exit_code) +
               "): " + r.err + ReadText(dir + "/qga.log");
      pid_ = 0;
    }
  }
  ~QemuGa() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);  // by pid, never by name
      for (int i = 0; i < 100 && ::kill(pid_, 0) == 0; ++i) std::this_thread::sleep_for(20ms);
      if (::kill(pid_, 0) == 0) ::kill(pid_, SIGKILL);
    }
  }
  const std::string& error() const { return error_; }
  const std::string& socket() const { return sock_; }
  std::string log() const { return ReadText(dir_ + "/qga.log"); }

 private:
  std::string dir_, sock_, pidfile_, error_;
  pid_t pid_ = 0;
};

TEST(QuiesceQemuGa, FreezesOnlyOurLoopMountThroughFreezeList) {
  std::string why = SkipReason("ext4");
  if (!why.empty()) GTEST_SKIP() << why;
  if (!strata::testing::HaveCommand("qemu-ga"))
    GTEST_SKIP() << "qemu-ga not installed (Debian qemu-guest-agent; scripts/setup.sh)";
  TempDir dir;
  LoopMount lm(dir, "ext4");
  ASSERT_TRUE(lm.ok());
  ASSERT_TRUE(lm.CheckOwnMount());
  // The agent's socket and state live outside the mount (never on it).
  TempDir agent_dir;
  QemuGa ga(RealPath(agent_dir.path()));
  if (!ga.error().empty()) GTEST_SKIP() << ga.error();

  auto client = QgaClient::Connect(ga.socket(), 10s);
  ASSERT_TRUE(client.has_value()) << client.error().ToString();
  auto st = (*client)->FreezeStatus();
  ASSERT_TRUE(st.has_value()) << st.error().ToString();
  EXPECT_EQ(*st, "thawed");
  client->reset();

  Coordinator c(MakeQgaBackend(ga.socket(), 20s), lm.ConfinedOptions());
  EXPECT_EQ(c.backend_name(), "qga");
  FreezeRequest r;
  r.targets = {lm.dev()};
  auto h = c.Freeze(r);
  ASSERT_TRUE(h.has_value()) << h.error().ToString() << "\n" << ga.log();
  {
    auto cl = QgaClient::Connect(ga.socket(), 10s);
    ASSERT_TRUE(cl.has_value()) << cl.error().ToString();
    auto s = (*cl)->FreezeStatus();
    ASSERT_TRUE(s.has_value()) << s.error().ToString();
    EXPECT_EQ(*s, "frozen");
  }
  // Really frozen in the kernel: our FIFREEZE gets EBUSY, a writer blocks.
  EXPECT_NE(RunCommand("fsfreeze -f " + ShellQuote(lm.mnt())).exit_code, 0);
  Writer w(lm.mnt() + "/file", lm.dir() + "/written");
  std::this_thread::sleep_for(400ms);
  EXPECT_FALSE(w.Done());
  // Only our mount was frozen: the agent's own directory (root fs) is writable.
  std::ofstream(RealPath(agent_dir.path()) + "/still-writable") << "x";
  EXPECT_EQ(ReadText(RealPath(agent_dir.path()) + "/still-writable"), "x");
  // A second handle on the same filesystem is counted (no second agent call).
  FreezeRequest r2 = r;
  auto h2 = c.Freeze(r2);
  ASSERT_TRUE(h2.has_value()) << h2.error().ToString();
  auto rep = c.Thaw(*h);
  ASSERT_TRUE(rep.has_value());
  EXPECT_TRUE(rep->thawed.empty());
  rep = c.Thaw(*h2);
  ASSERT_TRUE(rep.has_value()) << rep.error().ToString();
  EXPECT_EQ(rep->thawed, (std::vector<std::string>{lm.mnt()}));
  EXPECT_TRUE(w.Wait(20s));
  auto cl = QgaClient::Connect(ga.socket(), 10s);
  ASSERT_TRUE(cl.has_value());
  auto s = (*cl)->FreezeStatus();
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(*s, "thawed");
}

// ---- the CLI: strata freeze / thaw / status through the daemon ----------------

class QuiesceCli : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why = SkipReason("ext4");
    if (!why.empty()) GTEST_SKIP() << why;
    lm_ = std::make_unique<LoopMount>(dir_, "ext4");
    ASSERT_TRUE(lm_->ok());
    ASSERT_TRUE(lm_->CheckOwnMount());
    state_ = lm_->dir() + "/state";
  }
  void TearDown() override {
    if (lm_ && lm_->ok()) (void)Strata("thaw --all");
  }
  // Runs the CLI confined to our TempDir with a private state dir.
  strata::testing::CommandResult Strata(const std::string& args) {
    return RunCommand("STRATA_QUIESCE_DIR=" + ShellQuote(state_) + " " +
                      ShellQuote(strata::testing::Tool("strata")) + " " + args);
  }
  std::string Confined() const { return "--confine " + ShellQuote(lm_->dir()) + " "; }

  TempDir dir_;
  std::unique_ptr<LoopMount> lm_;
  std::string state_;
};

TEST_F(QuiesceCli, HandlesCountsAcrossInvocationsAndExactThawErrors) {
  std::string mnt = ShellQuote(lm_->mnt());
  auto dry = Strata("freeze --dry-run " + ShellQuote(lm_->dev()));
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_NE(dry.out.find("would freeze " + lm_->mnt() + " [ext4 " + lm_->dev()), std::string::npos)
      << dry.out;
  auto f1 = Strata("freeze --json " + Confined() + mnt);
  ASSERT_EQ(f1.exit_code, 0) << f1.err;
  EXPECT_EQ(f1.out, "{\"handle\": 1, \"mount_points\": [\"" + lm_->mnt() +
                        "\"], \"deadline_ms\": 10000}\n");
  auto f2 = Strata("freeze --json --deadline 20 " + Confined() + ShellQuote(lm_->dev()));
  ASSERT_EQ(f2.exit_code, 0) << f2.err;
  EXPECT_NE(f2.out.find("\"handle\": 2"), std::string::npos);
  auto st = Strata("status --json");
  ASSERT_EQ(st.exit_code, 0);
  EXPECT_NE(st.out.find("\"counts\": {\"" + lm_->mnt() + "\": 2}"), std::string::npos) << st.out;
  Writer w(lm_->mnt() + "/file", lm_->dir() + "/written");
  std::this_thread::sleep_for(300ms);
  EXPECT_FALSE(w.Done());
  auto t1 = Strata("thaw --json 1");
  ASSERT_EQ(t1.exit_code, 0) << t1.err;
  EXPECT_NE(t1.out.find("\"thawed\": []"), std::string::npos) << t1.out;
  auto again = Strata("thaw 1");
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.err.find("unknown or already thawed"), std::string::npos) << again.err;
  std::this_thread::sleep_for(200ms);
  EXPECT_FALSE(w.Done()) << "handle 2 still holds the filesystem";
  auto t2 = Strata("thaw --json 2");
  ASSERT_EQ(t2.exit_code, 0) << t2.err;
  EXPECT_NE(t2.out.find("\"quiesced\": true"), std::string::npos) << t2.out;
  EXPECT_NE(t2.out.find("\"thawed\": [\"" + lm_->mnt() + "\"]"), std::string::npos) << t2.out;
  EXPECT_TRUE(w.Wait(20s));
  // Refusals: the root filesystem; a path outside the confinement.
  auto root = Strata("freeze /");
  EXPECT_EQ(root.exit_code, 1);
  EXPECT_NE(root.err.find("root filesystem"), std::string::npos) << root.err;
  auto outside = Strata("freeze --force " + Confined() + "/");
  EXPECT_EQ(outside.exit_code, 1);
  EXPECT_NE(outside.err.find("confinement"), std::string::npos) << outside.err;
  // Protected path: the filesystem holding it is refused.
  auto prot =
      Strata("freeze " + Confined() + "--protect " + ShellQuote(lm_->mnt() + "/repo") + " " + mnt);
  EXPECT_EQ(prot.exit_code, 1);
  EXPECT_NE(prot.err.find("protected path"), std::string::npos) << prot.err;
}

TEST_F(QuiesceCli, ExecFreezesForTheCommandAndReportsExpiry) {
  std::string marker = lm_->dir() + "/exec-ran";
  auto r = Strata("freeze --json " + Confined() + "--exec " +
                  ShellQuote("sleep 0.2; echo snap > " + ShellQuote(marker)) + " " +
                  ShellQuote(lm_->mnt()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\"quiesced\": true"), std::string::npos) << r.out;
  EXPECT_EQ(ReadText(marker), "snap\n");
  r = Strata("freeze --json --deadline 0.1 " + Confined() + "--exec 'sleep 0.6' " +
             ShellQuote(lm_->mnt()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\"quiesced\": false"), std::string::npos) << r.out;
  r = Strata("freeze " + Confined() + "--exec 'exit 4' " + ShellQuote(lm_->mnt()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("status 4"), std::string::npos) << r.err;
  Writer w(lm_->mnt() + "/file", lm_->dir() + "/written");
  EXPECT_TRUE(w.Wait(20s)) << "--exec left the filesystem frozen";
}

// SIGKILL of the daemon leaves the freeze (the kernel keeps it); status shows
// it and `thaw --all` recovers from the state file. SIGTERM thaws.
TEST_F(QuiesceCli, DaemonKillRecoveryAndSigtermThaw) {
  auto f = Strata("freeze --deadline 60 " + Confined() + ShellQuote(lm_->mnt()));
  ASSERT_EQ(f.exit_code, 0) << f.err;
  auto st = Strata("status --json");
  size_t p = st.out.find("\"pid\": ");
  ASSERT_NE(p, std::string::npos) << st.out;
  pid_t pid = std::atoi(st.out.c_str() + p + 7);
  ASSERT_GT(pid, 1);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  for (int i = 0; i < 100 && ::kill(pid, 0) == 0; ++i) std::this_thread::sleep_for(20ms);
  Writer w(lm_->mnt() + "/file", lm_->dir() + "/written");
  std::this_thread::sleep_for(300ms);
  EXPECT_FALSE(w.Done()) << "SIGKILL of the daemon thawed (it cannot)";
  st = Strata("status");
  EXPECT_NE(st.out.find("LEFT FROZEN by a killed process: " + lm_->mnt()), std::string::npos)
      << st.out;
  auto all = Strata("thaw --all --json");
  ASSERT_EQ(all.exit_code, 0) << all.err;
  EXPECT_NE(all.out.find("\"recovered\": [\"" + lm_->mnt() + "\"]"), std::string::npos) << all.out;
  EXPECT_TRUE(w.Wait(20s));

  f = Strata("freeze --deadline 60 " + Confined() + ShellQuote(lm_->mnt()));
  ASSERT_EQ(f.exit_code, 0) << f.err;
  st = Strata("status --json");
  p = st.out.find("\"pid\": ");
  ASSERT_NE(p, std::string::npos);
  pid = std::atoi(st.out.c_str() + p + 7);
  Writer w2(lm_->mnt() + "/file2", lm_->dir() + "/written2");
  std::this_thread::sleep_for(300ms);
  EXPECT_FALSE(w2.Done());
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  EXPECT_TRUE(w2.Wait(20s)) << "SIGTERM did not thaw";
  st = Strata("status");
  EXPECT_NE(st.out.find("no quiesce daemon running"), std::string::npos) << st.out;
}

// The daemon is forked from the client that spawned it: it must keep none of
// the client's descriptors, above all spawn.lock (its flock would live as
// long as the daemon and block every later spawn).
TEST_F(QuiesceCli, DaemonKeepsNoDescriptorOfItsSpawningClient) {
  auto f = Strata("freeze --deadline 30 " + Confined() + ShellQuote(lm_->mnt()));
  ASSERT_EQ(f.exit_code, 0) << f.err;
  auto st = Strata("status --json");
  size_t p = st.out.find("\"pid\": ");
  ASSERT_NE(p, std::string::npos) << st.out;
  pid_t pid = std::atoi(st.out.c_str() + p + 7);
  ASSERT_GT(pid, 1);
  std::string fds;
  for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
    std::error_code ec;
    fds += e.path().filename().string() + " -> " + fs::read_symlink(e.path(), ec).string() + "\n";
  }
  EXPECT_EQ(fds.find("spawn.lock"), std::string::npos) << fds;
  int lock = ::open((state_ + "/spawn.lock").c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(lock, 0);
  EXPECT_EQ(::flock(lock, LOCK_EX | LOCK_NB), 0) << "the daemon still holds spawn.lock";
  ::close(lock);
  EXPECT_NE(fds.find("daemon.lock"), std::string::npos) << fds;
  ASSERT_EQ(Strata("thaw 1").exit_code, 0);
}

// SIGINT to `strata freeze --exec` (no daemon) thaws before dying.
TEST_F(QuiesceCli, SigintDuringExecThaws) {
  std::string strata = strata::testing::Tool("strata");
  std::string confine = lm_->dir(), mnt = lm_->mnt();
  std::string in_window = lm_->dir() + "/in-window";
  std::string exec = "touch " + ShellQuote(in_window) + "; exec sleep 5";
  pid_t pid = ::fork();
  if (pid == 0) {
    ::execl(strata.c_str(), strata.c_str(), "freeze", "--confine", confine.c_str(), "--deadline",
            "60", "--exec", exec.c_str(), mnt.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ASSERT_GT(pid, 0);
  // The --exec command runs inside the window: wait for its marker.
  for (int i = 0; i < 400 && !fs::exists(in_window); ++i) std::this_thread::sleep_for(50ms);
  if (!fs::exists(in_window)) {
    ::kill(pid, SIGKILL);  // our own child; teardown thaws our mount
    ::waitpid(pid, nullptr, 0);
    FAIL() << "--exec never ran inside the window";
  }
  Writer w(mnt + "/file", lm_->dir() + "/written");
  std::this_thread::sleep_for(300ms);
  EXPECT_FALSE(w.Done()) << "--exec did not freeze";
  ASSERT_EQ(::kill(pid, SIGINT), 0);
  int st = 0;
  ASSERT_EQ(::waitpid(pid, &st, 0), pid);
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGINT) << st;
  EXPECT_TRUE(w.Wait(20s)) << "SIGINT did not thaw";
}

}  // namespace
}  // namespace strata::quiesce
