// extent-dump: prints the allocation map of an image, or the runs of a
// serialised extent set.
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "extents/endian.h"
#include "strata/extent_set.h"
#include "strata/file.h"
#include "strata/open_image.h"
#include "strata/qcow2_image.h"
#include "formats/raw/reflink.h"
#include "strata/archive.h"
#include "strata/tracker.h"
#include "strata/tracker_control.h"
#include "tools/cli_util.h"

namespace strata {
namespace {

constexpr char kTool[] = "extent-dump";

constexpr char kHelp[] = R"(Usage: extent-dump [OPTIONS] IMAGE
       extent-dump --set FILE [--output human|json]
       extent-dump ARCHIVE                       (the extents a strata archive holds)
       extent-dump --tracker DIR --since NAME [--to NAME]
       extent-dump --list-bitmaps | --list-snapshots QCOW2
       extent-dump --bitmap NAME [--force] QCOW2
       extent-dump --diff FROM [--to TO] QCOW2
       extent-dump --layers N IMAGE
       extent-dump --reflink-diff OLD NEW [--granularity N]

Prints the allocation map of a disk image: which ranges hold data, which
read as zeros, and (for images with backing files) at which depth.

Options:
  -f, --format FMT     image format: raw, qcow2 or auto (default auto)
      --allow-backing DIR
                       a qcow2 chain may follow backing and external data
                       files inside DIR (and its subdirectories); repeat for
                       more directories. Default: the image's own directory.
                       Chain files must be regular files, and backing files
                       need a declared format (docs/formats/qcow2-support.md)
  -o, --output FMT     human (default) or json; json prints exactly the
                       objects and merge rules of `qemu-img map --output=json`
      --json           same as --output json
      --set FILE       print the runs of a serialised extent set
                       (docs/formats/extent-set.md) instead of an image map
      --tracker DIR    print what a change tracker (strata tracker) saw
      --since NAME     with --tracker: changes after checkpoint NAME, up to
                       checkpoint --to NAME or now; exit 1 with "unknown"
                       when the information was lost (full backup needed)
      --list-bitmaps   list the persistent dirty bitmaps of a qcow2 image
      --list-snapshots list the internal snapshots of a qcow2 image
      --bitmap NAME    print the dirty ranges of persistent bitmap NAME;
                       an inconsistent (in_use) bitmap fails (exit 1: a full
                       backup is needed) unless --force is given
      --force          read an inconsistent bitmap anyway
      --diff FROM      ranges that may differ between internal snapshot FROM
                       and snapshot TO (--to TO) or the active image; from
                       L1/L2 metadata only (may over-report, never under)
      --layers N       ranges allocated in the top N layers of the backing
                       chain (what changed since an external snapshot)
      --reflink-diff OLD NEW
                       ranges that may differ between two reflink clones of
                       one file (OLD the earlier, e.g. `cp --reflink` copies
                       on XFS or btrfs), from their FIEMAP extent maps: no
                       data is read; may over-report, never under-reports
                       while neither file is written
      --granularity N  block size of --reflink-diff runs (default 64K; 4K
                       gives the file system's own precision)
  -h, --help           this text

Exit status: 0 success, 1 failure (bad image, I/O error), 2 usage error.
)";

struct Options {
  bool json = false;
  std::string format = "auto";
  ImageOpenOptions open;
};

int DumpImageMap(const std::string& path, const Options& opt) {
  auto image = OpenImage(path, opt.format, opt.open);
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

// --tracker DIR --since NAME [--to NAME]: read-only, never writes the state.
int DumpTracker(const std::string& dir, const cli::Args& args, const Options& opt) {
  auto since = args.Get("--since");
  if (!since) return cli::Usage(kTool, "--tracker needs --since NAME");
  HandleOptions o;  // through the tracker's owner when one answers
  o.read_only = true;
  auto t = TrackerHandle::Open(dir, o);
  if (!t) return cli::Fail(kTool, t.error());
  auto to = args.Get("--to");
  auto set = to ? (*t)->ChangedBetween(*since, *to) : (*t)->ChangedSince(*since);
  if (!set) return cli::Fail(kTool, set.error());
  cli::PrintRuns(*set, opt.json, dir + " since " + *since + (to ? " to " + *to : ""));
  return cli::kExitOk;
}

// The extents a strata archive (docs/formats/archive.md) defines.
int DumpArchive(const std::string& path, const Options& opt) {
  auto r = ArchiveReader::Open(path);
  if (!r) return cli::Fail(kTool, r.error());
  const auto& ext = (*r)->index().extents;
  if (opt.json) {
    cli::Json arr = cli::Json::array();
    for (const ExtentRecord& e : ext) {
      arr.push_back({{"start", e.guest_offset}, {"length", e.length}, {"zero", e.is_zero()}});
    }
    cli::PrintJson(arr);
    return cli::kExitOk;
  }
  const ArchiveHeader& h = (*r)->header();
  std::printf("%s: %s backup %s of a %s disk\n", path.c_str(), SourceKindName(h.source),
              IdToHex(h.id).c_str(), FormatBytes(h.disk_size).c_str());
  std::printf("%18s %18s %-5s %8s\n", "start", "length", "kind", "frame");
  uint64_t data = 0, zero = 0;
  for (const ExtentRecord& e : ext) {
    std::printf("%18s %18s %-5s %8s\n", Hex(e.guest_offset).c_str(), Hex(e.length).c_str(),
                e.is_zero() ? "zero" : "data", e.is_zero() ? "-" : std::to_string(e.frame).c_str());
    (e.is_zero() ? zero : data) += e.length;
  }
  std::printf("%zu extents: data %s, zeros %s, stored %s in %zu frames\n", ext.size(),
              FormatBytes(data).c_str(), FormatBytes(zero).c_str(),
              FormatBytes((*r)->stored_bytes()).c_str(), (*r)->index().frames.size());
  return cli::kExitOk;
}

// Whether `path` starts with the archive magic.
bool IsArchive(const std::string& path) {
  auto f = OpenDiskFile(path);  // never blocks (a FIFO is refused later, clearly)
  if (!f) return false;
  uint8_t magic[8] = {};
  auto got = (*f)->Read(0, magic);
  return got && *got == 8 && std::memcmp(magic, "STRATAAR", 8) == 0;
}

// --reflink-diff OLD NEW: changed runs between two clones (formats/raw/reflink.h).
int DumpReflinkDiff(const std::string& old_path, const std::string& new_path,
                    const cli::Args& args, const Options& opt) {
  Granularity g = Granularity::Default();
  if (auto text = args.Get("--granularity")) {
    auto bytes = cli::ParseSize(*text);
    if (!bytes) return cli::Usage(kTool, "--granularity: " + bytes.error().message());
    auto gr = Granularity::FromBytes(*bytes);
    if (!gr) return cli::Usage(kTool, "--granularity: " + gr.error().message());
    g = *gr;
  }
  ReflinkDiffStats st;
  auto set = ReflinkDiff(old_path, new_path, g, &st);
  if (!set) return cli::Fail(kTool, set.error());
  cli::PrintRuns(*set, opt.json, old_path + " -> " + new_path);
  if (!opt.json) {
    const ExtentMapDiffStats& b = st.bytes;
    std::printf("extents %" PRIu64 " -> %" PRIu64 "; bytes equal %s, moved %s, unshared %s, "
                "hole on one side %s, unprovable flags %s, size tail %s\n",
                st.old_extents, st.new_extents, FormatBytes(b.equal_bytes).c_str(),
                FormatBytes(b.moved_bytes).c_str(), FormatBytes(b.unshared_bytes).c_str(),
                FormatBytes(b.hole_bytes).c_str(), FormatBytes(b.doubtful_bytes).c_str(),
                FormatBytes(b.tail_bytes).c_str());
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

// The qcow2-only modes: bitmaps, snapshots, snapshot and layer diffs.
int DumpQcow2(const std::string& path, const cli::Args& args, const Options& opt) {
  if (opt.format == "raw") return cli::Usage(kTool, "this mode needs a qcow2 image");
  auto img = OpenQcow2Image(path, opt.open);
  if (!img) return cli::Fail(kTool, img.error());
  Qcow2Image& q = **img;
  if (args.Has("--list-bitmaps")) {
    auto list = q.Bitmaps();
    if (!list) return cli::Fail(kTool, list.error());
    cli::Json arr = cli::Json::array();
    if (!opt.json) {
      std::printf("%-24s %12s %-7s %-8s %s\n", "name", "granularity", "in_use", "enabled", "consistent");
    }
    for (const Qcow2Bitmap& b : *list) {
      if (opt.json) {
        arr.push_back({{"name", b.name},
                       {"granularity", b.granularity},
                       {"in_use", b.in_use},
                       {"auto", b.auto_flag},
                       {"consistent", b.consistent}});
      } else {
        std::printf("%-24s %12s %-7s %-8s %s\n", b.name.c_str(),
                    FormatBytes(b.granularity).c_str(), b.in_use ? "yes" : "no",
                    b.auto_flag ? "yes" : "no", b.consistent ? "yes" : "no (full backup needed)");
      }
    }
    if (opt.json) cli::PrintJson(arr);
    return cli::kExitOk;
  }
  if (args.Has("--list-snapshots")) {
    cli::Json arr = cli::Json::array();
    if (!opt.json) std::printf("%-8s %-24s %14s %12s %12s\n", "id", "name", "vm_state", "date", "disk_size");
    for (const Qcow2Snapshot& s : q.Snapshots()) {
      if (opt.json) {
        int64_t ns = static_cast<int64_t>(s.date_sec) * 1000000000 + s.date_nsec;
        arr.push_back({{"id", s.id},
                       {"name", s.name},
                       {"vm_state_size", s.vm_state_size},
                       {"date_sec", s.date_sec},
                       {"date_nsec", s.date_nsec},
                       {"date", cli::FormatTime(ns)},
                       {"date_unix_ns", ns},
                       {"vm_clock_nsec", s.vm_clock_nsec},
                       {"disk_size", s.disk_size}});
      } else {
        std::printf("%-8s %-24s %14" PRIu64 " %12u %12" PRIu64 "\n", s.id.c_str(), s.name.c_str(),
                    s.vm_state_size, s.date_sec, s.disk_size);
      }
    }
    if (opt.json) cli::PrintJson(arr);
    return cli::kExitOk;
  }
  Result<ExtentSet> set = Status::InvalidArgument("no mode");
  if (auto name = args.Get("--bitmap")) {
    set = q.LoadBitmap(*name, args.Has("--force"));
  } else if (auto from = args.Get("--diff")) {
    set = q.SnapshotDiff(*from, args.Get("--to").value_or(""));
  } else if (auto n = args.Get("--layers")) {
    auto layers = cli::ParseNumber("--layers", *n, 1, 1000000);
    if (!layers) return cli::Usage(kTool, layers.error().message());
    set = q.LayerDiff(static_cast<int>(*layers));
  }
  if (!set) return cli::Fail(kTool, set.error());
  cli::PrintRuns(*set, opt.json, path);
  return cli::kExitOk;
}

int Main(int argc, char** argv) {
  // -f, -o and -h are the short forms of --format, --output and --help.
  auto args = cli::Args::Parse(argc, argv, 1,
                               {"--allow-backing",
                                "--format", "--output", "--set", "--bitmap", "--diff", "--to",
                                "--layers", "--tracker", "--since", "--reflink-diff",
                                "--granularity"},
                               {"--help", "--json", "--list-bitmaps", "--list-snapshots",
                                "--force", "--version"});
  if (!args) return cli::Usage(kTool, args.error().message());
  if (args->Has("--help")) {
    std::fputs(kHelp, stdout);
    return cli::kExitOk;
  }
  if (args->Has("--version")) {
    std::printf("extent-dump (strata) %s\n", STRATA_VERSION_STRING);
    return cli::kExitOk;
  }
  Options opt;
  if (auto f = args->Get("--format")) opt.format = *f;
  opt.open.allowed_dirs = args->All("--allow-backing");
  if (opt.format != "auto" && opt.format != "raw" && opt.format != "qcow2") {
    return cli::Usage(kTool, "--format must be raw, qcow2 or auto, not '" + opt.format + "'");
  }
  std::string output = args->Get("--output").value_or("human");
  if (args->Has("--json")) output = "json";
  if (output != "human" && output != "json") {
    return cli::Usage(kTool, "--output must be human or json, not '" + output + "'");
  }
  opt.json = output == "json";
  cli::SetJsonErrors(opt.json);
  const auto& pos = args->positional();
  if (auto dir = args->Get("--tracker")) {
    if (!pos.empty()) return cli::Usage(kTool, "--tracker takes no IMAGE argument");
    return DumpTracker(*dir, *args, opt);
  }
  if (args->Has("--since")) return cli::Usage(kTool, "--since needs --tracker");
  if (auto old_path = args->Get("--reflink-diff")) {
    if (pos.size() != 1) return cli::Usage(kTool, "--reflink-diff needs OLD and NEW files");
    return DumpReflinkDiff(*old_path, pos[0], *args, opt);
  }
  if (args->Has("--granularity")) return cli::Usage(kTool, "--granularity needs --reflink-diff");
  if (auto set = args->Get("--set")) {
    if (!pos.empty()) return cli::Usage(kTool, "--set takes no IMAGE argument");
    return DumpSet(*set, opt);
  }
  if (pos.size() != 1) {
    return cli::Usage(kTool, pos.empty() ? "missing IMAGE" : "expected one IMAGE, got " +
                                                                 std::to_string(pos.size()));
  }
  int modes = args->Has("--list-bitmaps") + args->Has("--list-snapshots") +
              args->Has("--bitmap") + args->Has("--diff") + args->Has("--layers");
  if (modes > 1) return cli::Usage(kTool, "choose one of --list-bitmaps, --list-snapshots, "
                                          "--bitmap, --diff and --layers");
  if (args->Has("--to") && !args->Has("--diff")) return cli::Usage(kTool, "--to needs --diff");
  if (args->Has("--force") && !args->Has("--bitmap")) {
    return cli::Usage(kTool, "--force needs --bitmap");
  }
  if (modes == 1) return DumpQcow2(pos[0], *args, opt);
  if (IsArchive(pos[0])) return DumpArchive(pos[0], opt);
  return DumpImageMap(pos[0], opt);
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
  return strata::Main(argc, argv);
}
