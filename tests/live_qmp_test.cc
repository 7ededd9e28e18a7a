// Live backups over QMP against a real QEMU and a real qemu-storage-daemon
// (label "live"). Guest writes are simulated through a second QMP monitor
// (qemu-io on the named drive) or, for the storage daemon, a FUSE export of
// the node; every reference is the disk at the backup's point in time,
// copied with `qemu-img convert -U` while the VM is paused.
//
// STRATA_LIVE_KILL_TRIALS sets the number of kill trials (default 25).
#include <cstdlib>
#include <map>

#include "strata/jobs.h"
#include "tests/live_util.h"

namespace strata::testing {
namespace {

using live::Json;

class LiveQmp : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveCommand("qemu-system-x86_64") || !HaveCommand("qemu-img")) {
      GTEST_SKIP() << "qemu-system-x86_64 or qemu-img missing (scripts/setup.sh installs them)";
    }
    seed_ = TestSeed();
    rng_.seed(seed_);
    std::printf("seed %llu (STRATA_SEED=%llu replays)\n", (unsigned long long)seed_, (unsigned long long)seed_);
    disk_ = dir_.File("disk.qcow2");
    qmp_ = dir_.File("qmp.sock");
    tq_ = dir_.File("t.sock");
    state_ = dir_.File("state");
    repo_dir_ = dir_.File("repo");
    ASSERT_TRUE(Repository::Init(repo_dir_).ok());
  }

  void MakeDisk(uint64_t size, uint64_t data) {
    RunOk("qemu-img create -q -f qcow2 " + disk_ + " " + std::to_string(size));
    // Random-looking data (qemu-io patterns per MiB) and a few holes.
    std::string cmds;
    for (uint64_t at = 0; at < data; at += 1 << 20) {
      cmds += " -c 'write -P " + std::to_string(rng_() % 251 + 1) + " " + std::to_string(at * 2 % size) + " 1M'";
    }
    RunOk("qemu-io -f qcow2" + cmds + " " + disk_ + " >/dev/null");
    size_ = size;
  }

  void StartQemu() {
    ::unlink(qmp_.c_str());
    ::unlink(tq_.c_str());
    vm_ = Child::Start({"qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none", "-accel", "tcg",
                        "-qmp", "unix:" + qmp_ + ",server=on,wait=off", "-qmp", "unix:" + tq_ + ",server=on,wait=off",
                        "-drive", "if=none,id=drive0,node-name=disk0,file=" + disk_ + ",format=qcow2"},
                       dir_.File("qemu.log"));
    ASSERT_TRUE(WaitForPath(tq_)) << RunCommand("cat " + dir_.File("qemu.log")).out;
    test_q_ = ConnectQmp(tq_);
    ASSERT_TRUE(test_q_);
  }

  void StopQemuGracefully() {
    (void)test_q_->Execute("quit");
    test_q_.reset();
    vm_.Wait();
  }

  void GuestWrite(uint64_t off, uint64_t len, int pattern) {
    char cmd[200];
    std::snprintf(cmd, sizeof cmd, "qemu-io drive0 \"write -P %d %llu %llu\"", pattern, (unsigned long long)off,
                  (unsigned long long)len);
    auto r = test_q_->Execute("human-monitor-command", Json{{"command-line", cmd}});
    ASSERT_TRUE(r.has_value()) << r.error().message();
    ASSERT_TRUE(!r->is_string() || r->get<std::string>().find("error") == std::string::npos) << r->dump();
  }

  void RandomWrites(int n) {
    for (int i = 0; i < n; ++i) {
      uint64_t len = (rng_() % 256 + 1) * 512;
      uint64_t off = rng_() % ((size_ - len) / 512) * 512;
      GuestWrite(off, len, static_cast<int>(rng_() % 255 + 1));
    }
  }

  // The disk as it is now, paused, as a raw file.
  std::string Reference() {
    const std::string ref = dir_.File("ref-" + std::to_string(refs_++) + ".raw");
    EXPECT_TRUE(test_q_->Execute("stop").has_value());
    RunOk("qemu-img convert -U -f qcow2 -O raw " + disk_ + " " + ref);
    EXPECT_TRUE(test_q_->Execute("cont").has_value());
    return ref;
  }

  // A backup in this process: the reference is copied right after the
  // point in time (the transaction), and the guest writes while the export
  // is read. Those writes must not be in this backup (they are in the
  // next one's reference).
  Result<live::LiveResult> Backup(bool full, std::string* ref) {
    auto repo = Repository::Open(repo_dir_);
    if (!repo) return repo.error();
    live::QmpSource src;
    src.socket = qmp_;
    src.node = "disk0";
    live::LiveOptions o;
    o.state_dir = state_;
    o.full = full;
    o.pipeline.chunk_size = 256 << 10;  // more pieces, more chances for writes to land in between
    int writes_in_read = 0;
    o.on_step = [&](const char* step) {
      if (std::string(step) == "export") *ref = Reference();
      if (std::string(step) == "read") RandomWrites(3);
    };
    o.pipeline.progress = [&](uint64_t, uint64_t) {
      if (writes_in_read++ < 3) RandomWrites(1);
    };
    return live::BackupQemuNode(**repo, src, o);
  }

  void ExpectRestores(const std::map<std::string, std::string>& refs) {
    auto repo = Repository::Open(repo_dir_, RepositoryOptions{nullptr, true});
    ASSERT_TRUE(repo.has_value());
    for (const auto& [id, ref] : refs) {
      const std::string out = dir_.File("restored.raw");
      ::unlink(out.c_str());
      auto st = RestoreFromRepository(**repo, id, out, PipelineOptions{});
      ASSERT_TRUE(st.has_value()) << st.error().message();
      EXPECT_TRUE(SameFiles(out, ref)) << "backup " << id << " differs from the disk at its point in time " << ref
                                       << " (seed " << seed_ << ")";
    }
  }

  TempDir dir_;
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
  std::string disk_, qmp_, tq_, state_, repo_dir_;
  uint64_t size_ = 0;
  int refs_ = 0;
  Child vm_;
  std::unique_ptr<live::QmpClient> test_q_;
};

