// `strata init|backup|list|info|restore|verify|merge`: the repository CLI.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

#include "engine/backup/jobs.h"
#include "engine/backup/pipeline.h"
#include "engine/backup/repository.h"
#include "extents/endian.h"
#include "formats/open_image.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace strata::cli {
namespace {

// ---- shared helpers ----

std::string Rate(uint64_t bytes, double secs) {
  if (secs <= 0) return "-";
  return FormatBytes(static_cast<uint64_t>(static_cast<double>(bytes) / secs)) + "/s";
}

// A progress line on stderr (bytes, rate, ETA) when stderr is a terminal.
class Progress {
 public:
  explicit Progress(const char* what) : what_(what), on_(::isatty(2) == 1), t0_(Clock::now()) {}
  ~Progress() {
    if (on_ && drawn_) std::fputs("\r\033[K", stderr);
  }
  void operator()(uint64_t done, uint64_t total) {
    if (!on_) return;
    auto now = Clock::now();
    if (drawn_ && now - last_ < std::chrono::milliseconds(200) && done < total) return;
    last_ = now;
    drawn_ = true;
    double secs = std::chrono::duration<double>(now - t0_).count();
    double rate = secs > 0 ? static_cast<double>(done) / secs : 0;
    double eta = rate > 0 && total > done ? static_cast<double>(total - done) / rate : 0;
    std::fprintf(stderr, "\r\033[K%s %s / %s  %s  ETA %.0f s", what_,
                 FormatBytes(done).c_str(), FormatBytes(total).c_str(),
                 Rate(done, secs).c_str(), eta);
  }

