// `strata init|backup|list|info|restore|verify|merge`: the repository CLI.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <ctime>
#include <optional>
#include <string>
#include <vector>

#include "strata/jobs.h"
#include "strata/pipeline.h"
#include "strata/repository.h"
#include "extents/endian.h"
#include "strata/open_image.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/live_cli.h"
#include "tools/progress.h"
#include "tools/quiesce_window.h"

#include <nlohmann/json.hpp>

namespace strata::cli {
namespace {

// ---- shared helpers ----

std::string Rate(uint64_t bytes, double secs) {
  if (secs <= 0) return "-";
  return FormatBytes(static_cast<uint64_t>(static_cast<double>(bytes) / secs)) + "/s";
}

// Pipeline flags: backups compress (all of them), restores only read and
// write (no level or chunk size), merges rewrite archives in their own
// chunk size.
const std::set<std::string> kPipelineFlags = {"--level", "--chunk-size", "--queue-depth",
                                              "--workers", "--memory"};
const std::set<std::string> kRestoreFlags = {"--queue-depth", "--workers", "--memory"};
const std::set<std::string> kMergeFlags = {"--level", "--queue-depth", "--workers", "--memory"};


// Opens --repo for reading (a shared lock: backups and merges wait) or for
// writing (exclusive; completes what an interrupted writer left, printing
// what it did on stderr).
Result<std::unique_ptr<Repository>> OpenRepo(const Args& a, bool write, const char* tool) {
  RepositoryOptions o;
  o.read_only = !write;
  STRATA_ASSIGN_OR_RETURN(o.lock_wait, LockWait(a));
  STRATA_ASSIGN_OR_RETURN(auto repo, Repository::Open(*a.Get("--repo"), o));
  for (const std::string& n : repo->recovery_notes()) std::fprintf(stderr, "%s: note: %s\n", tool, n.c_str());
  return repo;
}

// Shows each phase's time with -v and returns them as JSON (backup and
// restore report the same way).
Json ReportPhases(const std::vector<PhaseTime>& phases, const std::string& tool, Progress& progress) {
  Json j = Json::array();
  for (const PhaseTime& ph : phases) {
    char line[160];
    std::snprintf(line, sizeof line, "%s: phase %s: %.3f s", tool.c_str(), ph.name.c_str(), ph.seconds);
    progress.Detail(line);
    j.push_back({{"name", ph.name}, {"seconds", ph.seconds}});
  }
  return j;
}

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

Json PointJson(const ChainPoint& p) {
  if (p.is_none()) return nullptr;
  return Json{{"kind", PointKindName(p.kind)},
              {"source", Id128ToHex(p.source)},
              {"seq", p.seq},
              {"name", p.name},
              {"description", p.Describe()}};
}

Json EntryJson(const CatalogEntry& e) {
  const ArchiveHeader& h = e.header;
  Json j;
  j["id"] = IdToHex(h.id);
  j["parent"] = h.is_full() ? Json(nullptr) : Json(IdToHex(h.parent_id));
  j["disk"] = {{"id", Id128ToHex(h.disk_id)}, {"name", h.disk_name}, {"format", DiskFormatName(h.disk_format)}};
  j["source"] = SourceKindName(h.source);
  j["source_name"] = h.source_name;
  j["merged"] = h.merged;
  j["quiesced"] = h.quiesced;
  j["start"] = PointJson(h.start);
  j["end"] = PointJson(h.end);
  j["created"] = FormatTime(static_cast<int64_t>(h.created_unix_ns));
  j["created_unix_ns"] = h.created_unix_ns;
  j["content_time"] = FormatTime(static_cast<int64_t>(h.content_unix_ns));
  j["content_unix_ns"] = h.content_unix_ns;
  j["disk_size"] = h.disk_size;
  j["granularity"] = uint64_t{1} << h.granularity_shift;
  j["logical_bytes"] = e.logical_bytes;
  j["stored_bytes"] = e.stored_bytes;
  j["archive_bytes"] = e.archive_bytes;
  j["archive_version"] = h.version;
  return j;
}

std::string SourceText(const ArchiveHeader& h) {
  std::string s = SourceKindName(h.source);
  if (!h.source_name.empty()) s += " " + h.source_name;
  if (h.merged) s += " (merged)";
  return s;
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
  if (a->Has("--json")) PrintJson(Json{{"repository", repo}});
  else std::printf("initialised repository %s\n", repo.c_str());
  return kExitOk;
}

// ---- strata backup ----

constexpr char kBackupHelp[] = R"(Usage: strata backup --repo REPO SOURCE [END POINT] [OPTIONS] IMAGE

Backs up IMAGE (raw or qcow2) into the repository. Every backup records the
disk it belongs to and the point of the source's history it ends at; an
incremental starts exactly where its parent ends, or it is refused.

SOURCE is one of (running VMs: --nbd, --qmp, --libvirt; see 'strata backup
--nbd --help'):
  --full                 every allocated extent (a full backup)
  --scan                 read everything, store only chunks whose XXH3 differs
                         from the parent chain (no tracking needed; always safe)
  --tracker DIR          incremental in one step: take a new checkpoint in the
                         strata tracker DIR and back up what changed between the
                         parent's checkpoint and it (through DIR's owner when a
                         process such as nbdkit --filter=strata serves
                         DIR/control.sock)
     --since NAME        (experts) start at checkpoint NAME, which must be where
                         the parent ends
     --checkpoint NAME   name the new checkpoint (default strata-<backup id>)
  --bitmap NAME          offline qcow2: back up what the bitmap strata added at the
                         parent backup recorded, and add a fresh one for the next
                         backup (NAME labels the series; start it with
                         --full --bitmap NAME)
  --since-snapshot SNAP  what changed since qcow2 internal snapshot SNAP (the
                         parent must end at SNAP, e.g. --full --snapshot SNAP)
  --reflink              raw image on XFS or btrfs: clone it (FICLONE), back up
                         the clone, and read only the extents where it differs
                         from the parent's clone (FIEMAP; no tracker, no full
                         read); the parent's clone is removed afterwards
END POINT (with --full or --scan; where the next incremental starts):
  --tracker DIR          take a new checkpoint first (inside the freeze window)
  --bitmap NAME          add a fresh qcow2 bitmap first
  --snapshot SNAP        read qcow2 internal snapshot SNAP instead of the active
                         layer (also with --since-snapshot)
  --reflink              clone the raw image first and back up the clone
     --snapshot-dir DIR  where clones are kept (same file system; default
                         .strata-snapshots beside the image)
Options:
  --disk NAME       the disk's name in the repository (default: IMAGE's
                    absolute path); a known disk keeps its format
  --parent ID       parent backup (default: the newest backup of the disk that
                    ends where this one starts); not with --full
  --quiesce TARGET  take the checkpoint or bitmap inside a freeze window
                    (repeatable; with --exec, --deadline, --hooks, --protect,
                    --confine, --force-freeze, --state-dir as for
                    'strata checkpoint'; the freeze is journaled first)
  --format FMT      raw, qcow2 or auto (default; a known disk keeps its format)
  --allow-backing DIR  a qcow2 image's backing and data files may lie in DIR
                    (repeatable; default: the image's own directory only;
                    devices and files outside are refused)
  --granularity N   block size of a full backup (default 64K; incrementals
                    take the parent's)
  --level N         zstd level (default 1)          --chunk-size N (default 1M)
  --queue-depth N   reads in flight (default 32)    --workers N (default: cores)
  --memory N        memory bound (default 256M)     --json   machine-readable result
  --no-direct       read raw sources through the page cache (default O_DIRECT
                    where aligned)
  --progress        show progress even when stderr is not a terminal (with
                    --json: JSON lines on stderr)
  -q, --quiet       no progress line, no notes    -v, --verbose  phase times
  -r REPO           short for --repo              -h, --help     this text
Sizes (--granularity, --chunk-size, --memory) are bytes or multiples as
qemu-img takes them: 64k, 4G, 1.5G, 4GiB.
Exit status: 0 success, 1 failure, 2 usage error. A failed or interrupted
backup leaves the repository as it was.
)";

