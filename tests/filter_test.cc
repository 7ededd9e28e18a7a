// The nbdkit filter `strata` with real nbdkit and real clients (label
// "serve"): writes through `nbdkit --filter=strata file DISK` by nbdcopy and
// qemu-io over a unix socket, checkpoints and backups from other processes
// (`strata checkpoint|backup --tracker`, reaching the filter through its
// control socket) compared with a model of the disk and of what was written
// since each checkpoint; backups while a writer runs; nbdkit SIGKILLed in
// the middle of writes, after which the next backup must still restore
// byte-identically to the file; a qcow2 image behind qemu-nbd and nbdkit's
// nbd plugin. Every process is started by the test and
// stopped by its pid. Seeds are printed ($STRATA_SEED replays one).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/test_util.h"

namespace strata {
namespace {

using Json = nlohmann::json;
using testing::RunCommand;
using testing::RunOk;
using testing::ShellQuote;

constexpr uint64_t kGran = 64 * 1024;  // the filter's default tracker granularity

std::string S(const std::string& args) { return testing::Tool("strata") + " " + args; }
std::string Q(const std::string& s) { return ShellQuote(s); }
std::string FilterSo() { return std::string(STRATA_BIN_DIR) + "/plugins/nbdkit/nbdkit-strata-filter.so"; }

std::string Skip() {
  for (const char* c : {"nbdkit", "nbdcopy", "qemu-io"}) {
    if (!testing::HaveCommand(c)) return std::string(c) + " is not installed (scripts/setup.sh installs it)";
  }
  return "";
}

// A child process running `cmd` through /bin/sh (exec'd, so the pid is the
// command's), output to `log`. Stopped by pid.
class Child {
 public:
  Child(const std::string& cmd, const std::string& log) {
    pid_ = ::fork();
    if (pid_ == 0) {
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      ::execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }
  ~Child() { Stop(SIGTERM); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  pid_t pid() const { return pid_; }
  bool Running() {
    if (pid_ <= 0) return false;
    int st;
    pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      status_ = st;
      pid_ = -1;
      return false;
    }
    return true;
  }
  // Waits for the exit; the wait status.
  int Wait() {
    if (pid_ > 0) {
      ::waitpid(pid_, &status_, 0);
      pid_ = -1;
    }
    return status_;
  }
  // `sig`, then SIGKILL after 10 s; reaped.
  void Stop(int sig) {
    if (!Running()) return;
    ::kill(pid_, sig);
    for (int i = 0; i < 1000 && Running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (Running()) ::kill(pid_, SIGKILL);
    Wait();
  }

 private:
  pid_t pid_ = -1;
  int status_ = 0;
};

std::string File(const std::string& disk) { return "file " + Q(disk); }

// nbdkit -f --filter=strata PLUGIN... tracker=TRK on a unix socket.
class Nbdkit {
 public:
  Nbdkit(const std::string& dir, const std::string& plugin, const std::string& tracker,
         const std::string& extra = "") {
    static int n = 0;
    sock_ = dir + "/nbd" + std::to_string(n) + ".sock";
    log_ = dir + "/nbdkit" + std::to_string(n++) + ".log";
    child_ = std::make_unique<Child>("nbdkit -f --exit-with-parent -U " + Q(sock_) + " --filter=" + Q(FilterSo()) +
                                         " " + plugin + " tracker=" + Q(tracker) + " " + extra,
                                     log_);
    for (int i = 0; i < 1000; ++i) {
      struct stat st;
      if (::stat(sock_.c_str(), &st) == 0 && ::stat((tracker + "/control.sock").c_str(), &st) == 0) return;
      if (!child_->Running()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "nbdkit did not start: " << Log();
  }
  std::string uri() const { return "nbd+unix:///?socket=" + sock_; }
  pid_t pid() const { return child_->pid(); }
  void Stop() { child_->Stop(SIGTERM); }
  void Kill() { child_->Stop(SIGKILL); }
  std::string Log() const {
    std::ifstream in(log_);
    return std::string((std::istreambuf_iterator<char>(in)), {});
  }

 private:
  std::string sock_, log_;
  std::unique_ptr<Child> child_;
};

// A new sparse file of `size` bytes; 0 on success.
int MakeSparse(const std::string& path, uint64_t size) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return -1;
  int r = ::ftruncate(fd, static_cast<off_t>(size));
  ::close(fd);
  return r;
}

std::vector<uint8_t> ReadAll(const std::string& path) { return testing::ReadFileBytes(path); }

// Where two files first differ, for messages.
std::string FirstDifference(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  if (a.size() != b.size()) return "sizes " + std::to_string(a.size()) + " and " + std::to_string(b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) return "first difference at byte " + std::to_string(i) + " (block " + std::to_string(i / kGran) + ")";
  }
  return "equal";
}

// Restores the latest backup and compares it with `expect`.
void ExpectRestoreEquals(const std::string& repo, const std::string& out, const std::vector<uint8_t>& expect,
                         const std::string& what) {
  ::unlink(out.c_str());
  RunOk(S("restore --repo " + Q(repo) + " " + Q(out)));
  std::vector<uint8_t> got = ReadAll(out);
  EXPECT_TRUE(got == expect) << what << ": restore differs from the disk, " << FirstDifference(got, expect);
  ::unlink(out.c_str());
}

// 64 KiB blocks the tracker reports changed since `cp` (through the owner
// when one serves the directory).
std::set<uint64_t> ChangedBlocks(const std::string& tracker, const std::string& cp) {
  std::set<uint64_t> out;
  auto r = RunCommand(testing::Tool("extent-dump") + " --json --tracker " + Q(tracker) + " --since " + Q(cp));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  Json j = Json::parse(r.out, nullptr, false);
  if (!j.is_array()) return out;
  for (const Json& e : j) {
    uint64_t s = e["start"].get<uint64_t>(), l = e["length"].get<uint64_t>();
    for (uint64_t b = s / kGran; b < (s + l + kGran - 1) / kGran; ++b) out.insert(b);
  }
  return out;
}

// One random request for qemu-io and what it does to the model.
struct Op {
  int kind;  // 0 write pattern, 1 write zeros, 2 discard
  uint64_t off, len;
  uint8_t pattern;
  std::string Command() const {
    std::string range = std::to_string(off) + " " + std::to_string(len);
    if (kind == 0) return "write -P " + std::to_string(pattern) + " " + range;
    if (kind == 1) return "write -z " + range;
    return "discard " + range;
  }
};

Op RandomOp(std::mt19937_64& rng, uint64_t disk) {
  Op op;
  op.kind = rng() % 8 == 0 ? 1 : rng() % 8 == 0 ? 2 : 0;
  op.len = 512 * (1 + rng() % (rng() % 4 == 0 ? 1024 : 16));
  op.off = (rng() % ((disk - op.len) / 512 + 1)) * 512;
  op.pattern = static_cast<uint8_t>(1 + rng() % 255);
  return op;
}

std::string QemuIo(const std::string& uri, const std::vector<Op>& ops) {
  std::string cmd = "qemu-io -f raw";
  for (const Op& op : ops) cmd += " -c " + Q(op.Command());
  return cmd + " " + Q(uri);
}

class FilterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = Skip(); !why.empty()) GTEST_SKIP() << why;
    disk_ = tmp_.File("disk.raw");
    trk_ = tmp_.File("trk");
    repo_ = tmp_.File("repo");
    out_ = tmp_.File("out.raw");
    RunOk(S("init " + Q(repo_)));
  }
  testing::TempDir tmp_;
  std::string disk_, trk_, repo_, out_;
};

// Random writes, zeroes and discards through the filter, checkpoints and
// backups from other processes, against a model: the file equals the
// model (every request reached the plugin); every block written since a
// checkpoint is in the tracker's changes since it; every backup restores
// equal to the disk.
TEST_F(FilterTest, RandomSequenceAgainstModel) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("seed " + std::to_string(seed) + " (STRATA_SEED replays it)");
  std::printf("filter model: seed %" PRIu64 "\n", seed);
  std::mt19937_64 rng(seed);
  constexpr uint64_t kDisk = 24ull << 20;
  // Initial content: random data in some MiB-chunks, holes elsewhere; copied
  // in through the filter by nbdcopy.
  std::vector<uint8_t> model(kDisk, 0);
  {
    std::string src = tmp_.File("src.raw");
    for (uint64_t c = 0; c < kDisk; c += 1 << 20) {
      if (rng() % 3 != 0) continue;
      for (uint64_t i = c; i < c + (1 << 20); i += 8) {
        uint64_t v = rng();
        std::memcpy(&model[i], &v, 8);
      }
    }
    testing::WriteFileBytes(src, model);
    ASSERT_EQ(MakeSparse(disk_, kDisk), 0) << "create " << disk_;
    Nbdkit srv(tmp_.path(), File(disk_), trk_);
    RunOk("nbdcopy " + Q(src) + " " + Q(srv.uri()));
    RunOk(S("backup --repo " + Q(repo_) + " --full --tracker " + Q(trk_) + " " + Q(disk_)));
    srv.Stop();
  }
  ASSERT_TRUE(ReadAll(disk_) == model) << "nbdcopy through the filter";
  ExpectRestoreEquals(repo_, out_, model, "full backup");

