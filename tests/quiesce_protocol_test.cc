// Unit tests for the qemu-ga protocol pieces: the JSON codec (malformed and
// random input never crashes and errors name the byte offset) and the client
// against a scripted fake agent (noise before the 0xFF delimiter, stale sync
// replies, error replies, a silent agent).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <random>
#include <thread>

#include "engine/quiesce/json.h"
#include "engine/quiesce/qga.h"
#include "tests/test_util.h"

namespace strata::quiesce {
namespace {

using internal::Json;
using internal::JsonQuote;
using internal::ParseJson;
using namespace std::chrono_literals;

TEST(QuiesceJson, ParsesAgentRepliesAndRoundTripsStrings) {
  auto j = ParseJson(R"({"return": {"a": [1, -2.5e1, true, null, "x\"\u00e9\n"]}, "id": 7})", "t");
  ASSERT_TRUE(j.has_value()) << j.error().ToString();
  const Json* ret = j->Find("return");
  ASSERT_NE(ret, nullptr);
  const Json* a = ret->Find("a");
  ASSERT_NE(a, nullptr);
  ASSERT_EQ(a->array.size(), 5u);
  EXPECT_EQ(a->array[1].number, -25);
  EXPECT_TRUE(a->array[2].boolean);
  EXPECT_EQ(a->array[3].type, Json::Type::kNull);
  EXPECT_EQ(a->array[4].string, "x\"\xc3\xa9\n");
  std::string odd = "tab\there \"q\" back\\slash \x01";
  auto back = ParseJson(JsonQuote(odd), "t");
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->string, odd);
}

TEST(QuiesceJson, MalformedInputIsCorruptionWithOffset) {
  struct Case {
    const char* text;
    const char* message;
  } cases[] = {
      {"{\"a\" 1}", "t: byte 5: expected ':'"},
      {"[1, 2", "t: byte 5: unterminated array"},
      {"\"abc", "t: byte 4: unterminated string"},
      {"{} x", "t: byte 3: trailing characters after the value"},
      {"\"\\q\"", "t: byte 3: bad escape '\\q'"},
      {"", "t: byte 0: unexpected end of input"},
  };
  for (const auto& c : cases) {
    auto j = ParseJson(c.text, "t");
    ASSERT_FALSE(j.has_value()) << c.text;
    EXPECT_EQ(j.error().code(), StatusCode::kCorruption);
    EXPECT_EQ(j.error().message(), c.message) << c.text;
  }
  std::string deep(100, '[');
  EXPECT_FALSE(ParseJson(deep, "t").has_value());
  // Random bytes and random mutations of a valid reply never crash.
  uint64_t seed = strata::testing::TestSeed();
  SCOPED_TRACE("STRATA_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::string valid = R"({"return": [{"name": "a", "v": 1.5}, "s\u0041", true]})";
  for (int i = 0; i < 20000; ++i) {
    std::string s = valid;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) s[rng() % s.size()] = static_cast<char>(rng());
    if (rng() % 3 == 0) s.resize(rng() % s.size());
    (void)ParseJson(s, "fuzz");
  }
}

// A fake agent on a unix socket that answers with a script.
class FakeAgent {
 public:
  // `reply(line)` returns what to send for each request line (without the
  // leading 0xFF); the sync id is substituted for "$ID".
  explicit FakeAgent(std::function<std::string(const std::string&, const std::string&)> reply)
      : reply_(std::move(reply)) {
    path_ = dir_.File("qga.sock");
    fd_ = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a = {};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, path_.c_str(), path_.size() + 1);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd_, 4), 0);
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeAgent() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  const std::string& path() const { return path_; }
  std::vector<std::string> requests;

 private:
  void Serve() {
    for (;;) {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      std::string buf, id;
      char tmp[512];
      ssize_t n;
      while ((n = ::recv(c, tmp, sizeof tmp, 0)) > 0) {
        buf.append(tmp, static_cast<size_t>(n));
        size_t nl;
        while ((nl = buf.find('\n')) != std::string::npos) {
          std::string line = buf.substr(0, nl);
          buf.erase(0, nl + 1);
          if (!line.empty() && line[0] == '\xff') line.erase(0, 1);
          size_t p = line.find("\"id\":");
          if (p != std::string::npos) id = line.substr(p + 5, line.find('}', p) - p - 5);
          requests.push_back(line);
          std::string out = reply_(line, id);
          for (size_t q; (q = out.find("$ID")) != std::string::npos;) out.replace(q, 3, id);
          if (!out.empty()) (void)::send(c, out.data(), out.size(), MSG_NOSIGNAL);
        }
      }
      ::close(c);
    }
  }
  strata::testing::TempDir dir_;
  std::string path_;
  int fd_ = -1;
  std::function<std::string(const std::string&, const std::string&)> reply_;
  std::thread thread_;
};

