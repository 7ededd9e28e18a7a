// `strata tracker ...`, `strata checkpoint` and `extent-dump --tracker`:
// exact JSON output, exit codes and error messages.
#include <gtest/gtest.h>

#include <filesystem>

#include "tests/test_util.h"

namespace strata {
namespace {

using testing::RunCommand;
using testing::RunOk;
using testing::ShellQuote;
using testing::Tool;

class TrackerCliTest : public ::testing::Test {
 protected:
  std::string S(const std::string& args) { return Tool("strata") + " " + args; }
  std::string D(const std::string& args) { return Tool("extent-dump") + " " + args; }
  std::string T() { return "--tracker " + ShellQuote(tmp_.File("st")); }
  testing::TempDir tmp_;
};

TEST_F(TrackerCliTest, EndToEndJson) {
  EXPECT_EQ(RunOk(S("tracker init " + T() + " --size 1M --granularity 4K --json")),
            "{\"tracker\": " + std::string("\"") + tmp_.File("st") +
                "\", \"disk_size\": 1048576, \"granularity\": 4096, \"intent_log\": true}\n");
  RunOk(S("checkpoint " + T() + " base"));
  EXPECT_EQ(RunOk(S("tracker mark " + T() + " 4096 8193 --json")),
            "{\"offset\": 4096, \"length\": 8193}\n");
  RunOk(S("tracker mark " + T() + " 1020K 4K"));
  std::string cp = RunOk(S("checkpoint " + T() + " --json second"));
  EXPECT_NE(cp.find("\"name\": \"second\""), std::string::npos) << cp;
  EXPECT_NE(cp.find("\"changed_bytes\": 16384"), std::string::npos) << cp;
  RunOk(S("tracker mark " + T() + " 0 1"));
  EXPECT_EQ(RunOk(D(T() + " --since base --json")),
            "[{\"start\": 0, \"length\": 16384},\n{\"start\": 1044480, \"length\": 4096}]\n");
  EXPECT_EQ(RunOk(D(T() + " --since base --to second --output json")),
            "[{\"start\": 4096, \"length\": 12288},\n{\"start\": 1044480, \"length\": 4096}]\n");
  EXPECT_EQ(RunOk(D(T() + " --since second --json")), "[{\"start\": 0, \"length\": 4096}]\n");
  std::string list = RunOk(S("tracker list " + T() + " --json"));
  EXPECT_NE(list.find("\"clean_shutdown\": true"), std::string::npos) << list;
  EXPECT_NE(list.find("\"generation_unknown\": false, \"quiesced\": false}"), std::string::npos) << list;
  std::string human = RunOk(S("tracker list " + T()));
  EXPECT_NE(human.find("quiesced"), std::string::npos) << human;
  EXPECT_LT(list.find("\"base\""), list.find("\"second\"")) << list;
  EXPECT_EQ(RunOk(S("tracker remove " + T() + " second --json")), "{\"removed\": \"second\"}\n");
  // Removal keeps the answer for the remaining checkpoint.
  EXPECT_EQ(RunOk(D(T() + " --since base --json")),
            "[{\"start\": 0, \"length\": 16384},\n{\"start\": 1044480, \"length\": 4096}]\n");
  // Growing marks the new area.
  RunOk(S("tracker resize " + T() + " --size 2M"));
  EXPECT_EQ(RunOk(D(T() + " --since base --json")),
            "[{\"start\": 0, \"length\": 16384},\n{\"start\": 1044480, \"length\": 1052672}]\n");
}

TEST_F(TrackerCliTest, ErrorsAndExitCodes) {
  auto r = RunCommand(S("tracker init " + T()));
  EXPECT_EQ(r.exit_code, 2);
  // Usage errors exit 2 and create nothing (issue 11): a zero-sized disk,
  // sizes and granularities that are not sizes, flags that do nothing for
  // the subcommand, missing or extra operands.
  for (const std::string& bad : std::vector<std::string>{
           "tracker init " + T() + " --size 0", "tracker init " + T() + " --size 1M --granularity 3000",
        "tracker init " + T() + " --size lots", "tracker init " + T() + " --size 1M extra",
        "tracker list " + T() + " --size 1M", "tracker mark " + T() + " 0 1 --granularity 4K",
        "tracker remove " + T() + " a --no-intent-log", "tracker resize " + T() + " --size 0",
        "tracker resize " + T() + " --size 1M extra", "tracker mark " + T() + " zero 1",
        "tracker mark " + T() + " 0", "tracker remove " + T(), "tracker list " + T() + " x",
        "tracker frobnicate " + T(), "tracker list", "checkpoint " + T(), "checkpoint " + T() + " ''",
        "checkpoint " + T() + " a b", "checkpoint " + T() + " a --exec true",
        "checkpoint " + T() + " a --bogus"}) {
    r = RunCommand(S(bad));
    EXPECT_EQ(r.exit_code, 2) << bad << "\n" << r.err;
    EXPECT_FALSE(r.err.empty()) << bad;
  }
  EXPECT_FALSE(std::filesystem::exists(tmp_.File("st"))) << "a refused init created the directory";
  RunOk(S("tracker init " + T() + " --size 1M"));
  r = RunCommand(S("tracker init " + T() + " --size 1M"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("already holds a tracker"), std::string::npos) << r.err;
  RunOk(S("checkpoint " + T() + " a"));
  r = RunCommand(S("checkpoint " + T() + " a"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("checkpoint 'a' already exists"), std::string::npos) << r.err;
  r = RunCommand(S("tracker mark " + T() + " 1M 1"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("past disk end"), std::string::npos) << r.err;
  r = RunCommand(D(T() + " --since nope"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no checkpoint named 'nope'"), std::string::npos) << r.err;
  r = RunCommand(S("tracker list --tracker " + ShellQuote(tmp_.File("none"))));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("MANIFEST missing"), std::string::npos) << r.err;
  r = RunCommand(S("tracker frobnicate " + T()));
  EXPECT_EQ(r.exit_code, 2);
  // A corrupt manifest: a clear error naming the file.
  std::string m = tmp_.File("st") + "/MANIFEST";
  auto bytes = testing::ReadFileBytes(m);
  bytes[30] ^= 1;
  testing::WriteFileBytes(m, bytes);
  r = RunCommand(D(T() + " --since a"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(m + ": manifest checksum mismatch"), std::string::npos) << r.err;
}

TEST_F(TrackerCliTest, UnknownStateIsExplicit) {
  RunOk(S("tracker init " + T() + " --size 1M --no-intent-log"));
  RunOk(S("checkpoint " + T() + " a"));
  RunOk(S("tracker mark " + T() + " 0 1"));
  // The flushed active generation goes missing: the changes since the last
  // checkpoint are lost, which must be said, not answered with a subset.
  RunOk("rm " + ShellQuote(tmp_.File("st")) + "/active-*.xset");
  auto r = RunCommand(D(T() + " --since a"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("full backup or rescan needed"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace strata