int BackupMain(int argc, char** argv) {
  if (IsLiveBackup(argc, argv)) return ExecLive("backup", argc, argv);  // tools/live_cli.cc in strata-live
  const char* tool = "strata backup";
  std::set<std::string> vf = {"--repo",   "--bitmap", "--since-snapshot", "--snapshot", "--tracker",
                              "--since",  "--checkpoint", "--parent",     "--format",   "--granularity",
                              "--disk",   "--lock-wait", "--snapshot-dir", "--allow-backing"};
  vf.insert(kPipelineFlags.begin(), kPipelineFlags.end());
  vf.insert(kQuiesceValueFlags.begin(), kQuiesceValueFlags.end());
  std::set<std::string> bf = {"--help", "--json", "--full", "--scan", "--no-direct", "--reflink"};
  bf.insert(kQuiesceBoolFlags.begin(), kQuiesceBoolFlags.end());
  bf.insert(kProgressFlags.begin(), kProgressFlags.end());
  auto a = Args::Parse(argc, argv, 1, vf, bf);
  if (!a) return Usage(tool, a.error().message());
  if (a->Has("--help")) {
    std::fputs(kBackupHelp, stdout);
    return kExitOk;
  }
  if (!a->Has("--repo")) return Usage(tool, "--repo is required");
  if (a->positional().size() != 1) return Usage(tool, "expected one IMAGE");
  const bool full = a->Has("--full"), scan = a->Has("--scan"), since_snap = a->Has("--since-snapshot");
  if (full + scan + since_snap > 1) return Usage(tool, "choose one of --full, --scan, --since-snapshot");
  if (!full && !scan && !since_snap && !a->Has("--tracker") && !a->Has("--bitmap") && !a->Has("--reflink")) {
    return Usage(tool,
                 "choose a source: --full, --scan, --tracker DIR, --bitmap NAME, --since-snapshot SNAP or --reflink");
  }
  if (a->Has("--tracker") + a->Has("--bitmap") + a->Has("--snapshot") + a->Has("--reflink") > 1) {
    return Usage(tool, "a backup ends at one point: choose one of --tracker, --bitmap, --snapshot, --reflink");
  }
  if (a->Has("--snapshot-dir") && !a->Has("--reflink")) return Usage(tool, "--snapshot-dir goes with --reflink");
  if ((a->Has("--since") || a->Has("--checkpoint")) && !a->Has("--tracker")) {
    return Usage(tool, "--since and --checkpoint go with --tracker");
  }
  if (a->Has("--since") && (full || scan)) return Usage(tool, "--since starts an incremental: not with --full or --scan");
  if (since_snap && (a->Has("--tracker") || a->Has("--bitmap"))) {
    return Usage(tool, "--since-snapshot ends at a snapshot (--snapshot SNAP) or at no point");
  }
  if (a->Has("--snapshot") && !(full || scan || since_snap)) {
    return Usage(tool, "--snapshot goes with --full, --scan or --since-snapshot");
  }
  if (full && a->Has("--parent")) return Usage(tool, "a --full backup has no parent");
  if (!full && a->Has("--granularity")) return Usage(tool, "--granularity sets a full backup's block size (incrementals take the parent's)");
  if (!LockWait(*a)) return Usage(tool, LockWait(*a).error().message());
  auto out = OutputOptions::From(*a);
  if (!out) return Usage(tool, out.error().message());
  PipelineOptions opt;
  if (Status s = ParsePipeline(*a, &opt); !s.ok()) return Usage(tool, s.message());
  auto fw = ParseFreezeWindow(*a);
  if (!fw) return Usage(tool, fw.error().message());
  if (fw->enabled && !a->Has("--tracker") && !a->Has("--bitmap") && !a->Has("--reflink")) {
    return Usage(tool, "--quiesce freezes while the end point is taken: it needs --tracker, --bitmap or --reflink");
  }
  const bool json = a->Has("--json");
  BackupRequest req;
  req.image = a->positional()[0];
  req.format = a->Get("--format").value_or("auto");
  if (req.format != "auto" && req.format != "raw" && req.format != "qcow2") {
    return Usage(tool, "--format must be raw, qcow2 or auto");
  }
  req.disk_name = a->Get("--disk").value_or("");
  req.open.allowed_dirs = a->All("--allow-backing");
  req.parent = a->Get("--parent").value_or("latest");
  if (req.parent != "latest" && !IdFromHex(req.parent) &&
      (req.parent.size() < 4 || req.parent.size() > 32 ||
       req.parent.find_first_not_of("0123456789abcdef") != std::string::npos)) {
    return Usage(tool, "--parent takes 'latest' or a backup id (at least 4 hex digits)");
  }
  req.pipeline = opt;
  if (auto gv = a->Get("--granularity")) {
    auto gb = ParseSize(*gv);
    if (!gb) return Usage(tool, gb.error().message());
    if (!Granularity::FromBytes(*gb)) return Usage(tool, Granularity::FromBytes(*gb).error().message());
    req.granularity = *gb;
  }
  ChangeSource& src = req.source;
  src.tracker_dir = a->Get("--tracker").value_or("");
  src.since = a->Get("--since").value_or("");
  src.checkpoint_name = a->Get("--checkpoint").value_or("");
  src.bitmap = a->Get("--bitmap").value_or("");
  src.snapshot = a->Get("--snapshot").value_or("");
  src.since_snapshot = a->Get("--since-snapshot").value_or("");
  src.reflink = a->Has("--reflink");
  src.snapshot_dir = a->Get("--snapshot-dir").value_or("");
  if (full) src.kind = SourceKind::kFull;
  else if (scan) src.kind = SourceKind::kScan;
  else if (since_snap) src.kind = SourceKind::kSnapshot;
  else if (!src.tracker_dir.empty()) src.kind = SourceKind::kTracker;
  else if (src.reflink) src.kind = SourceKind::kReflink;
  else src.kind = SourceKind::kBitmap;
  if (fw->enabled) {
    // Never freeze the filesystem the tracker writes its state to.
    if (!src.tracker_dir.empty()) fw->protected_paths.push_back(src.tracker_dir);
    req.point_window = [&](const std::function<Status()>& take, bool* quiesced) -> Status {
      auto q = RunInFreezeWindow(*fw, take);
      if (!q) return q.error();
      *quiesced = q->quiesced;
      return Status::Ok();
    };
  }
  auto repo = OpenRepo(*a, true, tool);
  if (!repo) return Fail(tool, repo.error());
  Progress progress("backup", *out);
  req.pipeline.progress = [&](uint64_t d, uint64_t t) { progress.Update(d, t); };
  auto result = BackupToRepository(**repo, req);
  progress.Clear();
  if (!result) return Fail(tool, result.error());
  const CatalogEntry& entry = result->entry;
  const ArchiveHeader& h = entry.header;
  const BackupStats& st = result->stats;
  if (!json) {
    if (!st.notice.empty()) progress.Note(tool, st.notice);
    for (const std::string& n : result->notes) progress.Note(tool, n);
  }
  Json phases = ReportPhases(st.phases, tool, progress);
  if (json) {
    Json j = EntryJson(entry);
    j["changed_bytes"] = st.planned_bytes;
    j["read_bytes"] = st.read_bytes;
    j["data_bytes"] = st.data_bytes;
    j["zero_bytes"] = st.zero_bytes;
    j["skipped_bytes"] = st.skipped_bytes;
    j["seconds"] = st.seconds;
    j["io_uring"] = st.used_uring;
    j["direct_io"] = st.used_direct;
    j["registered_buffers"] = st.registered_buffers;
    j["notice"] = st.notice;
    j["notes"] = result->notes;
    j["phases"] = phases;
    PrintJson(j);
  } else {
    double ratio = st.stored_bytes ? static_cast<double>(st.data_bytes) / static_cast<double>(st.stored_bytes) : 0;
    std::printf("backup %s (%s) of %s\n", IdToHex(h.id).c_str(), SourceText(h).c_str(), h.disk_name.c_str());
    if (!h.is_full()) {
      std::printf("  from %s (backup %s)\n", h.start.Describe().c_str(), IdToHex(h.parent_id).substr(0, 8).c_str());
    }
    std::printf("  ends at %s%s\n", h.end.Describe().c_str(),
                h.quiesced ? ", quiesced" : (fw->enabled ? ", NOT quiesced (the freeze window expired)" : ""));
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
  auto a = Args::Parse(argc, argv, 1, {"--repo", "--disk", "--lock-wait"}, {"--help", "--json"});
  if (!a) return Usage("strata list", a.error().message());
  if (a->Has("--help")) {
    std::puts("Usage: strata list --repo REPO [--disk NAME] [--json]\n\n"
              "Lists the backups of a repository by disk, oldest first, with the point\n"
              "each one ends at.");
    return kExitOk;
  }
  if (!a->Has("--repo") || !a->positional().empty()) return Usage("strata list", "expected --repo REPO");
  if (!LockWait(*a)) return Usage("strata list", LockWait(*a).error().message());
  auto repo = OpenRepo(*a, false, "strata list");
  if (!repo) return Fail("strata list", repo.error());
  std::vector<DiskInfo> disks = (*repo)->Disks();
  if (auto d = a->Get("--disk")) {
    auto di = (*repo)->DiskNamed(*d);
    if (!di) return Fail("strata list", di.error());
    disks = {*di};
  }
  const auto& es = (*repo)->entries();
  if (a->Has("--json")) {
    Json arr = Json::array();
    for (const CatalogEntry& e : es) {
      for (const DiskInfo& d : disks) {
        if (d.id == e.header.disk_id) arr.push_back(EntryJson(e));
      }
    }
    PrintJson(arr, 1);
    return kExitOk;
  }
  size_t shown = 0;
  for (const DiskInfo& d : disks) {
    std::printf("%s%s (%s, %s): %zu backup%s\n", shown ? "\n" : "",
                d.name.empty() ? "(disk without a name: made before version 2)" : d.name.c_str(),
                DiskFormatName(d.format), FormatBytes(d.size).c_str(), d.backups, d.backups == 1 ? "" : "s");
    std::printf("  %-32s  %-8s  %-20s  %-22s %10s %10s  %s\n", "id", "parent", "content time", "source",
                "logical", "stored", "ends at");
    for (const CatalogEntry& e : es) {
      const ArchiveHeader& h = e.header;
      if (h.disk_id != d.id) continue;
      ++shown;
      std::printf("  %-32s  %-8s  %-20s  %-22s %10s %10s  %s%s\n", IdToHex(h.id).c_str(),
                  h.is_full() ? "-" : IdToHex(h.parent_id).substr(0, 8).c_str(),
                  FormatTime(static_cast<int64_t>(h.content_unix_ns)).c_str(), SourceText(h).c_str(),
                  FormatBytes(e.logical_bytes).c_str(), FormatBytes(e.stored_bytes).c_str(),
                  h.end.Describe().c_str(), h.quiesced ? " (quiesced)" : "");
    }
  }
  if (disks.empty()) std::printf("no backups\n");
  return kExitOk;
}

int InfoMain(int argc, char** argv) {
  auto a = Args::Parse(argc, argv, 1, {"--repo", "--backup", "--lock-wait"}, {"--help", "--json"});
  if (!a) return Usage("strata info", a.error().message());
  if (a->Has("--help")) {
    std::puts("Usage: strata info [--json] ARCHIVE\n"
              "       strata info [--json] --repo REPO --backup ID\n\n"
              "Prints the header and statistics of an archive.");
    return kExitOk;
  }
  std::string path;
  if (a->Has("--repo") || a->Has("--backup")) {
    if (!a->Has("--repo") || !a->Has("--backup") || !a->positional().empty()) {
      return Usage("strata info", "expected --repo REPO --backup ID, or one ARCHIVE file");
    }
    if (!LockWait(*a)) return Usage("strata info", LockWait(*a).error().message());
    auto repo = OpenRepo(*a, false, "strata info");
    if (!repo) return Fail("strata info", repo.error());
    auto e = (*repo)->Find(*a->Get("--backup"));
    if (!e) return Fail("strata info", e.error(), true);
    path = (*repo)->ArchivePath((*e)->id());
  } else {
    if (a->positional().size() != 1) return Usage("strata info", "expected one ARCHIVE file");
    path = a->positional()[0];
  }
  auto r = ArchiveReader::Open(path);
  if (!r) return Fail("strata info", r.error());
  const ArchiveHeader& h = (*r)->header();
  CatalogEntry e = Repository::EntryFor(**r);
  if (a->Has("--json")) {
    Json j = EntryJson(e);
    j["frames"] = (*r)->index().frames.size();
    j["extents"] = (*r)->index().extents.size();
    j["path"] = (*r)->path();
    PrintJson(j);
    return kExitOk;
  }
  std::printf("archive     %s (version %u)\nid          %s\nparent      %s\ndisk        %s (%s, id %s)\n"
              "created     %s\ncontent     %s\nsource      %s\nstarts at   %s\nends at     %s%s\n"
              "disk size   %s (%" PRIu64 " bytes)\ngranularity %s\ncompression zstd level %d, chunks of %s\n"
              "frames      %zu\nextents     %zu\nlogical     %s\nstored      %s (file %s)\n",
              (*r)->path().c_str(), h.version, IdToHex(h.id).c_str(),
              h.is_full() ? "- (full backup)" : IdToHex(h.parent_id).c_str(),
              h.disk_name.empty() ? "-" : h.disk_name.c_str(), DiskFormatName(h.disk_format),
              Id128ToHex(h.disk_id).c_str(), FormatTime(static_cast<int64_t>(h.created_unix_ns)).c_str(),
              FormatTime(static_cast<int64_t>(h.content_unix_ns)).c_str(), SourceText(h).c_str(),
              h.start.Describe().c_str(), h.end.Describe().c_str(), h.quiesced ? " (quiesced)" : "",
              FormatBytes(h.disk_size).c_str(), h.disk_size,
              FormatBytes(uint64_t{1} << h.granularity_shift).c_str(), h.level,
              FormatBytes(h.chunk_size).c_str(), (*r)->index().frames.size(),
              (*r)->index().extents.size(), FormatBytes((*r)->logical_bytes()).c_str(),
              FormatBytes((*r)->stored_bytes()).c_str(), FormatBytes((*r)->file_size()).c_str());
  return kExitOk;
}

// ---- strata restore ----

int RestoreMain(int argc, char** argv) {
  if (IsLiveRestore(argc, argv)) return ExecLive("restore", argc, argv);  // tools/live_cli.cc in strata-live
  const char* tool = "strata restore";
  std::set<std::string> vf = {"--repo", "--backup", "--disk", "--lock-wait"};
  vf.insert(kRestoreFlags.begin(), kRestoreFlags.end());
  std::set<std::string> bf = {"--help", "--json", "--force", "--no-direct"};
  bf.insert(kProgressFlags.begin(), kProgressFlags.end());
  auto a = Args::Parse(argc, argv, 1, vf, bf);
  if (!a) return Usage(tool, a.error().message());
  if (a->Has("--help")) {
    std::puts(
        "Usage: strata restore --repo REPO [--backup ID|latest] [--disk NAME] [--force] [--json] OUTPUT\n\n"
        "Restores a backup (default: the latest, i.e. the one with the newest content,\n"
        "of disk NAME when given) to OUTPUT, a raw image file (sparse:\n"
        "zero ranges become holes) or a block device. Every block is read from exactly\n"
        "one archive of the chain and written once; every checksum is verified.\n"
        "An existing file or a block device is only overwritten with --force; a new\n"
        "file is created 0600 and a symbolic link is never followed. Data ranges are\n"
        "allocated before writing (a full disk fails first) and aligned data is\n"
        "written with O_DIRECT through io_uring. A failed restore removes the file it\n"
        "created.\n\n"
        "Options:\n"
        "  --queue-depth N   writes in flight (default 32)   --workers N (default: cores)\n"
        "  --memory N        memory bound (default 256M)     --no-direct  use the page cache\n"
        "  --progress        progress even off a terminal    -q, --quiet  no progress, no notes\n"
        "  -r REPO, -b ID    short for --repo, --backup       -h, --help   this text");
    return kExitOk;
  }
  if (!a->Has("--repo") || a->positional().size() != 1) return Usage(tool, "expected --repo REPO OUTPUT");
  auto oo = OutputOptions::From(*a);
  if (!oo) return Usage(tool, oo.error().message());
  PipelineOptions opt;
  if (Status s = ParsePipeline(*a, &opt); !s.ok()) return Usage(tool, s.message());
  const std::string out = a->positional()[0];
  if (!LockWait(*a)) return Usage(tool, LockWait(*a).error().message());
  struct stat st;
  if (::lstat(out.c_str(), &st) == 0 && !a->Has("--force")) {
    if (S_ISREG(st.st_mode)) return Fail(tool, Status::AlreadyExists(out + ": exists (use --force to overwrite)"));
    if (S_ISBLK(st.st_mode)) {
      return Fail(tool, Status::AlreadyExists(out + ": is a block device; its contents are overwritten only with --force"));
    }
  }
  auto repo = OpenRepo(*a, false, tool);
  if (!repo) return Fail(tool, repo.error());
  std::optional<DiskInfo> disk;
  if (auto d = a->Get("--disk")) {
    auto di = (*repo)->DiskNamed(*d);
    if (!di) return Fail(tool, di.error());
    disk = *di;
  }
  auto e = (*repo)->Find(a->Get("--backup").value_or("latest"), disk ? &disk->id : nullptr);
  if (!e) return Fail(tool, e.error(), true);
  Progress progress("restore", *oo);
  opt.progress = [&](uint64_t d, uint64_t t) { progress.Update(d, t); };
  auto stats = RestoreFromRepository(**repo, IdToHex((*e)->id()), out, opt);
  progress.Clear();
  if (!stats) return Fail(tool, stats.error());
  Json phases = ReportPhases(stats->phases, tool, progress);
  if (a->Has("--json")) {
    PrintJson(Json{{"id", IdToHex((*e)->id())},
                   {"output", out},
                   {"chain", stats->chain_length},
                   {"data_bytes", stats->data_bytes},
                   {"zero_bytes", stats->zero_bytes},
                   {"frames_read", stats->frames_read},
                   {"stored_bytes_read", stats->stored_bytes_read},
                   {"seconds", stats->seconds},
                   {"io_uring", stats->used_uring},
                   {"direct_io", stats->used_direct},
                   {"registered_buffers", stats->registered_buffers},
                   {"notice", stats->notice},
                   {"phases", phases}});
  } else {
    if (!stats->notice.empty()) progress.Note(tool, stats->notice);
    std::printf("restored %s (chain of %zu) to %s: %s data, %s zeros, %.2f s (%s)\n",
                IdToHex((*e)->id()).c_str(), stats->chain_length, out.c_str(),
                FormatBytes(stats->data_bytes).c_str(), FormatBytes(stats->zero_bytes).c_str(),
                stats->seconds, Rate(stats->data_bytes, stats->seconds).c_str());
  }
  return kExitOk;
}

// ---- strata verify ----

int VerifyMain(int argc, char** argv) {
  const char* tool = "strata verify";
  std::set<std::string> bf = {"--help", "--json"};
  bf.insert(kProgressFlags.begin(), kProgressFlags.end());
  auto a = Args::Parse(argc, argv, 1, {"--repo", "--backup", "--against", "--format", "--disk", "--lock-wait",
                                       "--allow-backing"},
                       bf);
  if (!a) return Usage(tool, a.error().message());
  if (a->Has("--help")) {
    std::puts(
        "Usage: strata verify --repo REPO [--backup ID] [--disk NAME] [--against IMAGE] [--json]\n\n"
        "Checks that every catalog entry matches its archive's header, that every\n"
        "chain links up (each incremental starts where its parent ends) and every\n"
        "checksum of every archive in the chain of a backup (default: every backup).\n"
        "--against IMAGE also compares the restored view with IMAGE block by block\n"
        "(default backup: the newest of IMAGE's disk, or of --disk NAME). Archives no\n"
        "catalog entry names and interrupted operations are reported (the next backup\n"
        "or merge finishes an interrupted merge; 'strata repair' handles the rest).\n"
        "A progress line is shown on a terminal (--progress forces it, -q hides it,\n"
        "-v names each archive as it is checked).");
    return kExitOk;
  }
  if (!a->Has("--repo") || !a->positional().empty()) return Usage(tool, "expected --repo REPO");
  if (a->Has("--format") && !a->Has("--against")) return Usage(tool, "--format goes with --against");
  auto oo = OutputOptions::From(*a);
  if (!oo) return Usage(tool, oo.error().message());
  if (!LockWait(*a)) return Usage(tool, LockWait(*a).error().message());
  auto repo = OpenRepo(*a, false, tool);
  if (!repo) return Fail(tool, repo.error());
  for (const PendingOp& op : (*repo)->pending()) {
    if (op.kind == PendingOp::Kind::kRemove) {
      return Fail(tool, Status::Corruption((*repo)->dir() + ": the removal of backup " + IdToHex(op.id) +
                                           " was interrupted; the next backup or merge finishes it "
                                           "('strata merge --resume')"));
    }
  }
  std::optional<DiskInfo> disk;
  if (auto d = a->Get("--disk")) {
    auto di = (*repo)->DiskNamed(*d);
    if (!di) return Fail(tool, di.error());
    disk = *di;
  } else if (auto against = a->Get("--against"); against && !a->Has("--backup")) {
    char* rp = ::realpath(against->c_str(), nullptr);
    std::string abs = rp ? rp : *against;
    std::free(rp);
    auto di = (*repo)->DiskNamed(abs);
    if (!di) {
      return Fail(tool, Status::NotFound((*repo)->dir() + ": no backups of " + abs +
                                         " (name the backup with --backup ID or the disk with --disk NAME)"));
    }
    disk = *di;
  }
  std::vector<ArchiveId> targets;
  if (auto b = a->Get("--backup")) {
    auto e = (*repo)->Find(*b, disk ? &disk->id : nullptr);
    if (!e) return Fail(tool, e.error(), true);
    targets.push_back((*e)->id());
  } else if (a->Has("--against")) {
    auto e = (*repo)->Find("latest", disk ? &disk->id : nullptr);
    if (!e) return Fail(tool, e.error());
    targets.push_back((*e)->id());
  } else {
    for (const CatalogEntry& e : (*repo)->entries()) {
      if (!disk || e.header.disk_id == disk->id) targets.push_back(e.id());
    }
  }
  // The catalog is a copy of the archives' headers: any disagreement means
  // one of them was damaged or an operation was interrupted.
  for (const CatalogEntry& e : (*repo)->entries()) {
    if (std::find(targets.begin(), targets.end(), e.id()) == targets.end()) continue;
    auto r = ArchiveReader::Open((*repo)->ArchivePath(e.id()));
    if (!r) return Fail(tool, r.error());
    CatalogEntry actual = Repository::EntryFor(**r);
    if (EncodeHeader(actual.header) != EncodeHeader(e.header) || actual.logical_bytes != e.logical_bytes ||
        actual.stored_bytes != e.stored_bytes || actual.archive_bytes != e.archive_bytes) {
      return Fail(tool, Status::Corruption((*repo)->dir() + "/catalog: the entry of backup " + IdToHex(e.id()) +
                                           " disagrees with its archive " + (*r)->path()));
    }
  }
  auto orphans = (*repo)->Orphans();
  if (!orphans) return Fail(tool, orphans.error());
  if (!orphans->empty()) {
    return Fail(tool, Status::Corruption((*repo)->dir() + ": " + std::to_string(orphans->size()) +
                                         " archive(s) no catalog entry names, e.g. " + orphans->front() +
                                         " ('strata repair --repo " + (*repo)->dir() + "' shows what to do)"));
  }
  auto t0 = std::chrono::steady_clock::now();
  std::set<ArchiveId> verified;
  uint64_t archives = 0, mismatched = 0, compared = 0;
  // Progress: the stored bytes of every archive to check (each once), then
  // with --against the disk bytes to compare.
  uint64_t to_check = 0, checked = 0;
  {
    std::set<ArchiveId> seen;
    for (const ArchiveId& id : targets) {
      for (ArchiveId at = id; !IsNullId(at) && seen.insert(at).second;) {
        const CatalogEntry* ce = nullptr;
        for (const CatalogEntry& x : (*repo)->entries()) {
          if (x.id() == at) ce = &x;
        }
        if (!ce) break;
        to_check += ce->stored_bytes;
        at = ce->parent();
      }
    }
  }
  Progress progress("verify", *oo);
  progress.Phase("checksums");
  for (const ArchiveId& id : targets) {
    auto chain = (*repo)->OpenChain(id);
    if (!chain) return Fail(tool, chain.error());
    if (Status s = CheckChain(Raw(*chain)); !s.ok()) return Fail(tool, s);
    for (auto& r : *chain) {
      if (!verified.insert(r->header().id).second) continue;
      progress.Update(checked, to_check);
      if (Status s = VerifyArchive(*r); !s.ok()) return Fail(tool, s);
      checked += r->stored_bytes();
      progress.Update(checked, std::max(checked, to_check));
      progress.Detail(std::string(tool) + ": archive " + IdToHex(r->header().id) + ": checksums match");
      ++archives;
    }
    if (auto against = a->Get("--against")) {
      const ArchiveHeader& top = (*chain)[0]->header();
      std::string fmt = a->Get("--format").value_or(
          top.disk_format == DiskFormat::kUnknown ? "auto" : DiskFormatName(top.disk_format));
      ImageOpenOptions oo;
      oo.allowed_dirs = a->All("--allow-backing");
      auto img = OpenImage(*against, fmt, oo);
      if (!img) return Fail(tool, img.error());
      if ((*img)->size() != (*chain)[0]->header().disk_size) {
        return Fail(tool, Status::Corruption(*against + ": size differs from the backup"));
      }
      std::vector<uint8_t> buf;
      uint64_t first_bad = UINT64_MAX;
      progress.Phase("compare");
      const uint64_t disk_total = top.disk_size;
      uint64_t disk_done = 0;
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
          disk_done += n;
          progress.Update(disk_done, disk_total);
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
  progress.Clear();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (a->Has("--json")) {
    PrintJson(Json{{"ok", true}, {"archives", archives}, {"compared_bytes", compared}, {"seconds", secs}});
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
  --resume             finish a merge that was interrupted (any later backup
                       or merge also does)
Options: --level N (--synthetic-full), --queue-depth N, --workers N,
--memory N, --lock-wait SECONDS, --json, --progress, -q/--quiet, -v/--verbose.
A merge is journaled in the catalog: if it is interrupted at any point, the
next writer finishes it; no backup is rewritten twice.
)";

int MergeMain(int argc, char** argv) {
  const char* tool = "strata merge";
  std::set<std::string> vf = {"--repo", "--remove", "--fold", "--synthetic-full", "--lock-wait"};
  vf.insert(kMergeFlags.begin(), kMergeFlags.end());
  std::set<std::string> bf = {"--help", "--json", "--resume"};
  bf.insert(kProgressFlags.begin(), kProgressFlags.end());
  auto a = Args::Parse(argc, argv, 1, vf, bf);
  if (!a) return Usage(tool, a.error().message());
  if (a->Has("--help")) {
    std::fputs(kMergeHelp, stdout);
    return kExitOk;
  }
  int actions = a->Has("--remove") + a->Has("--fold") + a->Has("--synthetic-full") + a->Has("--resume");
  if (!a->Has("--repo") || actions != 1 || !a->positional().empty()) {
    return Usage(tool, "expected --repo REPO and one of --remove, --fold, --synthetic-full, --resume");
  }
  if (a->Has("--level") && !a->Has("--synthetic-full")) {
    return Usage(tool, "--level applies to --synthetic-full (a rewritten backup keeps its own level)");
  }
  auto oo = OutputOptions::From(*a);
  if (!oo) return Usage(tool, oo.error().message());
  PipelineOptions opt;
  if (Status s = ParsePipeline(*a, &opt); !s.ok()) return Usage(tool, s.message());
  if (!LockWait(*a)) return Usage(tool, LockWait(*a).error().message());
  Progress progress("merge", *oo);
  opt.progress = [&](uint64_t d, uint64_t t) { progress.Update(d, t); };
  auto repo = OpenRepo(*a, true, tool);
  if (!repo) return Fail(tool, repo.error());
  Repository& r = **repo;
  const bool json = a->Has("--json");

  const size_t interrupted = r.pending().size();
  if (Status s = CompletePending(r, opt); !s.ok()) return Fail(tool, s);
  progress.Clear();
  if (interrupted && !a->Has("--resume")) progress.Note(tool, "completed an interrupted merge first");
  if (a->Has("--resume")) {
    const size_t before = interrupted;
    if (json) PrintJson(Json{{"completed", before}});
    else std::printf("%s\n", before ? "completed the interrupted merge" : "nothing was interrupted");
    return kExitOk;
  }

  if (auto which = a->Get("--synthetic-full")) {
    auto e = r.Find(*which);
    if (!e) return Fail(tool, e.error(), true);
    const CatalogEntry src = **e;  // copied: the catalog grows below
    progress.Phase("synthetic full");
    auto res = SyntheticFull(r, src.id(), opt);
    progress.Clear();
    if (!res) return Fail(tool, res.error());
    const auto* st = &res->stats;
    const CatalogEntry h = res->entry;
    if (json) {
      PrintJson(Json{{"id", IdToHex(h.id())},
                     {"synthetic_full_of", IdToHex(src.id())},
                     {"stored_bytes", h.stored_bytes},
                     {"archive_bytes", h.archive_bytes}});
    }
    else std::printf("synthetic full %s of %s: %s data, stored %s\n", IdToHex(h.id()).c_str(),
                     IdToHex(src.id()).c_str(), FormatBytes(st->data_bytes).c_str(),
                     FormatBytes(st->stored_bytes).c_str());
    return kExitOk;
  }

  // --remove X, or --fold C (= remove C's parent).
  auto e = r.Find(a->Has("--remove") ? *a->Get("--remove") : *a->Get("--fold"));
  if (!e) return Fail(tool, e.error(), true);
  ArchiveId victim = (*e)->id();
  if (a->Has("--fold")) {
    if (IsNullId((*e)->parent())) {
      return Fail(tool, Status::InvalidArgument(IdToHex(victim) + " is a full backup: nothing to fold"), true);
    }
    victim = (*e)->parent();
  }
  progress.Phase("rewrite");
  auto removed = RemoveBackup(r, victim, opt);
  progress.Clear();
  if (!removed) return Fail(tool, removed.error());
  const std::vector<ArchiveId>& children = *removed;
  uint64_t rewritten_bytes = 0;
  for (const ArchiveId& c : children) {
    for (const CatalogEntry& x : r.entries()) {
      if (x.id() == c) rewritten_bytes += x.archive_bytes;
    }
  }
  if (json) {
    Json rewritten = Json::array();
    for (const ArchiveId& c : children) rewritten.push_back(IdToHex(c));
    PrintJson(Json{{"removed", IdToHex(victim)}, {"rewritten", rewritten}, {"rewritten_archive_bytes", rewritten_bytes}});
  } else {
    std::printf("removed %s; rewrote %zu backup%s built on it (%s of archives)\n", IdToHex(victim).c_str(),
                children.size(), children.size() == 1 ? "" : "s", FormatBytes(rewritten_bytes).c_str());
  }
  return kExitOk;
}

// ---- strata repair ----

constexpr char kRepairHelp[] = R"(Usage: strata repair --repo REPO [--apply] [--json] [--lock-wait SECONDS]

Rebuilds the catalog from the archives' own headers (every archive describes
itself: docs/formats/archive.md). Without --apply it only prints what it would
do. With --apply it keeps the old catalog as catalog.replaced-<time>, removes
temporaries and archives of backups that never completed, moves unreadable
archives to archives/damaged/ and writes the new catalog. An interrupted merge
is finished instead. Backups whose chain cannot be restored are listed (remove
them with 'strata merge --remove ID').
Exit status: 0 when the repository is (or, with --apply, now is) consistent, 1
when something needs --apply or a chain is broken, 2 usage error.
)";

int RepairMain(int argc, char** argv) {
  const char* tool = "strata repair";
  auto a = Args::Parse(argc, argv, 1, {"--repo", "--lock-wait"}, {"--help", "--json", "--apply"});
  if (!a) return Usage(tool, a.error().message());
  if (a->Has("--help")) {
    std::fputs(kRepairHelp, stdout);
    return kExitOk;
  }
  if (!a->Has("--repo") || !a->positional().empty()) return Usage(tool, "expected --repo REPO");
  auto wait = LockWait(*a);
  if (!wait) return Usage(tool, wait.error().message());
  RepositoryOptions o;
  o.lock_wait = *wait;
  auto repo = Repository::OpenForRepair(*a->Get("--repo"), o);
  if (!repo) return Fail(tool, repo.error());
  auto plan = PlanRepair(**repo);
  if (!plan) return Fail(tool, plan.error());
  const bool apply = a->Has("--apply");
  if (apply && plan->changes()) {
    if (Status s = ApplyRepair(**repo, *plan, PipelineOptions{}); !s.ok()) return Fail(tool, s);
  }
  if (a->Has("--json")) {
    Json j;
    j["catalog_ok"] = plan->catalog.ok();
    j["catalog_error"] = plan->catalog.ok() ? "" : plan->catalog.message();
    j["backups"] = plan->entries.size();
    j["added"] = plan->added;
    j["dropped"] = plan->dropped;
    j["corrected"] = plan->corrected;
    j["damaged"] = plan->damaged;
    j["removed"] = plan->removed;
    j["broken"] = plan->broken;
    j["pending_merge"] = plan->pending_merge;
    j["applied"] = apply && plan->changes();
    PrintJson(j);
  } else {
    if (!plan->catalog.ok()) std::printf("catalog unusable: %s\n", plan->catalog.message().c_str());
    if (plan->pending_merge) std::printf("an interrupted merge %s\n", apply ? "was finished" : "will be finished");
    auto list = [&](const char* what, const std::vector<std::string>& v) {
      for (const std::string& x : v) std::printf("%s %s\n", what, x.c_str());
    };
    list(apply ? "added" : "would add", plan->added);
    list(apply ? "dropped (archive missing)" : "would drop (archive missing)", plan->dropped);
    list(apply ? "corrected" : "would correct", plan->corrected);
    list(apply ? "moved aside (damaged)" : "would move aside (damaged)", plan->damaged);
    list(apply ? "removed" : "would remove", plan->removed);
    list("cannot be restored:", plan->broken);
    if (!plan->changes()) std::printf("catalog and archives agree: %zu backups\n", plan->entries.size());
    else if (!apply) std::printf("run again with --apply to make these changes\n");
    else std::printf("new catalog: %zu backups\n", plan->entries.size());
  }
  if (!plan->broken.empty()) return kExitFailure;
  return plan->changes() && !apply ? kExitFailure : kExitOk;
}

Registrar r1("init", "create an empty backup repository", &InitMain);
Registrar r2("backup", "back up the changed extents of an image into a repository", &BackupMain);
Registrar r3("list", "list the backups of a repository", &ListMain);
Registrar r4("info", "print the header of an archive file", &InfoMain);
Registrar r5("restore", "restore a backup to a raw file or block device", &RestoreMain);
Registrar r6("verify", "check every checksum of backups, optionally against an image", &VerifyMain);
Registrar r7("merge", "remove, fold or synthesise backups offline", &MergeMain);
Registrar r8("repair", "rebuild a damaged catalog from the archives' headers", &RepairMain);

}  // namespace
}  // namespace strata::cli
