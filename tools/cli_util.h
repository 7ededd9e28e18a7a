// Small helpers shared by the command-line tools: argument parsing (CLI11),
// sizes, times and the exit-code convention (0 ok, 1 failure, 2 usage).
#ifndef STRATA_TOOLS_CLI_UTIL_H_
#define STRATA_TOOLS_CLI_UTIL_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "strata/extent_set.h"
#include "strata/status.h"

namespace strata::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// Parsed command line, parsed by CLI11: --name value, --name=value, boolean
// --name, the short forms in kShortFlags (-h, -q, -v, -r REPO, ...) and
// positionals ("--" ends options).
class Args {
 public:
  // `value_flags` take a value, `bool_flags` do not; anything else is a
  // usage error naming the closest known flag ("did you mean"). A value flag
  // given twice keeps every value (see All()).
  static Result<Args> Parse(int argc, char** argv, int first,
                            const std::set<std::string>& value_flags,
                            const std::set<std::string>& bool_flags);
  // Which of `value_flags` the command line gives, ignoring every other
  // argument (a command picks its variant with it: `backup --nbd ...`).
  static std::set<std::string> Peek(int argc, char** argv, int first,
                                    const std::set<std::string>& value_flags);
  bool Has(const std::string& flag) const { return values_.count(flag) != 0; }
  std::optional<std::string> Get(const std::string& flag) const;
  std::vector<std::string> All(const std::string& flag) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::multimap<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

// Short forms of long flags, accepted by every command that has the long one.
const std::map<std::string, std::string>& ShortFlags();

// The candidate closest to `word` (edit distance at most 2, or a prefix), or
// "" if none is close: the "did you mean" of usage errors.
std::string ClosestMatch(const std::string& word, const std::vector<std::string>& candidates);

// A size as qemu-img reads one: bytes ("65536", "0x10000", "512b") or a
// binary multiple with a suffix k, m, g, t, p, e in either case, optionally a
// fraction ("1.5G", rounded down to a byte); "4GB" and "4GiB" mean 4G too.
Result<uint64_t> ParseSize(const std::string& text);

// A whole decimal number in [lo, hi] (a count, a port, a handle); `what`
// names it in the error ("--threads must be a whole number from 1 to 1024,
// not 'x'").
Result<uint64_t> ParseNumber(const std::string& what, const std::string& text, uint64_t lo, uint64_t hi);
// ParseNumber of option `flag` into *out when given (left alone otherwise).
Status GetNumber(const Args& a, const std::string& flag, uint64_t lo, uint64_t hi, uint64_t* out);
// --lock-wait SECONDS (default 0: a repository in use fails at once).
Result<std::chrono::milliseconds> LockWait(const Args& a);
// "2026-11-22T04:05:52Z" (UTC, ISO 8601) for a time in ns since the epoch.
std::string FormatTime(int64_t unix_ns);
using Json = nlohmann::ordered_json;
// `j` as text in strata's layout: ", " and ": " separators on one line, the
// elements of a top-level array one per line (as the CLI always printed it);
// `indent` >= 0 uses nlohmann's indented layout instead. Every value is
// serialised by nlohmann-json, bytes that are not UTF-8 (file and disk names
// can be anything) replaced by U+FFFD so the output is always valid JSON.
std::string FormatJson(const Json& j, int indent = -1);
// Prints FormatJson(j) and a newline on stdout.
void PrintJson(const Json& j, int indent = -1);
// With --json, Fail() and Usage() also print {"error": {"code", "message",
// "exit_code"}} on stdout. Args::Parse() turns it on when --json is given.
void SetJsonErrors(bool on);
bool JsonErrors();
// Prints "<tool>: <message>" to stderr and returns kExitFailure
// (kExitUsage for kInvalidArgument when `usage_on_invalid`).
int Fail(const std::string& tool, const Status& s, bool usage_on_invalid = false);
// Prints "<tool>: <message>\nTry '<tool> --help'." and returns kExitUsage.
int Usage(const std::string& tool, const std::string& message);

// Prints runs of `set`: JSON `[{"start": S, "length": L}, ...]`, or a human
// table with a summary line.
void PrintRuns(const ExtentSet& set, bool json, const std::string& title);

}  // namespace strata::cli

#endif  // STRATA_TOOLS_CLI_UTIL_H_