TEST_F(LiveQmp, FullIncrementalsScansAndRestartsAgainstRealQemu) {
  MakeDisk(64 << 20, 24 << 20);
  StartQemu();
  std::map<std::string, std::string> refs;
  auto take = [&](bool full, const std::string& want_mode, const std::string& want_note) {
    std::string ref;
    auto r = Backup(full, &ref);
    ASSERT_TRUE(r.has_value()) << r.error().message();
    ASSERT_EQ(r->disks.size(), 1u);
    EXPECT_EQ(r->disks[0].mode, want_mode);
    std::string notes;
    for (const auto& n : r->disks[0].notes) notes += n + "\n";
    if (!want_note.empty()) {
      EXPECT_NE(notes.find(want_note), std::string::npos) << notes;
    }
    refs[IdToHex(r->disks[0].backup.entry.id())] = ref;
    ExpectNoLeftovers(*test_q_, "disk0");
  };
  take(false, "full", "taking a full backup");
  for (int i = 0; i < 4; ++i) {
    RandomWrites(20);
    take(false, "incremental", "");
  }
  // Only the newest checkpoint bitmap stays.
  EXPECT_EQ(Bitmaps(*test_q_, "disk0").size(), 1u) << Bitmaps(*test_q_, "disk0").dump();
  // The bitmap is gone: a scan, said so.
  std::string bm = Bitmaps(*test_q_, "disk0")[0].value("name", "");
  ASSERT_TRUE(test_q_->Execute("block-dirty-bitmap-remove", Json{{"node", "disk0"}, {"name", bm}}).has_value());
  RandomWrites(10);
  take(false, "scan", "is gone");
  // A clean restart keeps the persistent bitmap: incremental.
  StopQemuGracefully();
  StartQemu();
  RandomWrites(10);
  take(false, "incremental", "");
  // QEMU killed while the bitmap is in use (a host crash): inconsistent.
  StopQemuGracefully();
  StartQemu();
  RandomWrites(5);
  vm_.Kill(SIGKILL);
  vm_.Wait();
  StartQemu();
  RandomWrites(5);
  take(false, "scan", "inconsistent");
  RandomWrites(10);
  take(false, "incremental", "");
  take(true, "full", "");
  ExpectRestores(refs);
  // The newest backup as a qcow2 image, byte-identical to its reference.
  auto repo = Repository::Open(repo_dir_, RepositoryOptions{nullptr, true});
  ASSERT_TRUE(repo.has_value());
  const std::string q = dir_.File("restored.qcow2");
  auto st = live::RestoreToQcow2(**repo, "latest", q, PipelineOptions{});
  ASSERT_TRUE(st.has_value()) << st.error().message();
  std::string newest = IdToHex((*repo)->Latest()->id());
  EXPECT_EQ(RunCommand("qemu-img compare -q -f qcow2 -F raw " + q + " " + refs[newest]).exit_code, 0);
}

