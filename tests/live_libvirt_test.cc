// Live backups through libvirt against a real libvirtd and a real QEMU
// domain (label "live"). The test starts its own virtlogd and libvirtd
// (stopped by pid) and skips with the reason when it cannot: not root, the
// daemons or /etc/libvirt/qemu.conf with `cgroup_controllers = [ ]` missing
// (scripts/setup.sh installs and writes them), or a libvirtd it did not start
// already running (never touched). The domain is a type='qemu' q35 machine
// with 256 MiB and one SATA qcow2 disk, sitting in its firmware; guest
// writes go through `virsh qemu-monitor-command --hmp 'qemu-io -d sata0-0-0'`.
//
// STRATA_LIVE_KILL_TRIALS sets the number of kill trials (default 25).
#include <sys/socket.h>
#include <sys/un.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "strata/jobs.h"
#include "tests/live_util.h"

namespace strata::testing {
namespace {

const char kUri[] = "qemu:///system";

bool SocketAnswers(const std::string& path) {
  return RunCommand("virsh -c " + std::string(kUri) + " version >/dev/null 2>&1").exit_code == 0 &&
         ::access(path.c_str(), F_OK) == 0;
}

bool Accepts(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a = {};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

pid_t ReadPid(const std::string& f) {
  std::ifstream in(f);
  pid_t p = -1;
  in >> p;
  return p;
}

void StopDaemon(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGTERM);
  for (int i = 0; i < 200 && ::kill(pid, 0) == 0; ++i) {
    // Daemonized: not our child, so wait for it to go.
    int st;
    ::waitpid(pid, &st, WNOHANG);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (::kill(pid, 0) == 0) ::kill(pid, SIGKILL);
}

class LiveLibvirt : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (a system libvirtd)";
    if (!HaveCommand("libvirtd") || !HaveCommand("virtlogd") || !HaveCommand("virsh")) {
      GTEST_SKIP() << "libvirtd, virtlogd or virsh missing (scripts/setup.sh installs them)";
    }
    std::ifstream conf("/etc/libvirt/qemu.conf");
    std::stringstream ss;
    ss << conf.rdbuf();
    if (ss.str().find("cgroup_controllers = [ ]") == std::string::npos) {
      GTEST_SKIP() << "/etc/libvirt/qemu.conf lacks 'cgroup_controllers = [ ]' (scripts/setup.sh writes it)";
    }
    if (RunCommand("getent passwd libvirt-qemu").exit_code != 0) GTEST_SKIP() << "no libvirt-qemu user (scripts/setup.sh)";
    // A socket that accepts connections belongs to a running daemon (a
    // stale one, left by a daemon that died, does not).
    if (Accepts("/run/libvirt/libvirt-sock") || Accepts("/run/libvirt/virtlogd-sock")) {
      GTEST_SKIP() << "a libvirtd or virtlogd this test did not start is running (/run/libvirt): not touched";
    }
    ::chmod(dir_.path().c_str(), 0755);  // QEMU runs as libvirt-qemu and must reach the disk
    RunOk("mkdir -p /var/log/libvirt/qemu");
    RunOk("virtlogd -d -p " + dir_.File("virtlogd.pid"));
    RunOk("libvirtd -d -p " + dir_.File("libvirtd.pid"));
    ASSERT_TRUE(WaitForPath(dir_.File("libvirtd.pid")));
    virtlogd_ = ReadPid(dir_.File("virtlogd.pid"));
    for (int i = 0; i < 200 && !SocketAnswers("/run/libvirt/libvirt-sock"); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    libvirtd_ = ReadPid(dir_.File("libvirtd.pid"));
    ASSERT_GT(libvirtd_, 0);
    seed_ = TestSeed();
    rng_.seed(seed_);
    std::printf("seed %llu\n", (unsigned long long)seed_);
    dom_ = "strata-test-" + std::to_string(::getpid());
    disk_ = dir_.File("disk.qcow2");
    repo_dir_ = dir_.File("repo");
    state_ = dir_.File("state");
    ASSERT_TRUE(Repository::Init(repo_dir_).ok());
  }

  void TearDown() override {
    if (started_) {
      (void)RunCommand(Virsh("destroy " + dom_));
      (void)RunCommand(Virsh("undefine " + dom_ + " --checkpoints-metadata"));
    }
    // If libvirtd died, the domain's QEMU (ours: started for this test) is
    // stopped by its pid.
    if (qemu_pid_ > 0 && ::kill(qemu_pid_, 0) == 0) StopDaemon(qemu_pid_);
    StopDaemon(libvirtd_);
    StopDaemon(virtlogd_);
  }

  std::string Virsh(const std::string& args) { return "virsh -q -c " + std::string(kUri) + " " + args; }

  void StartDomain(uint64_t size, uint64_t data) {
    size_ = size;
    RunOk("qemu-img create -q -f qcow2 " + disk_ + " " + std::to_string(size));
    std::string cmds;
    for (uint64_t at = 0; at < data; at += 1 << 20) {
      cmds += " -c 'write -P " + std::to_string(rng_() % 251 + 1) + " " + std::to_string(at * 2 % size) + " 1M'";
    }
    RunOk("qemu-io -f qcow2" + cmds + " " + disk_ + " >/dev/null");
    const std::string xml = dir_.File("dom.xml");
    std::ofstream(xml) << "<domain type='qemu'><name>" << dom_ << "</name><memory unit='MiB'>256</memory>"
                       << "<os><type arch='x86_64' machine='q35'>hvm</type></os><devices>"
                       << "<emulator>/usr/bin/qemu-system-x86_64</emulator>"
                       << "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='" << disk_
                       << "'/><target dev='sda' bus='sata'/></disk></devices></domain>";
    // Persistent, so its checkpoints outlive a crash of its QEMU.
    RunOk(Virsh("define " + xml) + " >/dev/null");
    started_ = true;
    RunOk(Virsh("start " + dom_) + " >/dev/null");
    qemu_pid_ = ReadPid("/run/libvirt/qemu/" + dom_ + ".pid");
  }

  void RandomWrites(int n) {
    std::string all;
    for (int i = 0; i < n; ++i) {
      uint64_t len = (rng_() % 256 + 1) * 512;
      uint64_t off = rng_() % ((size_ - len) / 512) * 512;
      RunOk(Virsh("qemu-monitor-command " + dom_ + " --hmp 'qemu-io -d sata0-0-0 \"write -P " +
                  std::to_string(rng_() % 255 + 1) + " " + std::to_string(off) + " " + std::to_string(len) + "\"'") +
            " >/dev/null");
    }
  }

  std::string Reference() {
    const std::string ref = dir_.File("ref-" + std::to_string(refs_++) + ".raw");
    RunOk(Virsh("suspend " + dom_) + " >/dev/null");
    RunOk("qemu-img convert -U -f qcow2 -O raw " + disk_ + " " + ref);
    RunOk(Virsh("resume " + dom_) + " >/dev/null");
    return ref;
  }

  Result<live::LiveResult> Backup(bool full, std::string* ref) {
    auto repo = Repository::Open(repo_dir_);
    if (!repo) return repo.error();
    live::LibvirtSource src;
    src.domain = dom_;
    src.uri = kUri;
    live::LiveOptions o;
    o.state_dir = state_;
    o.full = full;
    o.pipeline.chunk_size = 256 << 10;
    int in_read = 0;
    o.on_step = [&](const char* step) {
      if (std::string(step) == "transaction") *ref = Reference();  // nothing writes until "read"
      if (std::string(step) == "read") RandomWrites(3);
    };
    o.pipeline.progress = [&](uint64_t, uint64_t) {
      if (in_read++ < 2) RandomWrites(1);
    };
    return live::BackupLibvirtDomain(**repo, src, o);
  }

  void ExpectRestores(const std::map<std::string, std::string>& refs) {
    auto repo = Repository::Open(repo_dir_, RepositoryOptions{nullptr, true});
    ASSERT_TRUE(repo.has_value());
    for (const auto& [id, ref] : refs) {
      const std::string out = dir_.File("restored.raw");
      ::unlink(out.c_str());
      auto st = RestoreFromRepository(**repo, id, out, PipelineOptions{});
      ASSERT_TRUE(st.has_value()) << st.error().message();
      EXPECT_TRUE(SameFiles(out, ref)) << "backup " << id << " differs from the disk at its point (seed " << seed_ << ")";
    }
  }

  // No backup job, one strata checkpoint, no busy or disabled bitmap.
  void ExpectClean() {
    EXPECT_NE(RunCommand(Virsh("backup-dumpxml " + dom_)).exit_code, 0) << "a backup job is still running";
    auto cps = RunCommand(Virsh("checkpoint-list --name " + dom_));
    int n = 0;
    std::istringstream in(cps.out);
    for (std::string l; std::getline(in, l);) n += l.rfind("strata-", 0) == 0;
    EXPECT_EQ(n, 1) << cps.out;
    auto nodes = RunCommand(Virsh("qemu-monitor-command " + dom_ + " '{\"execute\":\"query-named-block-nodes\"}'"));
    auto j = live::Json::parse(nodes.out, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << nodes.out;
    for (const auto& b : j["return"]) {
      if (!b.contains("dirty-bitmaps")) continue;
      for (const auto& m : b["dirty-bitmaps"]) {
        EXPECT_FALSE(m.value("busy", false)) << m.dump();
        EXPECT_TRUE(m.value("recording", false)) << m.dump();
      }
    }
  }

  TempDir dir_;
  pid_t libvirtd_ = -1, virtlogd_ = -1, qemu_pid_ = -1;
  bool started_ = false;
  uint64_t seed_ = 0, size_ = 0;
  std::mt19937_64 rng_;
  std::string dom_, disk_, repo_dir_, state_;
  int refs_ = 0;
};

TEST_F(LiveLibvirt, FullIncrementalsMissingCheckpointAndCrash) {
  StartDomain(64 << 20, 16 << 20);
  std::map<std::string, std::string> refs;
  auto take = [&](bool full, const std::string& mode, const std::string& note) {
    std::string ref;
    auto r = Backup(full, &ref);
    ASSERT_TRUE(r.has_value()) << r.error().message();
    ASSERT_EQ(r->disks.size(), 1u);
    EXPECT_EQ(r->disks[0].mode, mode);
    std::string notes;
    for (const auto& n : r->disks[0].notes) notes += n + "\n";
    if (!note.empty()) {
      EXPECT_NE(notes.find(note), std::string::npos) << notes;
    }
    EXPECT_EQ(r->disks[0].backup.entry.header.end.kind, PointKind::kLibvirtCheckpoint);
    refs[IdToHex(r->disks[0].backup.entry.id())] = ref;
    ExpectClean();
  };
  take(false, "full", "taking a full backup");
  for (int i = 0; i < 3; ++i) {
    RandomWrites(10);
    take(false, "incremental", "");
  }
  // The checkpoint the chain ends at is deleted behind strata's back.
  auto cps = RunCommand(Virsh("checkpoint-list --name " + dom_));
  std::string cp = cps.out.substr(0, cps.out.find('\n'));
  RunOk(Virsh("checkpoint-delete " + dom_ + " " + cp) + " >/dev/null");
  RandomWrites(10);
  take(false, "scan", "is gone");
  RandomWrites(10);
  take(false, "incremental", "");
  // A clean restart keeps the bitmaps; a crash of QEMU (SIGKILL of the
  // domain's own QEMU, by its pid) leaves them inconsistent: a scan, said so.
  RunOk(Virsh("shutdown " + dom_) + " >/dev/null");
  (void)RunCommand(Virsh("destroy " + dom_));
  RunOk(Virsh("start " + dom_) + " >/dev/null");
  RandomWrites(5);
  take(false, "incremental", "");
  RandomWrites(5);
  ::kill(ReadPid("/run/libvirt/qemu/" + dom_ + ".pid"), SIGKILL);
  for (int i = 0; i < 100 && RunCommand(Virsh("domstate " + dom_)).out.find("running") != std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  RunOk(Virsh("start " + dom_) + " >/dev/null");
  qemu_pid_ = ReadPid("/run/libvirt/qemu/" + dom_ + ".pid");
  RandomWrites(5);
  take(false, "scan", "missing or inconsistent");
  RandomWrites(5);
  take(false, "incremental", "");
  ExpectRestores(refs);
}

TEST_F(LiveLibvirt, RandomKillsLoseNothing) {
  StartDomain(128 << 20, 48 << 20);
  std::string ref;
  ASSERT_TRUE(Backup(true, &ref).has_value());
  auto timed = [&](const std::string& extra) {
    auto t0 = std::chrono::steady_clock::now();
    RunOk(Tool("strata") + " backup --repo " + repo_dir_ + " --libvirt " + dom_ + " --uri " + kUri +
          " --state-dir " + state_ + extra + " >/dev/null");
    return static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count());
  };
  const int full_ms = timed(" --full");
  RandomWrites(5);
  const int inc_ms = timed("");
  const int trials = std::getenv("STRATA_LIVE_KILL_TRIALS") ? std::atoi(std::getenv("STRATA_LIVE_KILL_TRIALS")) : 25;
  int killed_running = 0;
  for (int t = 0; t < trials; ++t) {
    SCOPED_TRACE("trial " + std::to_string(t) + " seed " + std::to_string(seed_));
    RandomWrites(static_cast<int>(rng_() % 6));
    const bool full = rng_() % 5 == 0;
    std::vector<std::string> argv = {Tool("strata"), "backup", "--repo", repo_dir_, "--libvirt", dom_, "--uri",
                                     kUri, "--state-dir", state_, "--chunk-size", "256K"};
    if (full) argv.push_back("--full");
    Child c = Child::Start(argv, dir_.File("killed.log"));
    std::this_thread::sleep_for(std::chrono::milliseconds(rng_() % ((full ? full_ms : inc_ms) + 20)));
    if (c.Alive()) {
      c.Kill(SIGKILL);
      ++killed_running;
    }
    c.Wait();
    auto state = RunCommand(Virsh("domstate " + dom_));
    ASSERT_NE(state.out.find("running"), std::string::npos) << state.out << state.err;
    std::string r;
    auto next = Backup(false, &r);
    ASSERT_TRUE(next.has_value()) << next.error().message();
    EXPECT_EQ(next->disks[0].mode, "incremental") << "a kill must never cost the chain";
    ExpectClean();
    ExpectRestores({{IdToHex(next->disks[0].backup.entry.id()), r}});
  }
  std::printf("libvirt kill trials: %d, killed while running %d (full %d ms, incremental %d ms)\n", trials,
              killed_running, full_ms, inc_ms);
  EXPECT_GT(killed_running, trials / 2);
}

}  // namespace
}  // namespace strata::testing