TEST(QuiesceQgaClient, SkipsNoiseAndStaleRepliesThenSpeaksTheProtocol) {
  FakeAgent agent([](const std::string& line, const std::string&) -> std::string {
    if (line.find("guest-sync-delimited") != std::string::npos) {
      // Leftover output, a stale delimited reply, then ours.
      return "{\"return\": 5}\n\xff{\"return\": 12345}\n\xff{\"return\": $ID}\n";
    }
    if (line.find("guest-fsfreeze-freeze-list") != std::string::npos) return "{\"return\": 2}\n";
    if (line.find("guest-fsfreeze-status") != std::string::npos)
      return "{\"return\": \"frozen\"}\n";
    if (line.find("guest-fsfreeze-thaw") != std::string::npos)
      return "{\"error\": {\"class\": \"GenericError\", \"desc\": \"not frozen\"}}\n";
    return "";
  });
  auto c = QgaClient::Connect(agent.path(), 5s);
  ASSERT_TRUE(c.has_value()) << c.error().ToString();
  auto n = (*c)->FreezeList({"/a", "/b \"q\""});
  ASSERT_TRUE(n.has_value()) << n.error().ToString();
  EXPECT_EQ(*n, 2);
  auto s = (*c)->FreezeStatus();
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(*s, "frozen");
  auto t = (*c)->Thaw();
  ASSERT_FALSE(t.has_value());
  EXPECT_NE(t.error().message().find("guest-fsfreeze-thaw: GenericError: not frozen"),
            std::string::npos)
      << t.error().message();
  c->reset();
  ASSERT_GE(agent.requests.size(), 4u);
  EXPECT_EQ(
      agent.requests[1],
      R"({"execute":"guest-fsfreeze-freeze-list","arguments":{"mountpoints":["/a","/b \"q\""]}})");
}

TEST(QuiesceQgaClient, MalformedSilentAndMissingAgentsAreErrors) {
  {
    FakeAgent garbage([](const std::string&, const std::string&) -> std::string {
      return "\xff{\"return\": oops}\n";
    });
    auto c = QgaClient::Connect(garbage.path(), 2s);
    ASSERT_FALSE(c.has_value());
    EXPECT_EQ(c.error().code(), StatusCode::kCorruption);
    EXPECT_NE(c.error().message().find("guest-sync-delimited reply: byte 11"), std::string::npos)
        << c.error().message();
  }
  {
    FakeAgent silent([](const std::string&, const std::string&) { return std::string(); });
    auto t0 = std::chrono::steady_clock::now();
    auto c = QgaClient::Connect(silent.path(), 300ms);
    ASSERT_FALSE(c.has_value());
    EXPECT_EQ(c.error().code(), StatusCode::kBusy);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  }
  {
    // Freezing fewer filesystems than asked is an error and thaws.
    FakeAgent partial([](const std::string& line, const std::string&) -> std::string {
      if (line.find("sync") != std::string::npos) return "\xff{\"return\": $ID}\n";
      if (line.find("freeze-list") != std::string::npos) return "{\"return\": 1}\n";
      return "{\"return\": 1}\n";
    });
    auto b = MakeQgaBackend(partial.path(), 2s);
    Filesystem a, bb;
    a.mount_point = "/a";
    bb.mount_point = "/b";
    Status s = b->Freeze({a, bb});
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("froze 1 of 2"), std::string::npos) << s.message();
    EXPECT_NE(partial.requests.back().find("guest-fsfreeze-thaw"), std::string::npos);
  }
  strata::testing::TempDir d;
  auto c = QgaClient::Connect(d.File("nobody.sock"), 1s);
  ASSERT_FALSE(c.has_value());
  EXPECT_NE(c.error().message().find("nobody.sock: connect to qemu-ga"), std::string::npos)
      << c.error().message();
}

}  // namespace
}  // namespace strata::quiesce
