// Shared helpers of engine/live (live_internal.h) and BackupNbdExport.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>

#include "engine/live/live_internal.h"
#include "strata/checksum.h"

namespace strata::live {

namespace internal {

Status PrepareStateDir(const std::string& dir) {
  std::string partial;
  for (size_t i = 0; i <= dir.size(); ++i) {
    if (i == dir.size() || (dir[i] == '/' && i > 0)) {
      partial = dir.substr(0, i);
      if (::mkdir(partial.c_str(), 0700) != 0 && errno != EEXIST) {
        return Status::FromErrno(errno, partial + ": state directory");
      }
    }
  }
  return Status::Ok();
}

Result<std::unique_ptr<FileLock>> LockState(const std::string& dir, const std::string& name) {
  auto l = Env::Default()->Lock(dir + "/" + name + ".lock", LockMode::kExclusive, std::chrono::seconds(30));
  if (!l) return l.error().WithContext("another strata run holds " + dir + "/" + name + ".lock");
  return l;
}

std::string ShortHash(const std::string& text) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(Xxh3_64(text.data(), text.size())));
  return buf;
}

std::string RealPath(const std::string& path) {
  if (char* r = ::realpath(path.c_str(), nullptr)) {
    std::string s(r);
    std::free(r);
    return s;
  }
  return path;
}

ChainPoint SeriesPoint(PointKind kind, const Id128& series, uint64_t seq) {
  return ChainPoint{kind, series, seq, "strata-" + Id128ToHex(series) + "-" + std::to_string(seq)};
}

bool IsSeriesName(const std::string& name, const Id128& series) {
  const std::string prefix = "strata-" + Id128ToHex(series) + "-";
  return name.rfind(prefix, 0) == 0 && name.size() > prefix.size() &&
         name.find_first_not_of("0123456789", prefix.size()) == std::string::npos;
}

bool IsStrataName(const std::string& name) { return name.rfind("strata-", 0) == 0; }

const CatalogEntry* NewestEndingAt(const Repository& repo, const std::string& disk_name, PointKind kind) {
  auto disk = repo.DiskNamed(disk_name);
  if (!disk) return nullptr;
  const CatalogEntry* best = nullptr;
  for (const CatalogEntry& e : repo.entries()) {
    const ArchiveHeader& h = e.header;
    if (h.version < 2 || h.disk_id != disk->id || h.end.kind != kind) continue;
    if (!best || h.content_unix_ns >= best->header.content_unix_ns) best = &e;
  }
  return best;
}

Result<BackupResult> BackupImage(Repository& repo, Image& image, const std::string& disk_name,
                                 const std::string& mode, const ExtentSet* changes, const ChainPoint& start,
                                 const ChainPoint& end, const LiveOptions& opt) {
  BackupRequest req;
  req.image = disk_name;
  req.opened = &image;
  req.disk_name = disk_name;
  req.pipeline = opt.pipeline;
  req.parent = mode == "full" ? "latest" : opt.parent;
  std::optional<ExtentSet> empty;
  ChangeSource& src = req.source;
  if (mode == "full") {
    req.granularity = opt.granularity;
    src.kind = SourceKind::kFull;
    STRATA_ASSIGN_OR_RETURN(Granularity g, Granularity::FromBytes(opt.granularity.value_or(64 << 10)));
    STRATA_ASSIGN_OR_RETURN(empty, ExtentSet::Create(image.size(), g));
    src.changes = &*empty;  // the job reads the allocated extents
  } else if (mode == "scan") {
    src.kind = SourceKind::kScan;
    STRATA_ASSIGN_OR_RETURN(empty, ExtentSet::Create(image.size(), Granularity::Default()));
    STRATA_RETURN_IF_ERROR(empty->Add(0, image.size()));
    src.changes = &*empty;
    src.start = start;
  } else {
    src.kind = SourceKind::kBitmap;
    src.changes = changes;
    src.start = start;
  }
  src.end = end;
  return BackupToRepository(repo, req);
}

void Step(const LiveOptions& opt, const char* name) {
  if (opt.on_step) opt.on_step(name);
}

}  // namespace internal

std::string DefaultStateDir() {
  if (::geteuid() == 0) return "/run/strata/live";
  if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x && *x) return std::string(x) + "/strata-live";
  return "/tmp/strata-live-" + std::to_string(::getuid());
}

Result<LiveResult> BackupNbdExport(Repository& repo, const NbdSource& src, const LiveOptions& opt) {
  using namespace internal;
  LiveResult result;
  LiveDisk d;
  d.disk_name = opt.disk_name.empty() ? src.uri : opt.disk_name;
  NbdOptions no;
  no.bitmap = src.bitmap;
  no.connections = opt.connections;
  STRATA_ASSIGN_OR_RETURN(auto img, NbdImage::Open(src.uri, no));
  ChainPoint end;
  if (!src.end_point.empty()) end = ChainPoint{PointKind::kQemuBitmap, Id128{}, 0, src.end_point};
  ChainPoint start;
  std::optional<ExtentSet> changes;
  if (opt.full || src.bitmap.empty()) {
    d.mode = "full";
  } else {
    d.mode = "incremental";
    if (!src.start_point.empty()) {
      start = ChainPoint{PointKind::kQemuBitmap, Id128{}, 0, src.start_point};
    } else {
      auto disk = repo.DiskNamed(d.disk_name);
      const CatalogEntry* latest = disk ? repo.Latest(&disk->id) : nullptr;
      if (!latest) {
        return Status::NotFound(repo.dir() + ": no backup of " + d.disk_name +
                                " to build on (take 'backup --nbd URI --full' first)");
      }
      start = latest->header.end;
    }
    Granularity g = Granularity::Default();
    auto at = repo.DiskNamed(d.disk_name);
    if (at) {
      for (const CatalogEntry& e : repo.entries()) {
        if (e.header.disk_id == at->id && e.header.end == start) {
          STRATA_ASSIGN_OR_RETURN(g, Granularity::FromShift(e.header.granularity_shift));
        }
      }
    }
    STRATA_ASSIGN_OR_RETURN(changes, img->DirtyExtents(g));
    d.notes.push_back("bitmap '" + src.bitmap + "' of " + src.uri + " is trusted to hold every write since " +
                      start.Describe() + " (whoever arranged the export vouches for it)");
  }
  STRATA_ASSIGN_OR_RETURN(d.backup, BackupImage(repo, *img, d.disk_name, d.mode, changes ? &*changes : nullptr,
                                                start, end, opt));
  result.disks.push_back(std::move(d));
  return result;
}

}  // namespace strata::live