// strata killed (SIGKILL) at random moments of live backups: QEMU keeps
// running, nothing strata made stays after the next run, no bitmap is lost
// or left busy, and the next backup is complete (restores to the disk at its
// point in time).
TEST_F(LiveQmp, RandomKillsLoseNothing) {
  MakeDisk(256 << 20, 96 << 20);
  StartQemu();
  std::string ref;
  auto first = Backup(true, &ref);
  ASSERT_TRUE(first.has_value()) << first.error().message();
  // Kill delays cover a whole run of the CLI (start, cleanup, transaction,
  // export, read, commit, teardown).
  auto t0 = std::chrono::steady_clock::now();
  RunOk(Tool("strata") + " backup --repo " + repo_dir_ + " --qmp " + qmp_ + " --node disk0 --state-dir " + state_ +
        " --full >/dev/null");
  const int full_ms = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count());
  RandomWrites(30);
  t0 = std::chrono::steady_clock::now();
  RunOk(Tool("strata") + " backup --repo " + repo_dir_ + " --qmp " + qmp_ + " --node disk0 --state-dir " + state_ +
        " >/dev/null");
  const int inc_ms = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count());
  const int trials = std::getenv("STRATA_LIVE_KILL_TRIALS") ? std::atoi(std::getenv("STRATA_LIVE_KILL_TRIALS")) : 25;
  int killed_running = 0, finished_first = 0, scans = 0;
  for (int t = 0; t < trials; ++t) {
    SCOPED_TRACE("trial " + std::to_string(t) + " seed " + std::to_string(seed_));
    RandomWrites(static_cast<int>(rng_() % 40));
    const bool full = rng_() % 5 == 0;
    std::vector<std::string> argv = {Tool("strata"), "backup", "--repo", repo_dir_, "--qmp", qmp_,
                                     "--node", "disk0", "--state-dir", state_, "--chunk-size", "256K"};
    if (full) argv.push_back("--full");
    Child c = Child::Start(argv, dir_.File("killed.log"));
    const int delay = static_cast<int>(rng_() % ((full ? full_ms : inc_ms) + 20));
    std::this_thread::sleep_for(std::chrono::milliseconds(delay));
    RandomWrites(2);  // the guest keeps writing whatever strata does
    if (c.Alive()) {
      c.Kill(SIGKILL);
      ++killed_running;
    } else {
      ++finished_first;
    }
    c.Wait();
    ASSERT_TRUE(vm_.Alive()) << "QEMU died";
    ASSERT_TRUE(test_q_->Execute("query-status").has_value());
    // The bitmap the newest backup ends at is still there and recording.
    {
      // Twice in ~160 trials on a loaded machine the lock was still held
      // right after the killed process was reaped, by a holder not yet
      // identified (a release deferred by the kernel is the suspect): wait
      // for it briefly; a holder that stays is reported below.
      auto repo = Repository::Open(repo_dir_, RepositoryOptions{nullptr, true, std::chrono::seconds(5)});
      if (!repo.has_value()) {  // who holds the lock, for the report
        std::system(("lslocks -o PID,COMMAND,TYPE,PATH | grep -F '" + repo_dir_ + "' >&2; ps -eo pid,ppid,stat,args | grep -E 'strata|qemu' | grep -v grep >&2").c_str());
      }
      ASSERT_TRUE(repo.has_value()) << repo.error().message();
      const std::string want = (*repo)->Latest()->header.end.name;
      bool found = false;
      for (const auto& b : Bitmaps(*test_q_, "disk0")) {
        if (b.value("name", "") == want) found = b.value("recording", false);
      }
      ASSERT_TRUE(found) << "bitmap " << want << " lost after a kill at " << delay << " ms: "
                         << Bitmaps(*test_q_, "disk0").dump();
    }
    std::string r;
    auto next = Backup(false, &r);
    ASSERT_TRUE(next.has_value()) << next.error().message();
    scans += next->disks[0].mode == "scan";
    EXPECT_EQ(next->disks[0].mode, "incremental") << "a kill must never cost the chain";
    ExpectNoLeftovers(*test_q_, "disk0");
    EXPECT_LE(Bitmaps(*test_q_, "disk0").size(), 1u) << Bitmaps(*test_q_, "disk0").dump();
    ExpectRestores({{IdToHex(next->disks[0].backup.entry.id()), r}});
  }
  std::printf("kill trials: %d, killed while running %d, finished before the kill %d, scans %d (full run %d ms, incremental %d ms)\n",
              trials, killed_running, finished_first, scans, full_ms, inc_ms);
  EXPECT_GT(killed_running, trials / 2);
}

