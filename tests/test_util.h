// Helpers for tests: temporary directories, running commands (qemu-img, our
// own tools) and reading files.
#ifndef STRATA_TESTS_TEST_UTIL_H_
#define STRATA_TESTS_TEST_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

namespace strata::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with its contents.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs `cmd` through /bin/sh, capturing stdout and stderr.
CommandResult RunCommand(const std::string& cmd);
// Runs `cmd`; fails the current test (ADD_FAILURE) when it exits non-zero.
std::string RunOk(const std::string& cmd);
// Whether `name` is on PATH.
bool HaveCommand(const std::string& name);
// Absolute path of a built tool, e.g. Tool("extent-dump"); in
// $STRATA_TOOLS_DIR when set.
std::string Tool(const std::string& name);
// Single-quotes `s` for /bin/sh.
std::string ShellQuote(const std::string& s);

std::vector<uint8_t> ReadFileBytes(const std::string& path);
void WriteFileBytes(const std::string& path, const std::vector<uint8_t>& data);

// Seed for randomised tests: $STRATA_SEED if set, else from the clock. Tests
// print it (SCOPED_TRACE) so a failure can be replayed.
uint64_t TestSeed();

// Sanitizer builds run several times slower, and scripts/test.sh runs the
// unit tests under them after the optimised build has run them in full:
// long randomized tests divide their iteration counts by this there.
#ifdef STRATA_SANITIZED
inline constexpr int kSanitizerSlowdown = 4;
#else
inline constexpr int kSanitizerSlowdown = 1;
#endif

}  // namespace strata::testing

#endif  // STRATA_TESTS_TEST_UTIL_H_
