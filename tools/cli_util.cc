#include "tools/cli_util.h"

#include <charconv>
#include <cctype>
#include <cinttypes>
#include <cstdio>
#include <ctime>

#include <CLI/CLI.hpp>
#include <algorithm>

#include "extents/endian.h"
#include "tools/progress.h"

namespace strata::cli {

const std::map<std::string, std::string>& ShortFlags() {
  static const auto* m = new std::map<std::string, std::string>{
      {"--help", "-h"},   {"--quiet", "-q"},  {"--verbose", "-v"}, {"--repo", "-r"},
      {"--backup", "-b"}, {"--format", "-f"}, {"--output", "-o"}, {"--version", "-V"}};
  return *m;
}

namespace {

// Edit distance with adjacent transpositions (optimal string alignment):
// "lsit" is one step from "list".
size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

// Whether a command line that failed to parse asked for --json (its error
// is then JSON too).
bool MentionsJson(int argc, char** argv, int first) {
  CLI::App app;
  app.set_help_flag();
  app.allow_extras();
  CLI::Option* json = app.add_flag("--json");
  try {
    app.parse(argc - first + 1, argv + first - 1);
  } catch (const CLI::ParseError&) {
    return false;
  }
  return json->count() > 0;
}

}  // namespace

std::string ClosestMatch(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = 3;
  for (const std::string& c : candidates) {
    size_t d = EditDistance(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  if (!best.empty()) return best;
  for (const std::string& c : candidates) {
    if (word.size() >= 3 && c.rfind(word, 0) == 0) return c;
  }
  return "";
}

Result<Args> Args::Parse(int argc, char** argv, int first,
                         const std::set<std::string>& value_flags,
                         const std::set<std::string>& bool_flags) {
  CLI::App app;
  app.set_help_flag();  // each command prints its own help for -h/--help
  app.allow_extras();   // unknown options are reported below, with a suggestion
  std::vector<std::pair<std::string, CLI::Option*>> options;
  auto spec = [&](const std::string& name) {
    auto s = ShortFlags().find(name);
    return s == ShortFlags().end() ? name : s->second + "," + name;
  };
  for (const std::string& name : value_flags) {
    CLI::Option* o = app.add_option(spec(name));
    o->type_size(1)->expected(1)->allow_extra_args(false)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    options.emplace_back(name, o);
  }
  for (const std::string& name : bool_flags) options.emplace_back(name, app.add_flag(spec(name)));
  Args a;
  app.add_option("args", a.positional_);
  try {
    app.parse(argc - first + 1, argv + first - 1);  // CLI11 skips the program name
  } catch (const CLI::ArgumentMismatch& e) {
    SetJsonErrors(MentionsJson(argc, argv, first));
    std::string what = e.what();
    return Status::InvalidArgument("option " + what.substr(0, what.find(':')) + " needs a value");
  } catch (const CLI::ParseError& e) {
    SetJsonErrors(MentionsJson(argc, argv, first));
    return Status::InvalidArgument(e.what());
  }
  if (bool_flags.count("--json")) {
    for (const auto& [name, o] : options) {
      if (name == "--json") SetJsonErrors(o->count() > 0);
    }
  }
  for (const std::string& extra : app.remaining()) {
    if (extra == "--") continue;
    std::string name = extra.substr(0, extra.find('='));
    std::vector<std::string> known;
    for (const auto& [n, o] : options) known.push_back(n);
    std::string near = ClosestMatch(name, known);
    return Status::InvalidArgument("unknown option '" + name + "'" +
                                   (near.empty() ? "" : " (did you mean '" + near + "'?)"));
  }
  for (const auto& [name, o] : options) {
    if (!o->count()) continue;
    if (value_flags.count(name)) {
      for (const std::string& v : o->results()) a.values_.emplace(name, v);
    } else {
      a.values_.emplace(name, "");
    }
  }
  return a;
}

std::set<std::string> Args::Peek(int argc, char** argv, int first, const std::set<std::string>& value_flags) {
  CLI::App app;
  app.set_help_flag();
  app.allow_extras();
  std::vector<std::pair<std::string, CLI::Option*>> options;
  for (const std::string& name : value_flags) {
    CLI::Option* o = app.add_option(name);
    o->type_size(1)->expected(1)->allow_extra_args(false)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    options.emplace_back(name, o);
  }
  std::vector<std::string> positional;
  app.add_option("args", positional);
  std::set<std::string> seen;
  try {
    app.parse(argc - first + 1, argv + first - 1);
  } catch (const CLI::ParseError&) {
    return value_flags;  // e.g. a flag without its value: let the full parser say so
  }
  for (const auto& [name, o] : options) {
    if (o->count()) seen.insert(name);
  }
  return seen;
}

std::optional<std::string> Args::Get(const std::string& flag) const {
  auto range = values_.equal_range(flag);
  if (range.first == range.second) return std::nullopt;
  return std::prev(range.second)->second;  // the last one wins
}

std::vector<std::string> Args::All(const std::string& flag) const {
  std::vector<std::string> v;
  auto range = values_.equal_range(flag);
  for (auto it = range.first; it != range.second; ++it) v.push_back(it->second);
  return v;
}

Result<uint64_t> ParseNumber(const std::string& what, const std::string& text, uint64_t lo, uint64_t hi) {
  uint64_t v = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, v, 10);
  if (text.empty() || ec != std::errc() || ptr != end || v < lo || v > hi) {
    return Status::InvalidArgument(what + " must be a whole number from " + std::to_string(lo) + " to " +
                                   std::to_string(hi) + ", not '" + text + "'");
  }
  return v;
}

Status GetNumber(const Args& a, const std::string& flag, uint64_t lo, uint64_t hi, uint64_t* out) {
  auto v = a.Get(flag);
  if (!v) return Status::Ok();
  STRATA_ASSIGN_OR_RETURN(*out, ParseNumber(flag, *v, lo, hi));
  return Status::Ok();
}

Result<uint64_t> ParseSize(const std::string& text) {
  auto bad = [&] {
    return Status::InvalidArgument("'" + text + "' is not a size (e.g. 65536, 64k, 4G, 1.5G, 4GiB)");
  };
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  size_t i = 0;
  uint64_t v = 0;
  if (text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {  // plain bytes, as qemu-img
    auto [end, ec] = std::from_chars(text.data() + 2, text.data() + text.size(), v, 16);
    if (ec != std::errc() || end != text.data() + text.size()) return bad();
    return v;
  }
  while (i < text.size() && digit(text[i])) {
    uint64_t d = static_cast<uint64_t>(text[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return bad();
    v = v * 10 + d;
    ++i;
  }
  if (i == 0) return bad();
  // A fraction, exact to 18 digits: "1.5G" is 1.5 * 2^30 bytes, rounded down.
  uint64_t frac = 0, frac_scale = 1;
  if (i < text.size() && text[i] == '.') {
    ++i;
    size_t first = i;
    while (i < text.size() && digit(text[i])) {
      if (frac_scale < 1000000000000000000ULL) {
        frac = frac * 10 + static_cast<uint64_t>(text[i] - '0');
        frac_scale *= 10;
      }
      ++i;
    }
    if (i == first) return bad();
  }
  std::string suffix;
  for (size_t k = i; k < text.size(); ++k) suffix += static_cast<char>(std::tolower(static_cast<unsigned char>(text[k])));
  int shift = -1;
  if (suffix.empty() || suffix == "b") {
    shift = 0;
  } else {
    static const std::string kUnits = "kmgtpe";
    size_t u = kUnits.find(suffix[0]);
    std::string rest = suffix.substr(1);
    if (u != std::string::npos && (rest.empty() || rest == "b" || rest == "ib")) shift = 10 * static_cast<int>(u + 1);
  }
  if (shift < 0) return bad();
  if (shift == 0 && frac_scale > 1) return bad();  // "1.5" bytes: qemu-img refuses it too
  if (shift > 0 && v > (UINT64_MAX >> shift)) return bad();
  unsigned __int128 frac_bytes = (static_cast<unsigned __int128>(frac) << shift) / frac_scale;
  uint64_t whole = v << shift;
  if (frac_bytes > UINT64_MAX - whole) return bad();
  return whole + static_cast<uint64_t>(frac_bytes);
}

std::string FormatTime(int64_t unix_ns) {
  time_t secs = static_cast<time_t>(unix_ns / 1000000000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

namespace {
bool g_json_errors = false;

// The "code" of a JSON error: the status code's name in snake_case
// (docs/cli-json.md).
std::string ErrorCode(StatusCode c) {
  switch (c) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kInvalidArgument: return "invalid_argument";
    case StatusCode::kNotFound: return "not_found";
    case StatusCode::kCorruption: return "corruption";
    case StatusCode::kIoError: return "io_error";
    case StatusCode::kUnsupported: return "unsupported";
    case StatusCode::kNoSpace: return "no_space";
    case StatusCode::kAlreadyExists: return "already_exists";
    case StatusCode::kUnknownState: return "unknown_state";
    case StatusCode::kBusy: return "busy";
    case StatusCode::kCancelled: return "cancelled";
    case StatusCode::kNoMemory: return "no_memory";
  }
  return "unknown";
}

void PrintJsonError(const std::string& code, const std::string& message, int exit_code) {
  if (!g_json_errors) return;
  std::fflush(stdout);
  PrintJson(Json{{"error", {{"code", code}, {"message", message}, {"exit_code", exit_code}}}});
}
}  // namespace

namespace {
void AppendJson(const Json& j, bool top, std::string* out) {
  if (j.is_object()) {
    *out += '{';
    bool first = true;
    for (const auto& [k, v] : j.items()) {
      *out += first ? "" : ", ";
      *out += Json(k).dump(-1, ' ', false, Json::error_handler_t::replace) + ": ";
      AppendJson(v, false, out);
      first = false;
    }
    *out += '}';
  } else if (j.is_array()) {
    *out += '[';
    for (size_t i = 0; i < j.size(); ++i) {
      if (i) *out += top ? ",\n" : ", ";
      AppendJson(j[i], false, out);
    }
    *out += ']';
  } else {
    *out += j.dump(-1, ' ', false, Json::error_handler_t::replace);
  }
}
}  // namespace

std::string FormatJson(const Json& j, int indent) {
  if (indent >= 0) return j.dump(indent, ' ', false, Json::error_handler_t::replace);
  std::string out;
  AppendJson(j, true, &out);
  return out;
}

void PrintJson(const Json& j, int indent) {
  std::string text = FormatJson(j, indent);
  text += '\n';
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
}

void SetJsonErrors(bool on) { g_json_errors = on; }
bool JsonErrors() { return g_json_errors; }

int Fail(const std::string& tool, const Status& s, bool usage_on_invalid) {
  ClearActiveProgress();
  std::fprintf(stderr, "%s: %s\n", tool.c_str(), s.message().c_str());
  int rc = usage_on_invalid && s.code() == StatusCode::kInvalidArgument ? kExitUsage : kExitFailure;
  PrintJsonError(rc == kExitUsage ? "usage" : ErrorCode(s.code()), s.message(), rc);
  return rc;
}

int Usage(const std::string& tool, const std::string& message) {
  ClearActiveProgress();
  std::fprintf(stderr, "%s: %s\nTry '%s --help'.\n", tool.c_str(), message.c_str(), tool.c_str());
  PrintJsonError("usage", message, kExitUsage);
  return kExitUsage;
}

void PrintRuns(const ExtentSet& set, bool json, const std::string& title) {
  ExtentSet::RunIterator it(set);
  ByteExtent e;
  uint64_t runs = 0;
  if (json) {
    Json arr = Json::array();
    while (it.Next(&e)) arr.push_back({{"start", e.offset}, {"length", e.length}});
    PrintJson(arr);
    return;
  }
  std::printf("%s: %s disk, granularity %s\n", title.c_str(), FormatBytes(set.disk_size()).c_str(),
              FormatBytes(set.granularity().bytes()).c_str());
  std::printf("%18s %18s %12s\n", "start", "length", "size");
  while (it.Next(&e)) {
    std::printf("%18s %18s %12s\n", Hex(e.offset).c_str(), Hex(e.length).c_str(),
                FormatBytes(e.length).c_str());
    ++runs;
  }
  uint64_t bytes = set.ByteCount();
  double pct = set.disk_size() ? 100.0 * static_cast<double>(bytes) / static_cast<double>(set.disk_size()) : 0.0;
  std::printf("%s in %" PRIu64 " runs (%.2f%% of the disk)\n", FormatBytes(bytes).c_str(), runs, pct);
}

Result<std::chrono::milliseconds> LockWait(const Args& a) {
  auto v = a.Get("--lock-wait");
  if (!v) return std::chrono::milliseconds(0);
  char* end = nullptr;
  double secs = std::strtod(v->c_str(), &end);
  if (end == v->c_str() || *end || !(secs >= 0 && secs <= 86400)) {
    return Status::InvalidArgument("--lock-wait must be a number of seconds in [0, 86400]");
  }
  return std::chrono::milliseconds(static_cast<int64_t>(secs * 1000));
}

}  // namespace strata::cli
