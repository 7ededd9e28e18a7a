#include "tools/cli_util.h"

#include <cinttypes>
#include <cstdio>
#include <ctime>

#include "extents/endian.h"

namespace strata::cli {

Result<Args> Args::Parse(int argc, char** argv, int first,
                         const std::set<std::string>& value_flags,
                         const std::set<std::string>& bool_flags) {
  Args a;
  bool options = true;
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (options && arg == "--") {
      options = false;
      continue;
    }
    if (!options || arg.size() < 2 || arg[0] != '-' || arg == "-") {
      a.positional_.push_back(arg);
      continue;
    }
    std::string name = arg, value;
    bool has_value = false;
    size_t eq = arg.find('=');
    if (eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    if (value_flags.count(name)) {
      if (!has_value) {
        if (i + 1 >= argc) return Status::InvalidArgument("option " + name + " needs a value");
        value = argv[++i];
      }
      a.values_.emplace(name, value);
    } else if (bool_flags.count(name)) {
      if (has_value) return Status::InvalidArgument("option " + name + " takes no value");
      a.values_.emplace(name, "");
    } else {
      return Status::InvalidArgument("unknown option '" + name + "'");
    }
  }
  return a;
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

Result<uint64_t> ParseSize(const std::string& text) {
  auto bad = [&] {
    return Status::InvalidArgument("'" + text + "' is not a size (e.g. 65536, 64K, 10G)");
  };
  if (text.empty() || text[0] < '0' || text[0] > '9') return bad();
  size_t i = 0;
  uint64_t v = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    uint64_t d = static_cast<uint64_t>(text[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return bad();
    v = v * 10 + d;
    ++i;
  }
  std::string suffix = text.substr(i);
  int shift = 0;
  if (suffix.empty() || suffix == "B") shift = 0;
  else if (suffix == "K" || suffix == "KiB" || suffix == "k") shift = 10;
  else if (suffix == "M" || suffix == "MiB") shift = 20;
  else if (suffix == "G" || suffix == "GiB") shift = 30;
  else if (suffix == "T" || suffix == "TiB") shift = 40;
  else if (suffix == "P" || suffix == "PiB") shift = 50;
  else return bad();
  if (shift > 0 && v > (UINT64_MAX >> shift)) return bad();
  return v << shift;
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

// Length of the well-formed UTF-8 sequence at s[i] (RFC 3629: no overlong
// forms, no surrogates, at most U+10FFFF), or 0 if there is none.
size_t Utf8SequenceAt(const std::string& s, size_t i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = byte(i);
  if (c < 0x80) return 1;
  size_t n;
  unsigned char lo = 0x80, hi = 0xbf;  // range of the second byte
  if (c >= 0xc2 && c <= 0xdf) n = 2;
  else if (c == 0xe0) n = 3, lo = 0xa0;
  else if (c >= 0xe1 && c <= 0xec) n = 3;
  else if (c == 0xed) n = 3, hi = 0x9f;
  else if (c >= 0xee && c <= 0xef) n = 3;
  else if (c == 0xf0) n = 4, lo = 0x90;
  else if (c >= 0xf1 && c <= 0xf3) n = 4;
  else if (c == 0xf4) n = 4, hi = 0x8f;
  else return 0;
  if (i + n > s.size()) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xbf) return 0;
  }
  return n;
}

}  // namespace

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      // JSON strings are UTF-8; names and paths are bytes that need not be.
      // A byte that starts no well-formed sequence prints as U+FFFD, as
      // nlohmann's error_handler_t::replace does for the other outputs.
      size_t n = Utf8SequenceAt(s, i);
      if (n == 0) {
        out += "\\ufffd";
      } else {
        out.append(s, i, n);
        i += n - 1;
      }
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

int Fail(const std::string& tool, const Status& s, bool usage_on_invalid) {
  std::fprintf(stderr, "%s: %s\n", tool.c_str(), s.message().c_str());
  if (usage_on_invalid && s.code() == StatusCode::kInvalidArgument) return kExitUsage;
  return kExitFailure;
}

int Usage(const std::string& tool, const std::string& message) {
  std::fprintf(stderr, "%s: %s\nTry '%s --help'.\n", tool.c_str(), message.c_str(), tool.c_str());
  return kExitUsage;
}

void PrintRuns(const ExtentSet& set, bool json, const std::string& title) {
  ExtentSet::RunIterator it(set);
  ByteExtent e;
  uint64_t runs = 0;
  if (json) {
    std::fputs("[", stdout);
    while (it.Next(&e)) {
      std::printf("%s{\"start\": %" PRIu64 ", \"length\": %" PRIu64 "}", runs ? ",\n" : "",
                  e.offset, e.length);
      ++runs;
    }
    std::fputs("]\n", stdout);
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

}  // namespace strata::cli