  Nbdkit srv(tmp_.path(), File(disk_), trk_);
  std::map<std::string, std::set<uint64_t>> written;  // checkpoint -> blocks written since
  int cps = 0, backups = 0;
  for (int round = 0; round < 12; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    std::vector<Op> ops;
    int n = 1 + static_cast<int>(rng() % 40);
    for (int i = 0; i < n; ++i) ops.push_back(RandomOp(rng, kDisk));
    RunOk(QemuIo(srv.uri(), ops));
    std::vector<uint8_t> file = ReadAll(disk_);
    for (const Op& op : ops) {
      if (op.kind == 0) std::memset(&model[op.off], op.pattern, op.len);
      if (op.kind == 1) std::memset(&model[op.off], 0, op.len);
      // A discard leaves the content unspecified (the file plugin punches a
      // hole): take what the file now holds.
      if (op.kind == 2) std::memcpy(&model[op.off], &file[op.off], op.len);
      for (auto& [cp, blocks] : written) {
        for (uint64_t b = op.off / kGran; b <= (op.off + op.len - 1) / kGran; ++b) blocks.insert(b);
      }
    }
    ASSERT_TRUE(file == model) << "the disk after round " << round << ": " << FirstDifference(file, model);
    // Every block written since each checkpoint is reported changed.
    for (const auto& [cp, blocks] : written) {
      std::set<uint64_t> changed = ChangedBlocks(trk_, cp);
      for (uint64_t b : blocks) {
        ASSERT_TRUE(changed.count(b)) << "block " << b << " written since " << cp << " is not in its changes";
      }
    }
    switch (rng() % 3) {
      case 0: {
        std::string cp = "cp" + std::to_string(cps++);
        RunOk(S("checkpoint --tracker " + Q(trk_) + " " + cp));
        written[cp];
        break;
      }
      case 1: {
        auto r = RunCommand(S("backup --json --repo " + Q(repo_) + " --tracker " + Q(trk_) + " " + Q(disk_)));
        ASSERT_EQ(r.exit_code, 0) << r.err;
        ++backups;
        ExpectRestoreEquals(repo_, out_, model, "incremental after round " + std::to_string(round));
        break;
      }
      default:
        break;
    }
  }
  // The checkpoints from other processes are in the owner's tracker.
  Json list = Json::parse(RunOk(S("tracker list --json --tracker " + Q(trk_))));
  EXPECT_EQ(list["checkpoints"].size(), 1u + cps + backups);
  std::printf("filter model: %d checkpoints, %d incrementals\n", cps, backups);