 private:
  using Clock = std::chrono::steady_clock;
  const char* what_;
  bool on_, drawn_ = false;
  Clock::time_point t0_, last_;
};

// Pipeline flags shared by backup and restore.
const std::set<std::string> kPipelineFlags = {"--level", "--chunk-size", "--queue-depth",
                                              "--workers", "--memory"};

Status ParsePipeline(const Args& a, PipelineOptions* o) {
  auto num = [&](const char* flag, uint64_t lo, uint64_t hi, uint64_t* out) -> Status {
    auto v = a.Get(flag);
    if (!v) return Status::Ok();
    auto n = ParseSize(*v);
    if (!n || *n < lo || *n > hi) {
      return Status::InvalidArgument(std::string(flag) + " must be between " +
                                     std::to_string(lo) + " and " + std::to_string(hi));
    }
    *out = *n;
    return Status::Ok();
  };
  uint64_t level = static_cast<uint64_t>(o->level), chunk = o->chunk_size, qd = o->queue_depth,
           workers = o->workers, mem = o->memory_limit;
  STRATA_RETURN_IF_ERROR(num("--level", 1, 19, &level));
  STRATA_RETURN_IF_ERROR(num("--chunk-size", 4096, 64 << 20, &chunk));
  STRATA_RETURN_IF_ERROR(num("--queue-depth", 1, 1024, &qd));
  STRATA_RETURN_IF_ERROR(num("--workers", 1, 256, &workers));
  STRATA_RETURN_IF_ERROR(num("--memory", 16 << 20, uint64_t{1} << 40, &mem));
  o->level = static_cast<int>(level);
  o->chunk_size = static_cast<uint32_t>(chunk);
  o->queue_depth = static_cast<unsigned>(qd);
  o->workers = static_cast<unsigned>(workers);
  o->memory_limit = mem;
  if (a.Has("--no-direct")) o->direct_io = false;
  return Status::Ok();
}

std::vector<const ArchiveReader*> Raw(const std::vector<std::unique_ptr<ArchiveReader>>& v) {
  std::vector<const ArchiveReader*> r;
  for (auto& p : v) r.push_back(p.get());
  return r;
}

void PrintEntryJson(const CatalogEntry& e, bool trailing_comma) {
  std::printf("{\"id\": \"%s\", \"parent\": %s, \"created\": %s, \"created_unix_ns\": %" PRIu64
              ", \"source\": \"%s\", \"source_name\": %s, \"disk_size\": %" PRIu64
              ", \"granularity\": %" PRIu64 ", \"logical_bytes\": %" PRIu64
              ", \"stored_bytes\": %" PRIu64 "}%s\n",
              IdToHex(e.id).c_str(),
              IsNullId(e.parent) ? "null" : ("\"" + IdToHex(e.parent) + "\"").c_str(),
              JsonString(FormatTime(e.created_unix_ns)).c_str(), e.created_unix_ns,
              SourceKindName(e.source), JsonString(e.source_name).c_str(), e.disk_size,
              uint64_t{1} << e.granularity_shift, e.logical_bytes, e.stored_bytes,
              trailing_comma ? "," : "");
}

// ---- strata init ----

int InitMain(int argc, char** argv) {
  auto a = Args::Parse(argc, argv, 1, {}, {"--help", "--json"});
  if (!a) return Usage("strata init", a.error().message());
  if (a->Has("--help")) {
    std::puts("Usage: strata init [--json] REPO\n\nCreates an empty backup repository in directory REPO.");
    return kExitOk;
  }
  if (a->positional().size() != 1) return Usage("strata init", "expected one REPO directory");
  const std::string& repo = a->positional()[0];
  Status s = Repository::Init(repo);
  if (!s.ok()) return Fail("strata init", s);
  if (a->Has("--json")) std::printf("{\"repository\": %s}\n", JsonString(repo).c_str());
  else std::printf("initialised repository %s\n", repo.c_str());
  return kExitOk;
}

// ---- strata backup ----

constexpr char kBackupHelp[] = R"(Usage: strata backup --repo REPO SOURCE [OPTIONS] IMAGE

Backs up IMAGE (raw or qcow2) into the repository. SOURCE is one of:
  --full                       every allocated extent (a full backup)
  --bitmap NAME                the extents of qcow2 persistent dirty bitmap NAME
  --since-snapshot SNAP        what changed since qcow2 internal snapshot SNAP
  --tracker DIR --since NAME   what a strata tracker recorded since checkpoint NAME
  --scan                       read everything, store chunks whose XXH3 differs
                               from the parent chain (disks without tracking)
Options:
  --parent ID       parent backup (default: the latest); not with --full
  --force           use an inconsistent (in_use) qcow2 bitmap anyway
  --format FMT      raw, qcow2 or auto (default)
  --granularity N   block size of a full backup (default 64K; incrementals
                    take the parent's)
  --level N         zstd level (default 1)          --chunk-size N (default 1M)
  --queue-depth N   reads in flight (default 32)    --workers N (default: cores)
  --memory N        memory bound (default 256M)     --json   machine-readable result
  --no-direct       read raw sources through the page cache (default O_DIRECT
                    where aligned)
Exit status: 0 success, 1 failure, 2 usage error. A failed or interrupted
backup leaves the repository as it was.
)";

int BackupMain(int argc, char** argv) {
  const char* tool = "strata backup";
  std::set<std::string> vf = {"--repo", "--bitmap", "--since-snapshot", "--tracker", "--since",
                              "--parent", "--format", "--granularity"};
  vf.insert(kPipelineFlags.begin(), kPipelineFlags.end());
  auto a = Args::Parse(argc, argv, 1, vf,
                       {"--help", "--json", "--full", "--scan", "--force", "--no-direct"});
  if (!a) return Usage(tool, a.error().message());
  if (a->Has("--help")) {
    std::fputs(kBackupHelp, stdout);
    return kExitOk;
  }
  if (!a->Has("--repo")) return Usage(tool, "--repo is required");
  if (a->positional().size() != 1) return Usage(tool, "expected one IMAGE");
  int sources = a->Has("--full") + a->Has("--scan") + a->Has("--bitmap") +
                a->Has("--since-snapshot") + a->Has("--tracker");
  if (sources != 1) {
    return Usage(tool, "choose exactly one of --full, --scan, --bitmap, --since-snapshot, --tracker");
  }
  if (a->Has("--tracker") != a->Has("--since")) return Usage(tool, "--tracker and --since go together");
  if (a->Has("--full") && a->Has("--parent")) return Usage(tool, "a --full backup has no parent");
  PipelineOptions opt;
  if (Status s = ParsePipeline(*a, &opt); !s.ok()) return Usage(tool, s.message());
  const bool json = a->Has("--json");
  BackupRequest req;
  req.image = a->positional()[0];
  req.format = a->Get("--format").value_or("auto");
  req.parent = a->Get("--parent").value_or("latest");
  req.pipeline = opt;
  if (auto gv = a->Get("--granularity")) {
    auto gb = ParseSize(*gv);
    if (!gb) return Usage(tool, gb.error().message());
    req.granularity = *gb;
  }
  if (a->Has("--full")) {
    req.source.kind = SourceKind::kFull;
  } else if (a->Has("--scan")) {
    req.source.kind = SourceKind::kScan;
  } else if (a->Has("--tracker")) {
    req.source.kind = SourceKind::kTracker;
    req.source.tracker_dir = *a->Get("--tracker");
    req.source.name = *a->Get("--since");
  } else if (a->Has("--bitmap")) {
    req.source.kind = SourceKind::kBitmap;
    req.source.name = *a->Get("--bitmap");
    req.source.force = a->Has("--force");
  } else {
    req.source.kind = SourceKind::kSnapshot;
    req.source.name = *a->Get("--since-snapshot");
  }
  auto repo = Repository::Open(*a->Get("--repo"));
  if (!repo) return Fail(tool, repo.error());
  Progress progress("backup");
  req.pipeline.progress = [&](uint64_t d, uint64_t t) { progress(d, t); };
  auto result = BackupToRepository(**repo, req);
  if (!result) return Fail(tool, result.error());
  const CatalogEntry& entry = result->entry;
  const BackupStats& st = result->stats;
  if (!st.notice.empty() && !json) std::fprintf(stderr, "strata backup: note: %s\n", st.notice.c_str());
  if (json) {
    std::printf("{\"id\": \"%s\", \"parent\": %s, \"source\": \"%s\", \"changed_bytes\": %" PRIu64
                ", \"read_bytes\": %" PRIu64 ", \"data_bytes\": %" PRIu64 ", \"zero_bytes\": %" PRIu64
                ", \"skipped_bytes\": %" PRIu64 ", \"stored_bytes\": %" PRIu64
                ", \"archive_bytes\": %" PRIu64 ", \"seconds\": %.3f, \"io_uring\": %s"
                ", \"direct_io\": %s, \"registered_buffers\": %s, \"notice\": %s}\n",
                IdToHex(entry.id).c_str(),
                IsNullId(entry.parent) ? "null" : ("\"" + IdToHex(entry.parent) + "\"").c_str(),
                SourceKindName(entry.source), st.planned_bytes, st.read_bytes, st.data_bytes,
                st.zero_bytes, st.skipped_bytes, st.stored_bytes, st.archive_bytes, st.seconds,
                st.used_uring ? "true" : "false", st.used_direct ? "true" : "false",
                st.registered_buffers ? "true" : "false", JsonString(st.notice).c_str());
  } else {
    double ratio = st.stored_bytes ? static_cast<double>(st.data_bytes) / static_cast<double>(st.stored_bytes) : 0;
    std::printf("backup %s (%s%s%s) of %s\n", IdToHex(entry.id).c_str(), SourceKindName(entry.source),
                entry.source_name.empty() ? "" : " ", entry.source_name.c_str(), req.image.c_str());
    std::printf("  changed %s, read %s, data %s, zeros %s%s, stored %s (ratio %.2f)\n",
                FormatBytes(st.planned_bytes).c_str(), FormatBytes(st.read_bytes).c_str(),
                FormatBytes(st.data_bytes).c_str(), FormatBytes(st.zero_bytes).c_str(),
                st.skipped_bytes ? (", unchanged " + FormatBytes(st.skipped_bytes)).c_str() : "",
                FormatBytes(st.stored_bytes).c_str(), ratio);
    std::printf("  %.2f s, %s read%s\n", st.seconds, Rate(st.read_bytes, st.seconds).c_str(),
                st.used_uring ? " through io_uring" : "");
  }
  return kExitOk;
}

// ---- strata list / info ----

int ListMain(int argc, char** argv) {
  auto a = Args::Parse(argc, argv, 1, {"--repo"}, {"--help", "--json"});
  if (!a) return Usage("strata list", a.error().message());
  if (a->Has("--help")) {
    std::puts("Usage: strata list --repo REPO [--json]\n\nLists the backups of a repository, oldest first.");
    return kExitOk;
  }
  if (!a->Has("--repo") || !a->positional().empty()) return Usage("strata list", "expected --repo REPO");
  auto repo = Repository::Open(*a->Get("--repo"));
  if (!repo) return Fail("strata list", repo.error());
  const auto& es = (*repo)->entries();
  if (a->Has("--json")) {
    std::puts("[");
    for (size_t i = 0; i < es.size(); ++i) PrintEntryJson(es[i], i + 1 < es.size());
    std::puts("]");
    return kExitOk;
  }
  std::printf("%-32s  %-8s  %-20s  %-18s %10s %10s\n", "id", "parent", "created", "source",
              "logical", "stored");
  for (const CatalogEntry& e : es) {
    std::string src = SourceKindName(e.source);
    if (!e.source_name.empty()) src += " " + e.source_name;
    std::printf("%-32s  %-8s  %-20s  %-18s %10s %10s\n", IdToHex(e.id).c_str(),
                IsNullId(e.parent) ? "-" : IdToHex(e.parent).substr(0, 8).c_str(),
                FormatTime(e.created_unix_ns).c_str(), src.c_str(),
                FormatBytes(e.logical_bytes).c_str(), FormatBytes(e.stored_bytes).c_str());
  }
  std::printf("%zu backups\n", es.size());
  return kExitOk;
}

int InfoMain(int argc, char** argv) {
  auto a = Args::Parse(argc, argv, 1, {}, {"--help", "--json"});
  if (!a) return Usage("strata info", a.error().message());
  if (a->Has("--help")) {
    std::puts("Usage: strata info [--json] ARCHIVE\n\nPrints the header and statistics of an archive file.");
    return kExitOk;
  }
  if (a->positional().size() != 1) return Usage("strata info", "expected one ARCHIVE file");
  auto r = ArchiveReader::Open(a->positional()[0]);
  if (!r) return Fail("strata info", r.error());
  const ArchiveHeader& h = (*r)->header();
  CatalogEntry e = Repository::EntryFor(**r);
  if (a->Has("--json")) {
    PrintEntryJson(e, false);
    return kExitOk;
  }
  std::printf("archive     %s\nid          %s\nparent      %s\ncreated     %s\nsource      %s %s\n"
              "disk size   %s (%" PRIu64 " bytes)\ngranularity %s\ncompression zstd level %d, chunks of %s\n"
              "frames      %zu\nextents     %zu\nlogical     %s\nstored      %s (file %s)\n",
              (*r)->path().c_str(), IdToHex(h.id).c_str(),
              h.is_full() ? "- (full backup)" : IdToHex(h.parent_id).c_str(),
              FormatTime(h.created_unix_ns).c_str(), SourceKindName(h.source), h.source_name.c_str(),
              FormatBytes(h.disk_size).c_str(), h.disk_size,
              FormatBytes(uint64_t{1} << h.granularity_shift).c_str(), h.level,
              FormatBytes(h.chunk_size).c_str(), (*r)->index().frames.size(),
              (*r)->index().extents.size(), FormatBytes((*r)->logical_bytes()).c_str(),
              FormatBytes((*r)->stored_bytes()).c_str(), FormatBytes((*r)->file_size()).c_str());
  return kExitOk;
}

// ---- strata restore ----

int RestoreMain(int argc, char** argv) {
  const char* tool = "strata restore";
  std::set<std::string> vf = {"--repo", "--backup"};
  vf.insert(kPipelineFlags.begin(), kPipelineFlags.end());
  auto a = Args::Parse(argc, argv, 1, vf, {"--help", "--json", "--force", "--no-direct"});
  if (!a) return Usage(tool, a.error().message());
  if (a->Has("--help")) {
    std::puts(
        "Usage: strata restore --repo REPO [--backup ID|latest] [--force] [--json] OUTPUT\n\n"
        "Restores a backup (default: the latest) to OUTPUT, a raw image file (sparse:\n"
        "zero ranges become holes) or a block device. Every block is read from exactly\n"
        "one archive of the chain and written once; every checksum is verified.\n"
        "An existing regular file is only overwritten with --force. Data ranges are\n"
        "allocated before writing (a full disk fails first) and aligned data is\n"
        "written with O_DIRECT through io_uring.\n\n"
        "Options:\n"
        "  --queue-depth N   writes in flight (default 32)   --workers N (default: cores)\n"
        "  --memory N        memory bound (default 256M)     --no-direct  use the page cache");
    return kExitOk;
  }
  if (!a->Has("--repo") || a->positional().size() != 1) return Usage(tool, "expected --repo REPO OUTPUT");
  PipelineOptions opt;
  if (Status s = ParsePipeline(*a, &opt); !s.ok()) return Usage(tool, s.message());
  const std::string out = a->positional()[0];
  struct stat st;
  if (::stat(out.c_str(), &st) == 0 && S_ISREG(st.st_mode) && !a->Has("--force")) {
    return Fail(tool, Status::AlreadyExists(out + ": exists (use --force to overwrite)"));
  }
  auto repo = Repository::Open(*a->Get("--repo"));
  if (!repo) return Fail(tool, repo.error());
  auto e = (*repo)->Find(a->Get("--backup").value_or("latest"));
  if (!e) return Fail(tool, e.error(), true);
  Progress progress("restore");
  opt.progress = [&](uint64_t d, uint64_t t) { progress(d, t); };
  auto stats = RestoreFromRepository(**repo, IdToHex((*e)->id), out, opt);
  if (!stats) return Fail(tool, stats.error());
  if (a->Has("--json")) {
    std::printf("{\"id\": \"%s\", \"output\": %s, \"chain\": %zu, \"data_bytes\": %" PRIu64
                ", \"zero_bytes\": %" PRIu64 ", \"frames_read\": %" PRIu64
                ", \"stored_bytes_read\": %" PRIu64 ", \"seconds\": %.3f, \"io_uring\": %s"
                ", \"direct_io\": %s, \"registered_buffers\": %s, \"notice\": %s}\n",
                IdToHex((*e)->id).c_str(), JsonString(out).c_str(), stats->chain_length, stats->data_bytes,
                stats->zero_bytes, stats->frames_read, stats->stored_bytes_read, stats->seconds,
                stats->used_uring ? "true" : "false", stats->used_direct ? "true" : "false",
                stats->registered_buffers ? "true" : "false", JsonString(stats->notice).c_str());
  } else {
    if (!stats->notice.empty()) std::fprintf(stderr, "%s: note: %s\n", tool, stats->notice.c_str());
    std::printf("restored %s (chain of %zu) to %s: %s data, %s zeros, %.2f s (%s)\n",
                IdToHex((*e)->id).c_str(), stats->chain_length, out.c_str(),
                FormatBytes(stats->data_bytes).c_str(), FormatBytes(stats->zero_bytes).c_str(),
                stats->seconds, Rate(stats->data_bytes, stats->seconds).c_str());
  }
  return kExitOk;
}

// ---- strata verify ----

int VerifyMain(int argc, char** argv) {
  const char* tool = "strata verify";
  auto a = Args::Parse(argc, argv, 1, {"--repo", "--backup", "--against", "--format"},
                       {"--help", "--json"});
  if (!a) return Usage(tool, a.error().message());
  if (a->Has("--help")) {
    std::puts(
        "Usage: strata verify --repo REPO [--backup ID] [--against IMAGE] [--json]\n\n"
        "Checks every checksum of every archive in the chain of a backup (default:\n"
        "every backup). --against IMAGE also compares the restored view with IMAGE\n"
        "block by block.");
    return kExitOk;
  }
  if (!a->Has("--repo") || !a->positional().empty()) return Usage(tool, "expected --repo REPO");
  auto repo = Repository::Open(*a->Get("--repo"));
  if (!repo) return Fail(tool, repo.error());
  std::vector<ArchiveId> targets;
  if (auto b = a->Get("--backup")) {
    auto e = (*repo)->Find(*b);
    if (!e) return Fail(tool, e.error(), true);
    targets.push_back((*e)->id);
  } else {
    for (const CatalogEntry& e : (*repo)->entries()) targets.push_back(e.id);
    if (a->Has("--against")) {
      if (targets.empty()) return Fail(tool, Status::NotFound((*repo)->dir() + ": no backups"));
      targets = {targets.back()};
    }
  }
  auto t0 = std::chrono::steady_clock::now();
  std::set<ArchiveId> verified;
  uint64_t archives = 0, mismatched = 0, compared = 0;
  for (const ArchiveId& id : targets) {
    auto chain = (*repo)->OpenChain(id);
    if (!chain) return Fail(tool, chain.error());
    if (Status s = CheckChain(Raw(*chain)); !s.ok()) return Fail(tool, s);
    for (auto& r : *chain) {
      if (!verified.insert(r->header().id).second) continue;
      if (Status s = VerifyArchive(*r); !s.ok()) return Fail(tool, s);
      ++archives;
    }
    if (auto against = a->Get("--against")) {
      auto img = OpenImage(*against, a->Get("--format").value_or("auto"));
      if (!img) return Fail(tool, img.error());
      if ((*img)->size() != (*chain)[0]->header().disk_size) {
        return Fail(tool, Status::Corruption(*against + ": size differs from the backup"));
      }
      std::vector<uint8_t> buf;
      uint64_t first_bad = UINT64_MAX;
      Status s = ForEachResolved(Raw(*chain), [&](uint64_t off, std::span<const uint8_t> d,
                                                  uint64_t zero_len) -> Status {
        uint64_t len = d.empty() ? zero_len : d.size();
        for (uint64_t at = 0; at < len; at += 1 << 20) {
          uint64_t n = std::min<uint64_t>(1 << 20, len - at);
          buf.resize(n);
          STRATA_RETURN_IF_ERROR((*img)->Read(off + at, buf));
          bool same = d.empty() ? std::all_of(buf.begin(), buf.end(), [](uint8_t c) { return c == 0; })
                                : std::equal(buf.begin(), buf.end(), d.begin() + at);
          if (!same) {
            ++mismatched;
            first_bad = std::min(first_bad, off + at);
          }
          compared += n;
        }
        return Status::Ok();
      });
      if (!s.ok()) return Fail(tool, s);
      if (mismatched) {
        return Fail(tool, Status::Corruption(*against + ": differs from backup " + IdToHex(id) +
                                             " (first difference in the MiB at " + Hex(first_bad) + ")"));
      }
    }
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (a->Has("--json")) {
    std::printf("{\"ok\": true, \"archives\": %" PRIu64 ", \"compared_bytes\": %" PRIu64
                ", \"seconds\": %.3f}\n", archives, compared, secs);
  } else {
    std::printf("verified %" PRIu64 " archives%s: all checksums match (%.2f s)\n", archives,
                compared ? (", restored view identical to " + *a->Get("--against")).c_str() : "", secs);
  }
  return kExitOk;
}

// ---- strata merge ----

constexpr char kMergeHelp[] = R"(Usage: strata merge --repo REPO ACTION [--json]

Offline operations on backups; the source disk is not needed.
  --remove ID          drop backup ID; each backup built on it is rewritten to
                       hold ID's changes too, so every later backup stays
                       restorable (removing a full backup makes its children full)
  --fold ID            fold ID's parent into ID (the parent is removed as above)
  --synthetic-full ID  write a new full backup with the same content as ID
)";

int MergeMain(int argc, char** argv) {
  const char* tool = "strata merge";
  std::set<std::string> vf = {"--repo", "--remove", "--fold", "--synthetic-full"};
  vf.insert(kPipelineFlags.begin(), kPipelineFlags.end());
  auto a = Args::Parse(argc, argv, 1, vf, {"--help", "--json"});
  if (!a) return Usage(tool, a.error().message());
  if (a->Has("--help")) {
    std::fputs(kMergeHelp, stdout);
    return kExitOk;
  }
  int actions = a->Has("--remove") + a->Has("--fold") + a->Has("--synthetic-full");
  if (!a->Has("--repo") || actions != 1 || !a->positional().empty()) {
    return Usage(tool, "expected --repo REPO and one of --remove, --fold, --synthetic-full");
  }
  PipelineOptions opt;
  if (Status s = ParsePipeline(*a, &opt); !s.ok()) return Usage(tool, s.message());
  auto repo = Repository::Open(*a->Get("--repo"));
  if (!repo) return Fail(tool, repo.error());
  Repository& r = **repo;
  const bool json = a->Has("--json");

  if (auto which = a->Get("--synthetic-full")) {
    auto e = r.Find(*which);
    if (!e) return Fail(tool, e.error(), true);
    const CatalogEntry src = **e;  // copied: the catalog grows below
    auto res = SyntheticFull(r, src.id, opt);
    if (!res) return Fail(tool, res.error());
    const auto* st = &res->stats;
    const CatalogEntry h = res->entry;
    if (json) std::printf("{\"id\": \"%s\", \"synthetic_full_of\": \"%s\", \"stored_bytes\": %" PRIu64 "}\n",
                          IdToHex(h.id).c_str(), IdToHex(src.id).c_str(), st->stored_bytes);
    else std::printf("synthetic full %s of %s: %s data, stored %s\n", IdToHex(h.id).c_str(),
                     IdToHex(src.id).c_str(), FormatBytes(st->data_bytes).c_str(),
                     FormatBytes(st->stored_bytes).c_str());
    return kExitOk;
  }

  // --remove X, or --fold C (= remove C's parent).
  auto e = r.Find(a->Has("--remove") ? *a->Get("--remove") : *a->Get("--fold"));
  if (!e) return Fail(tool, e.error(), true);
  ArchiveId victim = (*e)->id;
  if (a->Has("--fold")) {
    if (IsNullId((*e)->parent)) {
      return Fail(tool, Status::InvalidArgument(IdToHex(victim) + " is a full backup: nothing to fold"), true);
    }
    victim = (*e)->parent;
  }
  auto removed = RemoveBackup(r, victim, opt);
  if (!removed) return Fail(tool, removed.error());
  const std::vector<ArchiveId>& children = *removed;
  uint64_t rewritten_bytes = 0;
  for (const ArchiveId& c : children) {
    for (const CatalogEntry& x : r.entries()) {
      if (x.id == c) rewritten_bytes += x.stored_bytes;
    }
  }
  if (json) {
    std::printf("{\"removed\": \"%s\", \"rewritten\": [", IdToHex(victim).c_str());
    for (size_t i = 0; i < children.size(); ++i) {
      std::printf("%s\"%s\"", i ? ", " : "", IdToHex(children[i]).c_str());
    }
    std::printf("], \"rewritten_stored_bytes\": %" PRIu64 "}\n", rewritten_bytes);
  } else {
    std::printf("removed %s; rewrote %zu backup%s built on it (%s stored)\n", IdToHex(victim).c_str(),
                children.size(), children.size() == 1 ? "" : "s", FormatBytes(rewritten_bytes).c_str());
  }
  return kExitOk;
}

Registrar r1("init", "create an empty backup repository", &InitMain);
Registrar r2("backup", "back up the changed extents of an image into a repository", &BackupMain);
Registrar r3("list", "list the backups of a repository", &ListMain);
Registrar r4("info", "print the header of an archive file", &InfoMain);
Registrar r5("restore", "restore a backup to a raw file or block device", &RestoreMain);
Registrar r6("verify", "check every checksum of backups, optionally against an image", &VerifyMain);
Registrar r7("merge", "remove, fold or synthesise backups offline", &MergeMain);

}  // namespace
}  // namespace strata::cli
