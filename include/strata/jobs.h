// Repository-level jobs: what `strata backup|restore|merge` do, as library
// calls for backup software that links strata.
//
// Chain identity (docs/formats/archive.md §3.2, docs/design/chains.md):
// every backup records the disk it belongs to, the point of the source's
// history its content ends at and, for an incremental, the point it starts
// from. An incremental's parent is always a backup of the same disk whose
// end point equals the new backup's start point; anything that cannot be
// proven that way is refused before anything is written.
//
// Thread safety: a Repository is used by one thread; the jobs run their own
// worker threads inside.
#ifndef STRATA_JOBS_H_
#define STRATA_JOBS_H_

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "strata/pipeline.h"
#include "strata/repository.h"

namespace strata {

class Tracker;

// What changed, and which point the backup ends at.
//
//   kind      reads                               start point            end point
//   kFull     allocated extents                   none                   the recorder's
//   kScan     everything, stores what differs     the parent's end       the recorder's
//             from the parent chain
//   kTracker  ChangedBetween(start, new checkpoint) parent's end (or       a new checkpoint
//                                                 `since`), a checkpoint
//   kBitmap   the parent's end bitmap             parent's end, a bitmap a new bitmap
//   kSnapshot SnapshotDiff(since_snapshot, snapshot) the snapshot         `snapshot` (none when
//                                                 `since_snapshot`       reading the active layer)
//
// End point recorders (at most one; the incremental kinds require theirs):
// a tracker (`tracker` or `tracker_dir`: a new checkpoint is taken before
// the disk is read), a qcow2 bitmap series (`bitmap`: strata adds a fresh
// persistent bitmap `strata-<backup id>` with qemu-img before reading and,
// once the backup is durable, removes the bitmap the parent ended at if
// strata made it), or an internal snapshot (`snapshot`: its view is read).
struct ChangeSource {
  SourceKind kind = SourceKind::kFull;  // kFull, kScan, kTracker, kBitmap or kSnapshot
  // Tracker recorder: an open tracker the caller holds (e.g. the process
  // that marks the writes), or a state directory opened read-write for the
  // duration of the backup.
  Tracker* tracker = nullptr;
  std::string tracker_dir;
  std::string since;            // kTracker: start checkpoint by name (checked against the parent)
  std::string checkpoint_name;  // the new checkpoint (default "strata-<backup id>")
  std::string bitmap;           // qcow2 bitmap recorder: a label for the series
  std::string snapshot;         // read this internal snapshot's view (ends at it)
  std::string since_snapshot;   // kSnapshot: start snapshot
  // Reflink recorder (raw images on XFS/btrfs): the image is cloned
  // (FICLONE) into `snapshot_dir` (default: .strata-snapshots beside the
  // image, same file system) and the clone is read: a consistent point in
  // time without stopping the writer. kReflink's changes are the extents
  // where the parent's clone and the new one differ (FIEMAP); once the
  // backup is durable the parent's clone is removed.
  bool reflink = false;
  std::string snapshot_dir;
  // A change set and points computed by the caller (an orchestrator that
  // arranged the point in time itself). `start` must equal the parent's end
  // point; `changes` must cover every block written between them.
  const ExtentSet* changes = nullptr;
  ChainPoint start, end;
};

struct BackupRequest {
  std::string image;
  std::string format = "auto";          // a disk known to the repository keeps its format
  std::string disk_name;                // default: the image's absolute path
  // Which backing and data files a qcow2 chain may follow (default: regular
  // files in the image's own directory, with a declared format).
  ImageOpenOptions open;
  ChangeSource source;
  std::string parent = "latest";        // "latest": the newest backup of the disk that fits
  std::optional<uint64_t> granularity;  // kFull only; incrementals take the parent's
  PipelineOptions pipeline;
  // Runs `take_point` (taking the end point: a tracker checkpoint or a new
  // bitmap) inside a freeze window, and says whether the window held
  // (`*quiesced`). Unset: the point is taken without freezing anything.
  std::function<Status(const std::function<Status()>& take_point, bool* quiesced)> point_window;
};

struct BackupResult {
  CatalogEntry entry;
  BackupStats stats;
  std::vector<std::string> notes;  // e.g. an older checkpoint used because the parent's was removed
};

// Takes a backup into `repo`. Errors: kNotFound (no backup of the disk to
// build on: take a full backup first), kUnknownState (no backup of the disk
// ends where the change source starts, so what changed since cannot be
// proven: the message names both points and suggests --scan or --full; or
// a tracker or qcow2 bitmap lost change information), kInvalidArgument (the
// disk's size, granularity or format differ from the parent's), I/O and
// corruption errors of the image. On any error the repository is unchanged (a tracker checkpoint
// or bitmap taken for the end point may remain; it only over-reports).
Result<BackupResult> BackupToRepository(Repository& repo, const BackupRequest& req);

// Restores backup `which` ("latest", an id or a unique prefix) to `output`.
Result<RestoreStats> RestoreFromRepository(Repository& repo, const std::string& which,
                                           const std::string& output, const PipelineOptions& opt);

// Finishes what an interrupted writer left journaled (a removal whose
// children were partly rewritten). Every job below calls it first; `strata
// merge --resume` calls it alone. A no-op for a read-only repository.
Status CompletePending(Repository& repo, const PipelineOptions& opt);

// Drops backup `victim`; every backup built on it is rewritten (FoldIntoChild)
// first, so all later backups restore exactly as before. Journaled: an
// interruption at any point is finished by the next writer (CompletePending),
// never folded twice. Returns the rewritten ids.
Result<std::vector<ArchiveId>> RemoveBackup(Repository& repo, const ArchiveId& victim,
                                            const PipelineOptions& opt);

// `strata repair`: the catalog rebuilt from the archives' self-describing
// headers. Planning changes nothing; applying writes the new catalog (the
// old one, if readable or not, is kept as catalog.replaced-<unix time>),
// removes temporaries and the archives of backups that were pending (never
// acknowledged), and moves unreadable archives to archives/damaged/.
struct RepairPlan {
  Status catalog;                       // why the current catalog is unusable (ok: it is fine)
  std::vector<CatalogEntry> entries;    // the new catalog, oldest first
  std::vector<std::string> added;       // archives the catalog did not name
  std::vector<std::string> dropped;     // entries whose archive is missing
  std::vector<std::string> corrected;   // entries that disagreed with their archive
  std::vector<std::string> damaged;     // unreadable archives (path: reason)
  std::vector<std::string> removed;     // temporaries and unacknowledged archives
  std::vector<std::string> broken;      // backups whose chain cannot be restored (id: reason)
  bool pending_merge = false;           // an interrupted merge: finished before anything else
  bool changes() const {
    return !catalog.ok() || !added.empty() || !dropped.empty() || !corrected.empty() || !damaged.empty() ||
           !removed.empty() || pending_merge;
  }
};
Result<RepairPlan> PlanRepair(Repository& repo);
Status ApplyRepair(Repository& repo, const RepairPlan& plan, const PipelineOptions& opt);

// Writes a new full backup with the content, disk and end point of backup
// `source`.
Result<BackupResult> SyntheticFull(Repository& repo, const ArchiveId& source,
                                   const PipelineOptions& opt);

}  // namespace strata

#endif  // STRATA_JOBS_H_