  // A backup while a writer runs, then one after it: the second restores
  // equal to the disk (a write racing the first checkpoint is in one of
  // the two).
  {
    std::vector<Op> ops;
    for (int i = 0; i < 400; ++i) ops.push_back(RandomOp(rng, kDisk));
    Child writer(QemuIo(srv.uri(), ops), tmp_.File("writer.log"));
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 200));
    RunOk(S("backup --repo " + Q(repo_) + " --tracker " + Q(trk_) + " " + Q(disk_)));
    int st = writer.Wait();
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "writer status " << st;
    RunOk(S("backup --repo " + Q(repo_) + " --tracker " + Q(trk_) + " " + Q(disk_)));
    ExpectRestoreEquals(repo_, out_, ReadAll(disk_), "backup after a concurrent writer");
  }
  // Stopped cleanly: the socket is gone and the CLI opens the tracker itself.
  srv.Stop();
  struct stat st;
  EXPECT_NE(::stat((trk_ + "/control.sock").c_str(), &st), 0) << "control.sock left after a clean stop";
  Json after = Json::parse(RunOk(S("tracker list --json --tracker " + Q(trk_))));
  EXPECT_TRUE(after["clean_shutdown"].get<bool>());
  RunOk(S("backup --repo " + Q(repo_) + " --tracker " + Q(trk_) + " " + Q(disk_)));
  ExpectRestoreEquals(repo_, out_, ReadAll(disk_), "backup without an owner");
}

