// Repository-level jobs: what `strata backup|restore|merge` do, as library
// calls for backup software that links strata.
//
// Thread safety: a Repository is used by one thread; the jobs run their own
// worker threads inside.
#ifndef STRATA_ENGINE_BACKUP_JOBS_H_
#define STRATA_ENGINE_BACKUP_JOBS_H_

#include <optional>
#include <string>
#include <vector>

#include "engine/backup/pipeline.h"
#include "engine/backup/repository.h"

namespace strata {

struct ChangeSource {
  SourceKind kind = SourceKind::kFull;  // kFull, kScan, kTracker, kBitmap or kSnapshot
  std::string name;                     // checkpoint (kTracker), bitmap or snapshot name
  std::string tracker_dir;              // kTracker
  bool force = false;                   // kBitmap: use an inconsistent bitmap anyway
  // A change set computed by the caller (e.g. from a Tracker it holds open);
  // when set it is used instead of reading the source, and `kind`/`name`
  // only describe its origin. Any granularity; it is converted.
  const ExtentSet* changes = nullptr;
};

struct BackupRequest {
  std::string image;
  std::string format = "auto";
  ChangeSource source;
  std::string parent = "latest";         // ignored for kFull
  std::optional<uint64_t> granularity;   // kFull only; incrementals take the parent's
  PipelineOptions pipeline;
};

struct BackupResult {
  CatalogEntry entry;
  BackupStats stats;
};

// Takes a backup into `repo`. Errors: kNotFound (no parent: take a full
// backup first), kInvalidArgument (disk size or granularity differ from the
// parent), kUnknownState (a tracker or qcow2 bitmap cannot tell what
// changed: a full backup or --scan is needed), I/O and corruption errors of
// the image. On any error the repository is unchanged.
Result<BackupResult> BackupToRepository(Repository& repo, const BackupRequest& req);

// Restores backup `which` ("latest", an id or a unique prefix) to `output`.
Result<RestoreStats> RestoreFromRepository(Repository& repo, const std::string& which,
                                           const std::string& output, const PipelineOptions& opt);

// Drops backup `victim`; every backup built on it is rewritten (FoldIntoChild)
// first, so all later backups stay restorable. Returns the rewritten ids.
Result<std::vector<ArchiveId>> RemoveBackup(Repository& repo, const ArchiveId& victim,
                                            const PipelineOptions& opt);

// Writes a new full backup with the content of backup `source`.
Result<BackupResult> SyntheticFull(Repository& repo, const ArchiveId& source,
                                   const PipelineOptions& opt);

}  // namespace strata

#endif  // STRATA_ENGINE_BACKUP_JOBS_H_
