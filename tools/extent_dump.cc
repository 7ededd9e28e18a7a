// extent-dump: prints the allocation map of an image, or the runs of a
// serialised extent set.
#include <cinttypes>
#include <cstdio>
#include <string>

#include "extents/endian.h"
#include "extents/extent_set.h"
#include "formats/file.h"
#include "formats/open_image.h"
#include "tools/cli_util.h"

namespace strata {
namespace {

constexpr char kTool[] = "extent-dump";

constexpr char kHelp[] = R"(Usage: extent-dump [OPTIONS] IMAGE
       extent-dump --set FILE [--output human|json]

Prints the allocation map of a disk image: which ranges hold data, which
read as zeros, and (for images with backing files) at which depth.

Options:
  -f, --format FMT     image format: raw, qcow2 or auto (default auto)
  -o, --output FMT     human (default) or json; json prints exactly the
                       objects and merge rules of `qemu-img map --output=json`
      --json           same as --output json
      --set FILE       print the runs of a serialised extent set
                       (docs/formats/extent-set.md) instead of an image map
  -h, --help           this text

Exit status: 0 success, 1 failure (bad image, I/O error), 2 usage error.
)";

struct Options {
  bool json = false;
  std::string format = "auto";
};

int DumpImageMap(const std::string& path, const Options& opt) {
  auto image = OpenImage(path, opt.format);
  if (!image) return cli::Fail(kTool, image.error());
  Image& img = **image;
  uint64_t data_bytes = 0, zero_bytes = 0, unalloc_bytes = 0, data_runs = 0;
  bool first = true;
  if (opt.json) std::fputs("[", stdout);
  else {
    std::printf("%s: %s image, virtual size %s (%" PRIu64 " bytes)\n", path.c_str(),
                std::string(img.format()).c_str(), FormatBytes(img.size()).c_str(), img.size());
    std::printf("%18s %18s %5s %-12s %18s  %s\n", "start", "length", "depth", "status",
                "offset", "file");
  }
  Status s = MapImage(img, [&](const MapEntry& e) -> Status {
    if (e.data) {
      data_bytes += e.length;
      ++data_runs;
    } else if (e.zero && e.present) {
      zero_bytes += e.length;
    } else {
      unalloc_bytes += e.length;
    }
    if (opt.json) {
      std::printf("%s%s", first ? "" : ",\n", MapEntryJson(e).c_str());
    } else {
      const char* status = e.data ? "data" : (e.present ? "zero" : "unallocated");
      std::string off = e.has_offset ? Hex(e.offset) : "-";
      std::printf("%18s %18s %5d %-12s %18s  %s\n", Hex(e.start).c_str(), Hex(e.length).c_str(),
                  e.depth, status, off.c_str(), e.present ? img.FileAt(e.depth).c_str() : "-");
    }
    first = false;
    return Status::Ok();
  });
  if (!s.ok()) {
    if (opt.json && !first) std::fputs("]\n", stdout);
    std::fflush(stdout);
    return cli::Fail(kTool, s);
  }
  if (opt.json) {
    std::fputs("]\n", stdout);
  } else {
    double pct = img.size() ? 100.0 * static_cast<double>(data_bytes) /
                                  static_cast<double>(img.size())
                            : 0.0;
    std::printf("data %s in %" PRIu64 " runs (%.2f%%), zero %s, unallocated %s\n",
                FormatBytes(data_bytes).c_str(), data_runs, pct, FormatBytes(zero_bytes).c_str(),
                FormatBytes(unalloc_bytes).c_str());
  }
  return cli::kExitOk;
}

int DumpSet(const std::string& path, const Options& opt) {
  auto bytes = ReadWholeFile(path);
  if (!bytes) return cli::Fail(kTool, bytes.error());
  auto set = ExtentSet::Deserialize(*bytes);
  if (!set) return cli::Fail(kTool, set.error().WithContext(path));
  cli::PrintRuns(*set, opt.json, path);
  return cli::kExitOk;
}

int Main(int argc, char** argv) {
  // Short aliases are rewritten to their long forms before parsing.
  std::vector<std::string> storage(argv, argv + argc);
  for (auto& a : storage) {
    if (a == "-f") a = "--format";
    else if (a == "-o") a = "--output";
    else if (a == "-h") a = "--help";
  }
  std::vector<char*> av;
  for (auto& a : storage) av.push_back(a.data());
  auto args = cli::Args::Parse(argc, av.data(), 1, {"--format", "--output", "--set"},
                               {"--help", "--json"});
  if (!args) return cli::Usage(kTool, args.error().message());
  if (args->Has("--help")) {
    std::fputs(kHelp, stdout);
    return cli::kExitOk;
  }
  Options opt;
  if (auto f = args->Get("--format")) opt.format = *f;
  if (opt.format != "auto" && opt.format != "raw" && opt.format != "qcow2") {
    return cli::Usage(kTool, "--format must be raw, qcow2 or auto, not '" + opt.format + "'");
  }
  std::string output = args->Get("--output").value_or("human");
  if (args->Has("--json")) output = "json";
  if (output != "human" && output != "json") {
    return cli::Usage(kTool, "--output must be human or json, not '" + output + "'");
  }
  opt.json = output == "json";
  const auto& pos = args->positional();
  if (auto set = args->Get("--set")) {
    if (!pos.empty()) return cli::Usage(kTool, "--set takes no IMAGE argument");
    return DumpSet(*set, opt);
  }
  if (pos.size() != 1) {
    return cli::Usage(kTool, pos.empty() ? "missing IMAGE" : "expected one IMAGE, got " +
                                                                 std::to_string(pos.size()));
  }
  return DumpImageMap(pos[0], opt);
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) { return strata::Main(argc, argv); }