// The same dance against qemu-storage-daemon; the "guest" writes through a
// FUSE export of the node while the backup reads.
TEST_F(LiveQmp, StorageDaemon) {
  if (!HaveCommand("qemu-storage-daemon")) GTEST_SKIP() << "qemu-storage-daemon missing (qemu-system-common)";
  if (::access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/fuse not usable: no FUSE export for guest writes";
  MakeDisk(64 << 20, 16 << 20);
  const std::string fuse = dir_.File("fuse.img");
  WriteFileBytes(fuse, {});
  Child qsd = Child::Start({"qemu-storage-daemon", "--blockdev",
                            "driver=file,filename=" + disk_ + ",node-name=f0", "--blockdev",
                            "driver=qcow2,file=f0,node-name=disk0", "--export",
                            "type=fuse,id=fx,node-name=disk0,mountpoint=" + fuse + ",writable=on", "--chardev",
                            "socket,path=" + qmp_ + ",server=on,wait=off,id=c0", "--monitor", "chardev=c0",
                            "--chardev", "socket,path=" + tq_ + ",server=on,wait=off,id=c1", "--monitor",
                            "chardev=c1"},
                           dir_.File("qsd.log"));
  ASSERT_TRUE(WaitForPath(tq_));
  test_q_ = ConnectQmp(tq_);
  ASSERT_TRUE(test_q_);
  int fd = ::open(fuse.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  auto write_random = [&](int n) {
    for (int i = 0; i < n; ++i) {
      std::vector<uint8_t> buf((rng_() % 64 + 1) * 512, static_cast<uint8_t>(rng_()));
      uint64_t off = rng_() % ((size_ - buf.size()) / 512) * 512;
      ASSERT_EQ(::pwrite(fd, buf.data(), buf.size(), static_cast<off_t>(off)), static_cast<ssize_t>(buf.size()));
    }
    ::fsync(fd);
  };
  std::map<std::string, std::string> refs;
  for (int i = 0; i < 4; ++i) {
    auto repo = Repository::Open(repo_dir_);
    ASSERT_TRUE(repo.has_value());
    live::QmpSource src;
    src.socket = qmp_;
    src.node = "disk0";
    live::LiveOptions o;
    o.state_dir = state_;
    std::string ref;
    o.on_step = [&](const char* step) {
      if (std::string(step) == "export") {
        // No guest to pause: nothing writes but this test, and it writes
        // after this copy.
        ref = dir_.File("qref-" + std::to_string(i) + ".raw");
        RunOk("qemu-img convert -U -f qcow2 -O raw " + disk_ + " " + ref);
      }
      if (std::string(step) == "read") write_random(8);
    };
    auto r = live::BackupQemuNode(**repo, src, o);
    ASSERT_TRUE(r.has_value()) << r.error().message();
    EXPECT_EQ(r->disks[0].mode, i == 0 ? "full" : "incremental");
    refs[IdToHex(r->disks[0].backup.entry.id())] = ref;
    ExpectNoLeftovers(*test_q_, "disk0");
    write_random(16);
  }
  ::close(fd);
  ExpectRestores(refs);
}

}  // namespace
}  // namespace strata::testing

