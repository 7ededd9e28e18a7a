// Small helpers shared by the command-line tools: argument parsing, sizes,
// JSON strings and the exit-code convention (0 ok, 1 failure, 2 usage).
#ifndef STRATA_TOOLS_CLI_UTIL_H_
#define STRATA_TOOLS_CLI_UTIL_H_

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "strata/extent_set.h"
#include "strata/status.h"

namespace strata::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// Parsed command line: --name value, --name=value, boolean --name, and
// positionals ("--" ends options).
class Args {
 public:
  // `value_flags` take a value, `bool_flags` do not; anything else is a
  // usage error. A value flag given twice keeps every value (see All()).
  static Result<Args> Parse(int argc, char** argv, int first,
                            const std::set<std::string>& value_flags,
                            const std::set<std::string>& bool_flags);
  bool Has(const std::string& flag) const { return values_.count(flag) != 0; }
  std::optional<std::string> Get(const std::string& flag) const;
  std::vector<std::string> All(const std::string& flag) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::multimap<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

// "65536", "64K", "64KiB", "1M", "2G", "1T" (binary multiples).
Result<uint64_t> ParseSize(const std::string& text);
// "2026-11-22T04:05:52Z" (UTC, ISO 8601) for a time in ns since the epoch.
std::string FormatTime(int64_t unix_ns);
// A JSON string literal with escapes.
std::string JsonString(const std::string& s);
// Prints "<tool>: <message>" to stderr and returns kExitFailure
// (kExitUsage for kInvalidArgument when `usage_on_invalid`).
int Fail(const std::string& tool, const Status& s, bool usage_on_invalid = false);
// Prints "<tool>: <message>\nTry '<tool> --help'." and returns kExitUsage.
int Usage(const std::string& tool, const std::string& message);

// Prints runs of `set`: JSON `[{"start": S, "length": L}, ...]` one per line,
// or a human table with a summary line.
void PrintRuns(const ExtentSet& set, bool json, const std::string& title);

}  // namespace strata::cli

#endif  // STRATA_TOOLS_CLI_UTIL_H_
