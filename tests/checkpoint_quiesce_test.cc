// strata checkpoint --quiesce on a real ext4 filesystem that the test makes
// and mounts itself (root and loop devices needed; skipped otherwise). The
// freeze is confined to the test's own directory.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "tests/loop_fs.h"
#include "tests/test_util.h"

namespace strata {
namespace {

using testing::RunCommand;
using testing::RunOk;
using testing::ShellQuote;

std::string S(const std::string& args) { return testing::Tool("strata") + " " + args; }

// ext4 on a loop device in the test's own directory.
struct LoopExt4 : testing::LoopFs {
  explicit LoopExt4(const testing::TempDir& dir) : testing::LoopFs(dir.path(), "ext4", "mkfs.ext4 -q -F", "") {}
};

TEST(CheckpointQuiesce, FreezesChecksAndThaws) {
  testing::TempDir dir;
  LoopExt4 fs(dir);
  if (!fs.skip().empty()) GTEST_SKIP() << fs.skip();
  std::string trk = dir.File("trk");
  RunOk(S("tracker init --tracker " + ShellQuote(trk) + " --size 1G"));
  std::string marker = dir.File("exec-ran");
  std::string conf = " --confine " + ShellQuote(dir.path()) + " --state-dir " + ShellQuote(dir.File("qstate"));
  auto r = RunCommand(S("checkpoint --json --tracker " + ShellQuote(trk) + " cp1 --quiesce " +
                        ShellQuote(fs.mnt()) + conf + " --exec " +
                        ShellQuote("touch " + marker)));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\"name\": \"cp1\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"quiesced\": true"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"frozen\": [\"" + fs.mnt() + "\"]"), std::string::npos) << r.out;
  EXPECT_TRUE(std::filesystem::exists(marker));
  // Thawed afterwards: a write completes.
  EXPECT_EQ(RunCommand("timeout 10 sh -c 'echo x > " + fs.mnt() + "/after'").exit_code, 0);
  // An exec outliving the deadline: thawed by the watchdog, not quiesced.
  auto late = RunCommand(S("checkpoint --json --tracker " + ShellQuote(trk) + " cp2 --quiesce " +
                           ShellQuote(fs.mnt()) + conf + " --deadline 0.3 --exec 'sleep 1.5'"));
  ASSERT_EQ(late.exit_code, 0) << late.err;
  EXPECT_NE(late.out.find("\"quiesced\": false"), std::string::npos) << late.out;
  EXPECT_EQ(RunCommand("timeout 10 sh -c 'echo y > " + fs.mnt() + "/late'").exit_code, 0);
  // The tracker's own filesystem is never frozen.
  std::string inside = fs.mnt() + "/trk";
  RunOk(S("tracker init --tracker " + ShellQuote(inside) + " --size 1G"));
  auto self = RunCommand(S("checkpoint --tracker " + ShellQuote(inside) + " cp --quiesce " +
                           ShellQuote(fs.mnt()) + conf));
  EXPECT_EQ(self.exit_code, 1);
  EXPECT_NE(self.err.find(fs.mnt()), std::string::npos) << self.err;
  EXPECT_EQ(RunCommand("timeout 10 sh -c 'echo z > " + fs.mnt() + "/self'").exit_code, 0);
  // Both checkpoints exist, and the tracker recorded each window's verdict
  // (issue 17): cp1 quiesced, cp2 not (its window expired).
  std::string list = RunOk(S("tracker list --json --tracker " + ShellQuote(trk)));
  auto entry = [&](const std::string& name) {
    size_t at = list.find("\"" + name + "\"");
    return at == std::string::npos ? std::string() : list.substr(at, list.find('}', at) - at);
  };
  EXPECT_NE(entry("cp1").find("\"quiesced\": true"), std::string::npos) << list;
  EXPECT_NE(entry("cp2").find("\"quiesced\": false"), std::string::npos) << list;
  std::string human = RunOk(S("tracker list --tracker " + ShellQuote(trk)));
  EXPECT_NE(human.find("cp1"), std::string::npos);
  EXPECT_NE(human.substr(human.find("cp1")).find("yes"), std::string::npos) << human;
  EXPECT_EQ(RunCommand(S("checkpoint --tracker " + ShellQuote(trk) + " cp3 --exec true")).exit_code, 2);
}

// A one-step tracked backup takes its checkpoint inside the freeze window
// and records whether the window held.
TEST(CheckpointQuiesce, BackupTakesItsCheckpointFrozen) {
  testing::TempDir dir;
  LoopExt4 fs(dir);
  if (!fs.skip().empty()) GTEST_SKIP() << fs.skip();
  std::string trk = dir.File("trk"), repo = dir.File("repo"), disk = dir.File("disk.raw");
  std::string R = " --repo " + ShellQuote(repo) + " ", T = " --tracker " + ShellQuote(trk) + " ";
  std::string Q = " --quiesce " + ShellQuote(fs.mnt()) + " --confine " + ShellQuote(dir.path()) +
                  " --state-dir " + ShellQuote(dir.File("qstate")) + " ";
  RunOk(S("generate --size 8M --fill 0.5 --seed 3 " + ShellQuote(disk)));
  RunOk(S("init " + ShellQuote(repo)));
  RunOk(S("tracker init" + T + "--size 8M"));
  std::string full = RunOk(S("backup --json" + R + "--full" + T + Q + ShellQuote(disk)));
  EXPECT_EQ(nlohmann::json::parse(full)["quiesced"], true) << full;
  RunOk(S("scribble" + T + "--bytes 256K --seed 1 " + ShellQuote(disk)));
  std::string inc = RunOk(S("backup --json" + R + T + Q + "--deadline 5 " + ShellQuote(disk)));
  EXPECT_EQ(nlohmann::json::parse(inc)["quiesced"], true) << inc;
  EXPECT_EQ(RunCommand("timeout 10 sh -c 'echo x > " + fs.mnt() + "/after'").exit_code, 0);
  std::string list = RunOk(S("list" + R));
  EXPECT_NE(list.find("(quiesced)"), std::string::npos) << list;
  std::string cps = RunOk(S("tracker list --json" + T));
  EXPECT_NE(cps.find("\"quiesced\": true"), std::string::npos) << cps;
  // --quiesce needs an end point to take inside the window.
  EXPECT_EQ(RunCommand(S("backup" + R + "--scan" + Q + ShellQuote(disk))).exit_code, 2);
}

}  // namespace
}  // namespace strata