// nbdkit SIGKILLed while a client writes: whatever reached the file
// (acknowledged or not) is in the next backup, taken either without an
// owner (the CLI recovers the tracker from its intent log) or through a
// restarted filter (which recovers it when it opens).
TEST_F(FilterTest, SigkillMidWriteLosesNothing) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("seed " + std::to_string(seed) + " (STRATA_SEED replays it)");
  std::printf("filter kill: seed %" PRIu64 "\n", seed);
  std::mt19937_64 rng(seed);
  constexpr uint64_t kDisk = 64ull << 20;
  ASSERT_EQ(MakeSparse(disk_, kDisk), 0);
  {
    Nbdkit srv(tmp_.path(), File(disk_), trk_);
    RunOk(S("backup --repo " + Q(repo_) + " --full --tracker " + Q(trk_) + " " + Q(disk_)));
  }
  for (int iter = 0; iter < 6; ++iter) {
    SCOPED_TRACE("iteration " + std::to_string(iter));
    auto srv = std::make_unique<Nbdkit>(tmp_.path(), File(disk_), trk_);
    std::vector<Op> ops;
    for (int i = 0; i < 3000; ++i) {
      Op op = RandomOp(rng, kDisk);
      if (op.kind == 2) op.kind = 0;
      ops.push_back(op);
    }
    Child writer(QemuIo(srv->uri(), ops), tmp_.File("writer.log"));
    std::this_thread::sleep_for(std::chrono::milliseconds(30 + rng() % 300));
    bool writing = writer.Running();
    srv->Kill();
    writer.Wait();
    EXPECT_TRUE(writing) << "the writer had finished before the kill (make it longer)";
    std::vector<uint8_t> file = ReadAll(disk_);
    if (iter % 2 == 0) {
      // No owner: the stale socket does not answer; the CLI opens the
      // directory and recovers it.
      Json list = Json::parse(RunOk(S("tracker list --json --tracker " + Q(trk_))));
      EXPECT_FALSE(list["clean_shutdown"].get<bool>());
      EXPECT_FALSE(list["active_unknown"].get<bool>());
      RunOk(S("backup --repo " + Q(repo_) + " --tracker " + Q(trk_) + " " + Q(disk_)));
    } else {
      Nbdkit again(tmp_.path(), File(disk_), trk_);
      RunOk(S("backup --repo " + Q(repo_) + " --tracker " + Q(trk_) + " " + Q(disk_)));
      again.Stop();
    }
    ExpectRestoreEquals(repo_, out_, file, "after SIGKILL");
  }
}

