#include "engine/backup/jobs.h"

#include <unistd.h>

#include <chrono>

#include "engine/tracker/tracker.h"
#include "formats/open_image.h"
#include "formats/qcow2/qcow2_image.h"

namespace strata {

namespace {

uint64_t NowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

std::vector<const ArchiveReader*> Raw(const std::vector<std::unique_ptr<ArchiveReader>>& v) {
  std::vector<const ArchiveReader*> r;
  for (auto& p : v) r.push_back(p.get());
  return r;
}

// Registers a finished archive; removes it again if the catalog cannot
// name it, so nothing unnamed stays behind.
Result<CatalogEntry> Register(Repository& repo, const ArchiveId& id) {
  const std::string path = repo.ArchivePath(id);
  auto reader = ArchiveReader::Open(path);
  if (!reader) {
    ::unlink(path.c_str());
    return reader.error();
  }
  CatalogEntry e = Repository::EntryFor(**reader);
  Status s = repo.Add(e);
  if (!s.ok()) {
    ::unlink(path.c_str());
    return s;
  }
  return e;
}

// The change set of `src` for `image`, at granularity `g`.
Result<ExtentSet> Changes(const ChangeSource& src, Image& image, const std::string& image_path,
                          Granularity g) {
  if (src.changes != nullptr) {
    if (src.changes->disk_size() != image.size()) {
      return Status::InvalidArgument(image_path + ": change set is for a disk of " +
                                     std::to_string(src.changes->disk_size()) + " bytes");
    }
    return src.changes->WithGranularity(g);
  }
  switch (src.kind) {
    case SourceKind::kFull:
      return AllocatedExtents(image, g, true);
    case SourceKind::kScan: {
      STRATA_ASSIGN_OR_RETURN(ExtentSet all, ExtentSet::Create(image.size(), g));
      STRATA_RETURN_IF_ERROR(all.AddBlocks({0, all.disk_blocks()}));
      return all;
    }
    case SourceKind::kTracker: {
      OpenOptions ro;
      ro.read_only = true;
      STRATA_ASSIGN_OR_RETURN(auto tracker, Tracker::Open(src.tracker_dir, ro));
      auto set = tracker->ChangedSince(src.name);
      if (!set) {
        if (set.error().code() == StatusCode::kUnknownState) {
          return set.error().WithContext(
              "the tracker cannot tell what changed (take a --scan or --full backup)");
        }
        return set.error();
      }
      if (set->disk_size() != image.size()) {
        return Status::InvalidArgument(src.tracker_dir + ": tracks a disk of " +
                                       std::to_string(set->disk_size()) + " bytes, " + image_path +
                                       " has " + std::to_string(image.size()));
      }
      return set->WithGranularity(g);
    }
    case SourceKind::kBitmap:
    case SourceKind::kSnapshot: {
      STRATA_ASSIGN_OR_RETURN(auto q, OpenQcow2Image(image_path));
      STRATA_ASSIGN_OR_RETURN(ExtentSet set, src.kind == SourceKind::kBitmap
                                                 ? q->LoadBitmap(src.name, src.force)
                                                 : q->SnapshotDiff(src.name));
      if (set.disk_size() != image.size()) {
        return Status::Unsupported(image_path + ": the disk was resized since " + src.name +
                                   " (take a --full backup)");
      }
      return set.WithGranularity(g);
    }
    case SourceKind::kMerge:
      break;
  }
  return Status::InvalidArgument("a merge is not a change source");
}

}  // namespace

Result<BackupResult> BackupToRepository(Repository& repo, const BackupRequest& req) {
  STRATA_ASSIGN_OR_RETURN(auto image, OpenImage(req.image, req.format));
  ArchiveHeader header;
  header.id = NewArchiveId();
  header.created_unix_ns = NowNs();
  header.source = req.source.kind;
  header.source_name = req.source.kind == SourceKind::kFull || req.source.kind == SourceKind::kScan
                           ? std::string()
                           : req.source.name;
  Granularity g = Granularity::Default();
  std::vector<std::unique_ptr<ArchiveReader>> parent_chain;
  if (req.source.kind == SourceKind::kFull) {
    if (req.granularity) {
      STRATA_ASSIGN_OR_RETURN(g, Granularity::FromBytes(*req.granularity));
    }
  } else {
    auto parent = repo.Find(req.parent);
    if (!parent) {
      if (parent.error().code() == StatusCode::kNotFound && req.parent == "latest") {
        return Status::NotFound(repo.dir() + ": no parent backup to build on (take a --full backup first)");
      }
      return parent.error();
    }
    STRATA_ASSIGN_OR_RETURN(parent_chain, repo.OpenChain((*parent)->id));
    const ArchiveHeader& ph = parent_chain[0]->header();
    if (ph.disk_size != image->size()) {
      return Status::InvalidArgument(req.image + ": disk is " + std::to_string(image->size()) +
                                     " bytes but parent backup " + IdToHex(ph.id) + " is of " +
                                     std::to_string(ph.disk_size) + " bytes (take a --full backup)");
    }
    STRATA_ASSIGN_OR_RETURN(g, Granularity::FromShift(ph.granularity_shift));
    if (req.granularity && *req.granularity != g.bytes()) {
      return Status::InvalidArgument("granularity " + std::to_string(*req.granularity) +
                                     " differs from the parent's " + std::to_string(g.bytes()));
    }
    header.parent_id = ph.id;
    header.parent_identity = IdentityCheck(ph);
  }
  STRATA_ASSIGN_OR_RETURN(ExtentSet changes, Changes(req.source, *image, req.image, g));
  std::unique_ptr<ScanBaseline> baseline;
  if (req.source.kind == SourceKind::kScan) {
    STRATA_ASSIGN_OR_RETURN(ScanBaseline b, ScanBaseline::Build(Raw(parent_chain)));
    baseline = std::make_unique<ScanBaseline>(std::move(b));
  }
  STRATA_ASSIGN_OR_RETURN(BackupStats stats, RunBackup(*image, changes, header,
                                                       repo.ArchivePath(header.id), req.pipeline,
                                                       baseline.get()));
  STRATA_ASSIGN_OR_RETURN(CatalogEntry entry, Register(repo, header.id));
  return BackupResult{entry, stats};
}

Result<RestoreStats> RestoreFromRepository(Repository& repo, const std::string& which,
                                           const std::string& output, const PipelineOptions& opt) {
  STRATA_ASSIGN_OR_RETURN(const CatalogEntry* e, repo.Find(which));
  STRATA_ASSIGN_OR_RETURN(auto chain, repo.OpenChain(e->id));
  return RunRestore(Raw(chain), output, opt);
}

Result<std::vector<ArchiveId>> RemoveBackup(Repository& repo, const ArchiveId& victim,
                                            const PipelineOptions& opt) {
  std::vector<ArchiveId> children;
  for (const CatalogEntry* c : repo.Children(victim)) children.push_back(c->id);
  for (const ArchiveId& child : children) {
    STRATA_ASSIGN_OR_RETURN(auto chain, repo.OpenChain(child));
    // The rewritten child replaces its archive atomically and keeps its
    // identity: a crash here leaves either the old or the new child, and
    // both restore the same content.
    STRATA_RETURN_IF_ERROR(FoldIntoChild(Raw(chain), repo.ArchivePath(child), opt).status());
    STRATA_ASSIGN_OR_RETURN(auto reader, ArchiveReader::Open(repo.ArchivePath(child)));
    STRATA_RETURN_IF_ERROR(repo.Replace(Repository::EntryFor(*reader)));
  }
  STRATA_RETURN_IF_ERROR(repo.Remove(victim));
  return children;
}

Result<BackupResult> SyntheticFull(Repository& repo, const ArchiveId& source,
                                   const PipelineOptions& opt) {
  STRATA_ASSIGN_OR_RETURN(auto chain, repo.OpenChain(source));
  STRATA_ASSIGN_OR_RETURN(auto image, OpenChainImage(Raw(chain)));
  const ArchiveHeader& src = chain[0]->header();
  STRATA_ASSIGN_OR_RETURN(Granularity g, Granularity::FromShift(src.granularity_shift));
  STRATA_ASSIGN_OR_RETURN(ExtentSet set, AllocatedExtents(*image, g, true));
  ArchiveHeader h;
  h.id = NewArchiveId();
  h.created_unix_ns = NowNs();
  h.source = SourceKind::kMerge;
  h.source_name = "synthetic full of " + IdToHex(src.id);
  PipelineOptions o = opt;
  o.chunk_size = src.chunk_size;
  STRATA_ASSIGN_OR_RETURN(BackupStats stats,
                          RunBackup(*image, set, h, repo.ArchivePath(h.id), o));
  STRATA_ASSIGN_OR_RETURN(CatalogEntry entry, Register(repo, h.id));
  return BackupResult{entry, stats};
}

}  // namespace strata