namespace strata::testing {
namespace {

// `strata backup --nbd` against qemu-nbd (the points named by the caller)
// and `strata restore --nbd` into a writable qemu-nbd export, through the CLI.
TEST(LiveNbd, BackupAndRestoreThroughQemuNbd) {
  if (!HaveCommand("qemu-nbd")) GTEST_SKIP() << "qemu-nbd missing";
  TempDir dir;
  const std::string img = dir.File("d.qcow2"), sock = dir.File("n.sock"), repo = dir.File("repo");
  const std::string S = Tool("strata");
  RunOk("qemu-img create -q -f qcow2 " + img + " 32M");
  RunOk("qemu-io -f qcow2 -c 'write -P 1 0 4M' -c 'write -P 2 20M 1M' " + img + " >/dev/null");
  RunOk(S + " init " + repo + " >/dev/null");
  RunOk("qemu-img bitmap --add -g 65536 " + img + " b1");  // records every write from here on
  auto serve = [&](const std::vector<std::string>& extra) {
    ::unlink(sock.c_str());
    std::vector<std::string> argv = {"qemu-nbd", "-f", "qcow2", "-k", sock};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back(img);
    Child c = Child::Start(argv, dir.File("nbd.log"));
    EXPECT_TRUE(WaitForPath(sock));
    return c;
  };
  const std::string uri = "nbd+unix:///?socket=" + sock;
  {
    Child s = serve({"-r", "-t"});
    RunOk(S + " backup --repo " + repo + " --nbd '" + uri + "' --full --end-point b1 --disk d >/dev/null");
    RunOk("qemu-img convert -U -f qcow2 -O raw " + img + " " + dir.File("ref0.raw"));
  }
  RunOk("qemu-io -f qcow2 -c 'write -P 3 1M 64k' -c 'write -P 4 28M 3M' " + img + " >/dev/null");
  {
    Child s = serve({"-r", "-t", "-B", "b1"});
    auto r = RunCommand(S + " backup --repo " + repo + " --nbd '" + uri + "' --bitmap b1 --disk d --json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto j = live::Json::parse(r.out);
    EXPECT_EQ(j["disks"][0]["mode"], "incremental");
    EXPECT_EQ(j["disks"][0]["changed_bytes"], (64 << 10) + (3 << 20));  // the writes after b1, nothing else
    RunOk("qemu-img convert -U -f qcow2 -O raw " + img + " " + dir.File("ref1.raw"));
  }
  RunOk(S + " restore --repo " + repo + " --disk d " + dir.File("out.raw") + " >/dev/null");
  EXPECT_TRUE(SameFiles(dir.File("out.raw"), dir.File("ref1.raw")));
  // Restore into a writable export of a disk full of other data.
  RunOk("qemu-img create -q -f qcow2 " + dir.File("t.qcow2") + " 32M");
  RunOk("qemu-io -f qcow2 -c 'write -P 9 0 32M' " + dir.File("t.qcow2") + " >/dev/null");
  {
    ::unlink(sock.c_str());
    Child t = Child::Start({"qemu-nbd", "-f", "qcow2", "-k", sock, dir.File("t.qcow2")}, dir.File("nbd.log"));
    ASSERT_TRUE(WaitForPath(sock));
    RunOk(S + " restore --repo " + repo + " --disk d --nbd '" + uri + "' >/dev/null");
    t.Wait();  // qemu-nbd exits when its one client leaves
  }
  RunOk("qemu-img convert -f qcow2 -O raw " + dir.File("t.qcow2") + " " + dir.File("t.raw"));
  EXPECT_TRUE(SameFiles(dir.File("t.raw"), dir.File("ref1.raw")));
  // The qcow2 restore of the full backup.
  RunOk(S + " restore --repo " + repo + " --backup " +
        live::Json::parse(RunOk(S + " list --repo " + repo + " --json"))[0]["id"].get<std::string>() +
        " --format qcow2 " + dir.File("r0.qcow2") + " >/dev/null");
  EXPECT_EQ(RunCommand("qemu-img compare -q -f qcow2 -F raw " + dir.File("r0.qcow2") + " " + dir.File("ref0.raw")).exit_code, 0);
}

}  // namespace
}  // namespace strata::testing
