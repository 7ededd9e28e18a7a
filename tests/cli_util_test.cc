// tools/cli_util: the size parser (what qemu-img accepts), the CLI11-backed
// argument parser and the "did you mean" suggestions.
#include "tools/cli_util.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace strata::cli {
namespace {

TEST(ParseSize, AcceptsWhatQemuImgAccepts) {
  struct Case {
    const char* text;
    uint64_t bytes;
  } cases[] = {
      {"0", 0},
      {"512", 512},
      {"512b", 512},
      {"512B", 512},
      {"0x10000", 65536},
      {"64k", 64 << 10},
      {"64K", 64 << 10},
      {"64KiB", 64 << 10},
      {"1M", 1 << 20},
      {"1m", 1 << 20},
      {"4g", uint64_t{4} << 30},
      {"4G", uint64_t{4} << 30},
      {"4GB", uint64_t{4} << 30},
      {"4gb", uint64_t{4} << 30},
      {"4GiB", uint64_t{4} << 30},
      {"1.5G", uint64_t{3} << 29},
      {"1.5k", 1536},
      {"0.5M", 512 << 10},
      {"2T", uint64_t{2} << 40},
      {"1P", uint64_t{1} << 50},
      {"1E", uint64_t{1} << 60},
      {"15E", uint64_t{15} << 60},
      {"18446744073709551615", UINT64_MAX},
  };
  for (const Case& c : cases) {
    auto v = ParseSize(c.text);
    ASSERT_TRUE(v.has_value()) << c.text << ": " << v.error().message();
    EXPECT_EQ(*v, c.bytes) << c.text;
  }
}

TEST(ParseSize, RefusesWhatIsNotASize) {
  for (const char* bad : {"", "k", "-1", "1.5", "1.", ".5G", "4X", "4 G", " 4G", "4GiBB", "4Gi", "1e3", "16E",
                          "18446744073709551616", "0x", "0x1G", "G4", "4KB4"}) {
    auto v = ParseSize(bad);
    EXPECT_FALSE(v.has_value()) << "'" << bad << "' parsed as " << (v.has_value() ? *v : 0);
    if (!v.has_value()) {
      EXPECT_NE(v.error().message().find("is not a size"), std::string::npos);
    }
  }
}

// Fractions are exact, not floating point: n.d<unit> is n*unit + floor(d*unit).
TEST(ParseSize, FractionsAreExact) {
  for (uint64_t whole = 0; whole < 50; whole += 7) {
    for (uint64_t tenths = 0; tenths < 10; ++tenths) {
      std::string t = std::to_string(whole) + "." + std::to_string(tenths) + "K";
      auto v = ParseSize(t);
      ASSERT_TRUE(v.has_value()) << t;
      EXPECT_EQ(*v, whole * 1024 + tenths * 1024 / 10) << t;
    }
  }
}

Result<Args> ParseLine(std::vector<std::string> words, const std::set<std::string>& vf,
                       const std::set<std::string>& bf) {
  words.insert(words.begin(), "cmd");
  std::vector<char*> argv;
  for (std::string& w : words) argv.push_back(w.data());
  return Args::Parse(static_cast<int>(argv.size()), argv.data(), 1, vf, bf);
}

TEST(Args, ValuesFlagsAndPositionals) {
  auto a = ParseLine({"--repo", "R", "img", "--allow-backing=d1", "--json", "--allow-backing", "d2", "--", "--x"},
                     {"--repo", "--allow-backing"}, {"--json", "--help"});
  ASSERT_TRUE(a.has_value()) << a.error().message();
  EXPECT_EQ(a->Get("--repo"), "R");
  EXPECT_EQ(a->All("--allow-backing"), (std::vector<std::string>{"d1", "d2"}));
  EXPECT_TRUE(a->Has("--json"));
  EXPECT_FALSE(a->Has("--help"));
  EXPECT_EQ(a->positional(), (std::vector<std::string>{"img", "--x"}));
}

TEST(Args, ShortForms) {
  auto a = ParseLine({"-r", "R", "-h", "-q", "-b", "latest"}, {"--repo", "--backup"}, {"--help", "--quiet"});
  ASSERT_TRUE(a.has_value()) << a.error().message();
  EXPECT_EQ(a->Get("--repo"), "R");
  EXPECT_EQ(a->Get("--backup"), "latest");
  EXPECT_TRUE(a->Has("--help"));
  EXPECT_TRUE(a->Has("--quiet"));
  // A short form exists only where its long flag does.
  EXPECT_FALSE(ParseLine({"-q"}, {}, {"--help"}).has_value());
}

TEST(Args, UnknownAndIncompleteOptions) {
  auto a = ParseLine({"--repoo", "R"}, {"--repo"}, {"--json"});
  ASSERT_FALSE(a.has_value());
  EXPECT_NE(a.error().message().find("unknown option '--repoo'"), std::string::npos) << a.error().message();
  EXPECT_NE(a.error().message().find("did you mean '--repo'"), std::string::npos) << a.error().message();
  auto b = ParseLine({"--repo"}, {"--repo"}, {});
  ASSERT_FALSE(b.has_value());
  EXPECT_NE(b.error().message().find("--repo needs a value"), std::string::npos) << b.error().message();
  auto c = ParseLine({"--zzzzzzzz"}, {"--repo"}, {});
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().message().find("did you mean"), std::string::npos) << c.error().message();
}

TEST(ClosestMatch, Suggestions) {
  std::vector<std::string> cmds = {"backup", "restore", "verify", "list", "info", "merge"};
  EXPECT_EQ(ClosestMatch("bakcup", cmds), "backup");
  EXPECT_EQ(ClosestMatch("restor", cmds), "restore");
  EXPECT_EQ(ClosestMatch("lsit", cmds), "list");
  EXPECT_EQ(ClosestMatch("lsit", {"init", "mark", "list", "remove", "resize"}), "list");
  EXPECT_EQ(ClosestMatch("veri", cmds), "verify");
  EXPECT_EQ(ClosestMatch("xyzzyplugh", cmds), "");
}

}  // namespace
}  // namespace strata::cli
