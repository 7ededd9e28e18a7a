// `--qmp ... --qga SOCKET --quiesce-mount PATH` with a real QEMU and a real
// qemu-ga (label "live", lock fsfreeze like the other freezing tests). The
// agent runs on the host, so the "guest" filesystem is a loop-mounted ext4
// the test makes; nothing else is ever frozen. Checks: the backup reports
// the freeze, the filesystem is thawed afterwards, and a freeze left by a
// killed run (its record in the state directory) is thawed by the next run.
#include <signal.h>

#include "engine/quiesce/qga.h"
#include "tests/live_util.h"
#include "tests/quiesce_loop_mount.h"

namespace strata::testing {
namespace {

using live::Json;
using quiesce::LoopMount;
using quiesce::QgaClient;
using quiesce::SkipReason;

class HostAgent {
 public:
  explicit HostAgent(const std::string& dir) {
    sock_ = dir + "/qga.sock";
    const std::string pidfile = dir + "/qga.pid";
    RunCommand("qemu-ga -m unix-listen -p " + ShellQuote(sock_) + " -f " + ShellQuote(pidfile) + " -t " +
               ShellQuote(dir) + " -l " + ShellQuote(dir + "/qga.log") + " -d");
    WaitForPath(pidfile);
    WaitForPath(sock_);
    pid_ = std::atoi(RunCommand("cat " + ShellQuote(pidfile)).out.c_str());
  }
  ~HostAgent() {
    if (pid_ > 0) ::kill(pid_, SIGTERM);  // by pid
  }
  bool ok() const { return pid_ > 0; }
  const std::string& socket() const { return sock_; }

 private:
  std::string sock_;
  pid_t pid_ = 0;
};

std::string FreezeStatus(const std::string& sock) {
  auto c = QgaClient::Connect(sock, std::chrono::seconds(10));
  if (!c) return "error: " + c.error().message();
  auto s = (*c)->FreezeStatus();
  return s ? *s : "error: " + s.error().message();
}

TEST(LiveQuiesce, AgentFreezeCoversTheTransactionAndIsRecovered) {
  std::string why = SkipReason("ext4");
  if (!why.empty()) GTEST_SKIP() << why;
  if (!HaveCommand("qemu-ga") || !HaveCommand("qemu-system-x86_64")) GTEST_SKIP() << "qemu-ga or QEMU missing";
  TempDir dir, agent_dir;
  LoopMount lm(dir, "ext4");
  ASSERT_TRUE(lm.ok());
  HostAgent ga(agent_dir.path());
  if (!ga.ok()) GTEST_SKIP() << "qemu-ga did not start outside a VM";
  const std::string disk = dir.File("disk.qcow2"), qmp = dir.File("qmp.sock"), state = dir.File("state");
  RunOk("qemu-img create -q -f qcow2 " + disk + " 16M");
  RunOk("qemu-io -f qcow2 -c 'write -P 5 0 2M' " + disk + " >/dev/null");
  Child vm = Child::Start({"qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none", "-accel", "tcg",
                           "-qmp", "unix:" + qmp + ",server=on,wait=off", "-drive",
                           "if=none,id=drive0,node-name=disk0,file=" + disk + ",format=qcow2"},
                          dir.File("qemu.log"));
  ASSERT_TRUE(WaitForPath(qmp));
  ASSERT_TRUE(Repository::Init(dir.File("repo")).ok());
  live::QmpSource src;
  src.socket = qmp;
  src.node = "disk0";
  src.qga_socket = ga.socket();
  src.quiesce = true;
  src.quiesce_mounts = {lm.mnt()};
  live::LiveOptions o;
  o.state_dir = state;
  {
    auto repo = Repository::Open(dir.File("repo"));
    ASSERT_TRUE(repo.has_value());
    auto r = live::BackupQemuNode(**repo, src, o);
    ASSERT_TRUE(r.has_value()) << r.error().message();
    EXPECT_TRUE(r->quiesced);
    std::string notes;
    for (const auto& n : r->notes) notes += n + "\n";
    EXPECT_NE(notes.find("froze 1 guest filesystem"), std::string::npos) << notes;
  }
  EXPECT_EQ(FreezeStatus(ga.socket()), "thawed");
  EXPECT_FALSE(quiesce::loop_mount_internal::IsFrozen(lm.mnt()));
  // A run killed inside the window: its record names the agent, the guest
  // stays frozen. The next run thaws it first.
  {
    auto c = QgaClient::Connect(ga.socket(), std::chrono::seconds(10));
    ASSERT_TRUE(c.has_value());
    ASSERT_TRUE((*c)->FreezeList({lm.mnt()}).has_value());
  }
  ASSERT_EQ(FreezeStatus(ga.socket()), "frozen");
  const std::string qkey = RunCommand("ls " + state + " | sed -n 's/^q-\\(.*\\)\\.lock$/\\1/p'").out;
  ASSERT_FALSE(qkey.empty());
  WriteFileBytes(state + "/q-" + qkey.substr(0, qkey.find('\n')) + ".frozen",
                 std::vector<uint8_t>(ga.socket().begin(), ga.socket().end()));
  src.quiesce = false;  // the next run does not freeze: only the recovery thaws
  src.quiesce_mounts.clear();
  auto repo = Repository::Open(dir.File("repo"));
  ASSERT_TRUE(repo.has_value());
  auto r = live::BackupQemuNode(**repo, src, o);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  std::string notes;
  for (const auto& n : r->notes) notes += n + "\n";
  EXPECT_NE(notes.find("thawed the guest filesystems a killed run had frozen"), std::string::npos) << notes;
  EXPECT_EQ(FreezeStatus(ga.socket()), "thawed");
  EXPECT_EQ(r->disks[0].mode, "incremental");
}

}  // namespace
}  // namespace strata::testing