// The owner holds the tracker: commands that need the directory itself
// are refused with a clear error; the rest go through the owner.
TEST_F(FilterTest, OwnerHoldsTheLock) {
  ASSERT_EQ(MakeSparse(disk_, 8 << 20), 0);
  Nbdkit srv(tmp_.path(), File(disk_), trk_);
  auto r = RunCommand(S("tracker resize --tracker " + Q(trk_) + " --size 16M"));
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("in use by another process"), std::string::npos) << r.err;
  Json list = Json::parse(RunOk(S("tracker list --json --tracker " + Q(trk_))));
  EXPECT_EQ(list["disk_size"].get<uint64_t>(), 8u << 20);
  RunOk(S("checkpoint --tracker " + Q(trk_) + " one"));
  auto dup = RunCommand(S("checkpoint --tracker " + Q(trk_) + " one"));
  EXPECT_EQ(dup.exit_code, 1);
  EXPECT_NE(dup.err.find("already exists"), std::string::npos) << dup.err;
  RunOk(S("tracker remove --tracker " + Q(trk_) + " one"));
  // A second nbdkit on the same tracker does not start.
  Child second("nbdkit -f --exit-with-parent -U " + Q(tmp_.File("second.sock")) + " --filter=" + Q(FilterSo()) +
                   " file " + Q(disk_) + " tracker=" + Q(trk_),
               tmp_.File("second.log"));
  int st = second.Wait();
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) != 0);
  std::ifstream in(tmp_.File("second.log"));
  std::string log((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(log.find("in use by another process"), std::string::npos) << log;
  // Nor one whose export has another size than the tracker.
  std::string other = tmp_.File("other.raw");
  ASSERT_EQ(MakeSparse(other, 4 << 20), 0);
  srv.Stop();
  Child wrong("nbdkit -f --exit-with-parent -U " + Q(tmp_.File("wrong.sock")) + " --filter=" + Q(FilterSo()) +
                  " file " + Q(other) + " tracker=" + Q(trk_),
              tmp_.File("wrong.log"));
  st = wrong.Wait();
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) != 0);
}

// A qcow2 disk (nbdkit 1.32 has no qcow2 decoder): qemu-nbd serves it,
// the nbd plugin forwards to it, the filter tracks in between. Backups are
// taken with both servers stopped (qemu-nbd caches qcow2 metadata), so the
// tracker is opened directly; the incremental reads only what the filter
// marked and restores equal to qemu-img's view of the image.
TEST_F(FilterTest, Qcow2BehindQemuNbd) {
  if (!testing::HaveCommand("qemu-nbd")) GTEST_SKIP() << "qemu-nbd is not installed";
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("seed " + std::to_string(seed) + " (STRATA_SEED replays it)");
  std::printf("filter qcow2: seed %" PRIu64 "\n", seed);
  std::mt19937_64 rng(seed);
  constexpr uint64_t kDisk = 32ull << 20;
  std::string qcow2 = tmp_.File("disk.qcow2");
  RunOk("qemu-img create -q -f qcow2 " + Q(qcow2) + " " + std::to_string(kDisk));
  uint64_t written = 0;
  auto round = [&](int n) {
    std::string qsock = tmp_.File("qemu-nbd.sock");
    Child qemu("qemu-nbd --persistent --shared=4 -f qcow2 -k " + Q(qsock) + " " + Q(qcow2), tmp_.File("qemu-nbd.log"));
    struct stat st;
    for (int i = 0; i < 500 && ::stat(qsock.c_str(), &st) != 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    {
      Nbdkit srv(tmp_.path(), "nbd socket=" + Q(qsock), trk_);
      std::vector<Op> ops;
      for (int i = 0; i < n; ++i) {
        Op op = RandomOp(rng, kDisk);
        written += op.len;
        ops.push_back(op);
      }
      RunOk(QemuIo(srv.uri(), ops));
      srv.Stop();
    }
    qemu.Stop(SIGTERM);
  };
  round(30);
  RunOk(S("backup --repo " + Q(repo_) + " --full --tracker " + Q(trk_) + " " + Q(qcow2)));
  written = 0;
  round(20);
  Json b = Json::parse(RunOk(S("backup --json --repo " + Q(repo_) + " --tracker " + Q(trk_) + " " + Q(qcow2))));
  // Only what the 20 requests touched, rounded out to 64 KiB blocks.
  EXPECT_LE(b["changed_bytes"].get<uint64_t>(), written + 20 * 2 * kGran);
  EXPECT_GT(b["changed_bytes"].get<uint64_t>(), 0u);
  std::string ref = tmp_.File("ref.raw");
  RunOk("qemu-img convert -O raw " + Q(qcow2) + " " + Q(ref));
  ExpectRestoreEquals(repo_, out_, ReadAll(ref), "qcow2 behind qemu-nbd");
}

}  // namespace
}  // namespace strata
