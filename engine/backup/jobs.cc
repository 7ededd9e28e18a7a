// Repository jobs (jobs.h). The chain rules are in docs/design/chains.md.
#include "strata/jobs.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "engine/backup/qemu_img.h"
#include "strata/tracker.h"
#include "strata/tracker_control.h"
#include "strata/checksum.h"
#include "extents/endian.h"
#include "strata/env.h"
#include "strata/open_image.h"
#include "strata/qcow2_image.h"
#include "formats/raw/reflink.h"

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

// Writes a new archive for backup `header.id` and records it: journaled as
// pending before the archive can take its final name, committed after, and
// abandoned (archive removed) on any failure, so nothing unnamed stays.
Result<std::pair<CatalogEntry, BackupStats>> WriteAndRecord(Repository& repo, Image& image, const ExtentSet& changes,
                                                             const ArchiveHeader& header, PipelineOptions opt,
                                                             const ScanBaseline* baseline) {
  opt.env = repo.env();
  auto t0 = std::chrono::steady_clock::now();
  STRATA_RETURN_IF_ERROR(repo.Begin({PendingOp::Kind::kBackup, header.id}));
  const double begin = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto run = [&]() -> Result<std::pair<CatalogEntry, BackupStats>> {
    STRATA_ASSIGN_OR_RETURN(BackupStats stats,
                            RunBackup(image, changes, header, repo.ArchivePath(header.id), opt, baseline));
    auto t1 = std::chrono::steady_clock::now();
    STRATA_ASSIGN_OR_RETURN(auto reader, ArchiveReader::Open(repo.ArchivePath(header.id), repo.env()));
    CatalogEntry e = Repository::EntryFor(*reader);
    STRATA_RETURN_IF_ERROR(repo.Add(e));
    stats.phases.insert(stats.phases.begin(), PhaseTime{"journal", begin});
    stats.phases.push_back({"catalog", std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count()});
    return std::make_pair(e, stats);
  };
  auto r = run();
  if (!r) (void)repo.Abandon(header.id);  // the next writer retries if this fails too
  return r;
}

std::string AbsolutePath(const std::string& p) {
  if (char* r = ::realpath(p.c_str(), nullptr)) {
    std::string s(r);
    std::free(r);
    return s;
  }
  if (!p.empty() && p[0] == '/') return p;
  char cwd[PATH_MAX];
  if (::getcwd(cwd, sizeof cwd) == nullptr) return p;
  return std::string(cwd) + "/" + p;
}

DiskFormat FormatOf(const Image& image) {
  if (image.format() == "qcow2") return DiskFormat::kQcow2;
  if (image.format() == "raw") return DiskFormat::kRaw;
  if (image.format() == "nbd") return DiskFormat::kNbd;
  return DiskFormat::kUnknown;
}

std::string Short(const ArchiveId& id) { return IdToHex(id).substr(0, 8); }

// "its newest backup 1a2b3c4d ends at no point" for refusals.
std::string NewestOf(const Repository& repo, const Id128& disk) {
  const CatalogEntry* e = repo.Latest(&disk);
  if (!e) return "it has no backups";
  return "its newest backup " + Short(e->id()) + " ends at " + e->header.end.Describe();
}

// A clone's identity: inode, size and times (a clone strata made is never
// written; anything that touched it changes its ctime).
Result<uint64_t> CloneFingerprint(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return Status::FromErrno(errno, path);
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument(path + ": not a regular file");
  uint8_t b[48];
  StoreLE64(b, st.st_ino);
  StoreLE64(b + 8, static_cast<uint64_t>(st.st_size));
  StoreLE64(b + 16, static_cast<uint64_t>(st.st_mtim.tv_sec));
  StoreLE64(b + 24, static_cast<uint64_t>(st.st_mtim.tv_nsec));
  StoreLE64(b + 32, static_cast<uint64_t>(st.st_ctim.tv_sec));
  StoreLE64(b + 40, static_cast<uint64_t>(st.st_ctim.tv_nsec));
  return Xxh3_64(b, sizeof b);
}

ChainPoint SnapshotPoint(const Id128& disk, const Qcow2Snapshot& s) {
  ChainPoint p;
  p.kind = PointKind::kQcow2Snapshot;
  p.source = disk;
  p.seq = uint64_t{s.date_sec} * 1000000000ull + s.date_nsec;
  p.name = s.name;
  return p;
}

// The snapshot QEMU would pick for `id_or_name` (ID first, then name).
Result<Qcow2Snapshot> FindSnapshot(Qcow2Image& q, const std::string& id_or_name) {
  for (const Qcow2Snapshot& s : q.Snapshots()) {
    if (s.id == id_or_name) return s;
  }
  for (const Qcow2Snapshot& s : q.Snapshots()) {
    if (s.name == id_or_name) return s;
  }
  return Status::NotFound(q.name() + ": no internal snapshot " + id_or_name);
}

// The parent the caller named (`which`), checked to be of this disk.
Result<const CatalogEntry*> NamedParent(const Repository& repo, const std::string& which,
                                        const Id128& disk, const std::string& disk_name) {
  auto any = repo.Find(which);
  if (!any) return any.error();
  if ((*any)->header.disk_id != disk) {
    return Status::InvalidArgument("backup " + Short((*any)->id()) + " is of disk " +
                                   (*any)->header.disk_name + ", not " + disk_name);
  }
  return any;
}

// The start of an incremental whose change source cannot continue the chain.
Status NoParentAt(const Repository& repo, const Id128& disk, const std::string& disk_name,
                  const std::string& where, const std::string& recorder) {
  // With no recorder to name (an external change source such as an NBD
  // bitmap) the advice names the two backups that need no proven start.
  const std::string scan = recorder.empty() ? "a --scan backup" : "'backup --scan " + recorder + "'";
  const std::string full = recorder.empty() ? "a --full one" : "'backup --full " + recorder + "'";
  return Status::UnknownState("no backup of " + disk_name + " ends at " + where + " (" +
                              NewestOf(repo, disk) + "), so what changed since cannot be proven: "
                              "take " + scan + " (reads the disk, stores only what differs) or " + full);
}

class BackupJob {
 public:
  BackupJob(Repository& repo, const BackupRequest& req) : repo_(repo), req_(req), src_(req.source) {}
  Result<BackupResult> Run();

 private:
  Status CheckRequest();
  Status OpenDiskAndImage();
  Status ChooseParent();
  Status ResolveTrackerStart();
  Status ChooseBitmapParent();
  Status TakeEndPoint();
  Result<ExtentSet> Changes();
  Status CheckBitmap(const std::string& name);
  Status LoadParentBitmap();
  Status ReopenImage();

  std::string Recorder() const {
    if (want_tracker_) return "--tracker " + (src_.tracker_dir.empty() ? "DIR" : src_.tracker_dir);
    if (want_bitmap_) return "--bitmap " + src_.bitmap;
    if (want_snapshot_) return "--snapshot " + src_.snapshot;
    if (want_reflink_) return "--reflink";
    return "";
  }
  Status ChooseReflinkParent();

  Repository& repo_;
  const BackupRequest& req_;
  const ChangeSource& src_;
  BackupResult result_;
  bool want_tracker_ = false, want_bitmap_ = false, want_snapshot_ = false, want_reflink_ = false;
  std::string added_clone_;         // a clone this job made (removed again on failure)

  ArchiveHeader header_;
  std::string disk_name_;
  std::unique_ptr<Image> image_;
  Qcow2Image* qcow2_ = nullptr;     // image_ when it is qcow2
  std::unique_ptr<Image> snapshot_view_;
  Image* read_ = nullptr;           // what is read: the image or a snapshot view
  Granularity g_ = Granularity::Default();

  // The end point's tracker: the caller's, or `tracker_dir` reached through
  // its owner's control socket or opened here (tracker_control.h).
  std::unique_ptr<TrackerHandle> tracker_;
  bool owned_tracker_ = false;
  std::string tracker_from_;        // checkpoint the tracker's changes are taken from

  const CatalogEntry* parent_ = nullptr;  // into the catalog: invalid once it changes
  std::vector<std::unique_ptr<ArchiveReader>> parent_chain_;
  std::string added_bitmap_;        // a bitmap this job added (removed again on failure)
  std::optional<ExtentSet> bitmap_changes_;
};

Status BackupJob::CheckRequest() {
  want_tracker_ = src_.tracker != nullptr || !src_.tracker_dir.empty();
  want_bitmap_ = !src_.bitmap.empty();
  want_snapshot_ = !src_.snapshot.empty();
  want_reflink_ = src_.reflink;
  const int recorders = want_tracker_ + want_bitmap_ + want_snapshot_ + want_reflink_;
  if (recorders > 1) {
    return Status::InvalidArgument(
        "a backup ends at one point: choose one of a tracker, a qcow2 bitmap series, an internal snapshot "
        "or a reflink clone");
  }
  if (src_.changes != nullptr) {
    if (recorders > 0) {
      return Status::InvalidArgument("a caller-computed change set brings its own start and end points");
    }
    if (src_.kind == SourceKind::kFull && !src_.start.is_none()) {
      return Status::InvalidArgument("a full backup has no start point");
    }
    return Status::Ok();
  }
  switch (src_.kind) {
    case SourceKind::kFull:
    case SourceKind::kScan:
      break;
    case SourceKind::kTracker:
      if (!want_tracker_) return Status::InvalidArgument("a tracker backup needs a tracker");
      break;
    case SourceKind::kBitmap:
      if (!want_bitmap_) return Status::InvalidArgument("a bitmap backup needs a bitmap series name");
      break;
    case SourceKind::kSnapshot:
      if (src_.since_snapshot.empty()) return Status::InvalidArgument("a snapshot backup needs a start snapshot");
      if (want_tracker_ || want_bitmap_) {
        return Status::InvalidArgument("a snapshot diff ends at a snapshot (--snapshot) or at no point");
      }
      break;
    case SourceKind::kReflink:
      if (!want_reflink_) return Status::InvalidArgument("a reflink backup needs the reflink recorder");
      break;
    case SourceKind::kMerge:
      return Status::InvalidArgument("a merge is not a change source");
  }
  if (!src_.since.empty() && src_.kind != SourceKind::kTracker) {
    return Status::InvalidArgument("--since names the start checkpoint of a tracker backup");
  }
  if (src_.kind == SourceKind::kFull && req_.parent != "latest") {
    return Status::InvalidArgument("a full backup has no parent");
  }
  return Status::Ok();
}

Status BackupJob::OpenDiskAndImage() {
  disk_name_ = !req_.disk_name.empty() ? req_.disk_name : req_.opened ? req_.image : AbsolutePath(req_.image);
  header_.id = NewArchiveId();
  header_.created_unix_ns = NowNs();
  header_.disk_name = disk_name_;
  std::string format = req_.opened ? std::string(req_.opened->format()) : req_.format;
  if (auto known = repo_.DiskNamed(disk_name_)) {
    header_.disk_id = known->id;
    // A disk keeps the format of its first backup: a guest that writes a
    // qcow2 header into its raw disk must not turn it into a qcow2 image.
    if (known->format != DiskFormat::kUnknown) {
      const std::string was = DiskFormatName(known->format);
      if (format == "auto") {
        format = was;
      } else if (format != was) {
        return Status::InvalidArgument(req_.image + ": disk " + disk_name_ + " was backed up as " + was +
                                       ", not " + format + " (use --disk NAME for a different disk)");
      }
    }
  } else {
    header_.disk_id = RandomId128();
  }
  if (req_.opened != nullptr) {
    read_ = req_.opened;
  } else {
    STRATA_ASSIGN_OR_RETURN(image_, OpenImage(req_.image, format, req_.open));
    read_ = image_.get();
  }
  header_.disk_format = FormatOf(*read_);
  qcow2_ = dynamic_cast<Qcow2Image*>(read_);
  const bool needs_qcow2 = want_bitmap_ || want_snapshot_ ||
                           (src_.changes == nullptr &&
                            (src_.kind == SourceKind::kBitmap || src_.kind == SourceKind::kSnapshot));
  if (needs_qcow2 && qcow2_ == nullptr) {
    return Status::InvalidArgument(req_.image + ": qcow2 bitmaps and internal snapshots need a qcow2 image (it is " +
                                   std::string(read_->format()) + ")");
  }
  if (want_reflink_ && read_->format() != "raw") {
    return Status::InvalidArgument(req_.image + ": reflink clones are taken of raw images (it is " +
                                   std::string(read_->format()) + ")");
  }
  if (want_snapshot_) {
    STRATA_ASSIGN_OR_RETURN(Qcow2Snapshot s, FindSnapshot(*qcow2_, src_.snapshot));
    STRATA_ASSIGN_OR_RETURN(snapshot_view_, qcow2_->OpenSnapshot(s.id));
    read_ = snapshot_view_.get();
    header_.end = SnapshotPoint(header_.disk_id, s);
  }
  if (want_tracker_) {
    if (src_.tracker != nullptr) {
      tracker_ = TrackerHandle::Borrow(src_.tracker);
    } else {
      STRATA_ASSIGN_OR_RETURN(tracker_, TrackerHandle::Open(src_.tracker_dir));
      owned_tracker_ = true;
    }
    if (tracker_->disk_size() != read_->size()) {
      return Status::InvalidArgument(tracker_->dir() + ": tracks a disk of " +
                                     std::to_string(tracker_->disk_size()) + " bytes, " + req_.image +
                                     " has " + std::to_string(read_->size()));
    }
  }
  return Status::Ok();
}

// kTracker: the start point is the parent's end checkpoint (or `since`,
// which must be some backup's end point); the changes are taken from it, or
// from the nearest older checkpoint still in the tracker (over-reports)
// when it was removed.
Status BackupJob::ResolveTrackerStart() {
  const Id128 uuid = tracker_->uuid();
  STRATA_ASSIGN_OR_RETURN(const std::vector<CheckpointInfo> cps, tracker_->List());
  const std::string where_dir = tracker_->dir();
  if (!src_.since.empty()) {
    auto it = std::find_if(cps.begin(), cps.end(), [&](const CheckpointInfo& c) { return c.name == src_.since; });
    if (it == cps.end()) return Status::NotFound(where_dir + ": no checkpoint " + src_.since);
    ChainPoint start{PointKind::kTracker, uuid, it->id, it->name};
    if (req_.parent != "latest") {
      STRATA_ASSIGN_OR_RETURN(parent_, NamedParent(repo_, req_.parent, header_.disk_id, disk_name_));
      if (parent_->header.end != start) {
        return Status::UnknownState("backup " + Short(parent_->id()) + " ends at " +
                                    parent_->header.end.Describe() + ", not at " + start.Describe() +
                                    ": an incremental must start where its parent ends");
      }
    } else {
      auto at = repo_.EndingAt(header_.disk_id, start);
      if (at.empty()) return NoParentAt(repo_, header_.disk_id, disk_name_, start.Describe(), Recorder());
      parent_ = at.front();
    }
  } else {
    if (req_.parent != "latest") {
      STRATA_ASSIGN_OR_RETURN(parent_, NamedParent(repo_, req_.parent, header_.disk_id, disk_name_));
      const ChainPoint& e = parent_->header.end;
      if (e.kind != PointKind::kTracker || e.source != uuid) {
        return Status::UnknownState("backup " + Short(parent_->id()) + " ends at " + e.Describe() +
                                    ", not at a checkpoint of tracker " + where_dir + " (" +
                                    Id128ToHex(uuid).substr(0, 8) + ")");
      }
    } else {
      for (const CatalogEntry& e : repo_.entries()) {
        const ArchiveHeader& h = e.header;
        if (h.version < 2 || h.disk_id != header_.disk_id || h.end.kind != PointKind::kTracker ||
            h.end.source != uuid) {
          continue;
        }
        if (!parent_ || h.content_unix_ns >= parent_->header.content_unix_ns) parent_ = &e;
      }
      if (!parent_) {
        return NoParentAt(repo_, header_.disk_id, disk_name_,
                          "a checkpoint of tracker " + where_dir + " (" + Id128ToHex(uuid).substr(0, 8) + ")",
                          Recorder());
      }
    }
  }
  const ChainPoint& start = parent_->header.end;
  const CheckpointInfo* from = nullptr;
  for (const CheckpointInfo& c : cps) {
    if (c.id == start.seq) {
      if (c.name != start.name) {
        return Status::Corruption(where_dir + ": checkpoint #" + std::to_string(c.id) + " is named '" +
                                  c.name + "', backup " + Short(parent_->id()) + " recorded '" + start.name + "'");
      }
      from = &c;
    } else if (c.id < start.seq) {
      from = &c;  // the newest older one, if the parent's own is gone
    }
  }
  if (!from) {
    return Status::UnknownState(where_dir + ": " + start.Describe() + ", where backup " + Short(parent_->id()) +
                                " ends, and every older checkpoint were removed: what changed since cannot be "
                                "told; take 'backup --scan " + Recorder() + "'");
  }
  if (from->id != start.seq) {
    result_.notes.push_back("checkpoint '" + start.name + "' (where backup " + Short(parent_->id()) +
                            " ends) was removed from the tracker; changes are taken since the older checkpoint '" +
                            from->name + "' (may store more than changed)");
  }
  tracker_from_ = from->name;
  return Status::Ok();
}

Status BackupJob::ChooseBitmapParent() {
  if (req_.parent != "latest") {
    STRATA_ASSIGN_OR_RETURN(parent_, NamedParent(repo_, req_.parent, header_.disk_id, disk_name_));
    const ChainPoint& e = parent_->header.end;
    if (e.kind != PointKind::kQcow2Bitmap || e.source != header_.disk_id) {
      return Status::UnknownState("backup " + Short(parent_->id()) + " ends at " + e.Describe() +
                                  ", not at a qcow2 bitmap of " + disk_name_);
    }
    return Status::Ok();
  }
  for (const CatalogEntry& e : repo_.entries()) {
    const ArchiveHeader& h = e.header;
    if (h.version < 2 || h.disk_id != header_.disk_id || h.end.kind != PointKind::kQcow2Bitmap ||
        h.end.source != header_.disk_id) {
      continue;
    }
    if (!parent_ || h.content_unix_ns >= parent_->header.content_unix_ns) parent_ = &e;
  }
  if (!parent_) return NoParentAt(repo_, header_.disk_id, disk_name_, "a qcow2 bitmap strata made", Recorder());
  return Status::Ok();
}

// kReflink: the newest backup of the disk that ends at a clone; the clone
// must still be the file strata made (same fingerprint), or what changed
// since cannot be told.
Status BackupJob::ChooseReflinkParent() {
  if (req_.parent != "latest") {
    STRATA_ASSIGN_OR_RETURN(parent_, NamedParent(repo_, req_.parent, header_.disk_id, disk_name_));
    if (parent_->header.end.kind != PointKind::kReflinkClone) {
      return Status::UnknownState("backup " + Short(parent_->id()) + " ends at " + parent_->header.end.Describe() +
                                  ", not at a reflink clone");
    }
  } else {
    for (const CatalogEntry& e : repo_.entries()) {
      const ArchiveHeader& h = e.header;
      if (h.version < 2 || h.disk_id != header_.disk_id || h.end.kind != PointKind::kReflinkClone) continue;
      if (!parent_ || h.content_unix_ns >= parent_->header.content_unix_ns) parent_ = &e;
    }
    if (!parent_) return NoParentAt(repo_, header_.disk_id, disk_name_, "a reflink clone", Recorder());
  }
  const ChainPoint& e = parent_->header.end;
  auto fp = CloneFingerprint(e.name);
  const std::string advice = ": what changed since backup " + Short(parent_->id()) +
                             " cannot be told; take 'backup --scan --reflink'";
  if (!fp) {
    if (fp.error().code() == StatusCode::kNotFound) {
      return Status::UnknownState(e.name + ": the reflink clone backup " + Short(parent_->id()) + " ends at is gone" +
                                  advice);
    }
    return fp.error();
  }
  if (*fp != e.seq) {
    return Status::UnknownState(e.name + ": the reflink clone was modified or replaced since backup " +
                                Short(parent_->id()) + advice);
  }
  return Status::Ok();
}

Status BackupJob::ChooseParent() {
  if (src_.changes != nullptr) {
    if (src_.kind == SourceKind::kFull) return Status::Ok();
    if (req_.parent != "latest") {
      STRATA_ASSIGN_OR_RETURN(parent_, NamedParent(repo_, req_.parent, header_.disk_id, disk_name_));
      if (parent_->header.end != src_.start) {
        return Status::UnknownState("backup " + Short(parent_->id()) + " ends at " +
                                    parent_->header.end.Describe() + ", not at " + src_.start.Describe());
      }
    } else {
      auto at = repo_.EndingAt(header_.disk_id, src_.start);
      if (at.empty()) return NoParentAt(repo_, header_.disk_id, disk_name_, src_.start.Describe(), "");
      parent_ = at.front();
    }
  } else {
    switch (src_.kind) {
      case SourceKind::kFull:
        return Status::Ok();
      case SourceKind::kScan:
        if (req_.parent != "latest") {
          STRATA_ASSIGN_OR_RETURN(parent_, NamedParent(repo_, req_.parent, header_.disk_id, disk_name_));
        } else {
          parent_ = repo_.Latest(&header_.disk_id);
          if (!parent_) {
            return Status::NotFound(repo_.dir() + ": no backup of " + disk_name_ +
                                    " to compare with (take a --full backup first)");
          }
        }
        break;
      case SourceKind::kTracker:
        STRATA_RETURN_IF_ERROR(ResolveTrackerStart());
        break;
      case SourceKind::kBitmap:
        STRATA_RETURN_IF_ERROR(ChooseBitmapParent());
        break;
      case SourceKind::kReflink:
        STRATA_RETURN_IF_ERROR(ChooseReflinkParent());
        break;
      case SourceKind::kSnapshot: {
        STRATA_ASSIGN_OR_RETURN(Qcow2Snapshot s, FindSnapshot(*qcow2_, src_.since_snapshot));
        ChainPoint start = SnapshotPoint(header_.disk_id, s);
        if (req_.parent != "latest") {
          STRATA_ASSIGN_OR_RETURN(parent_, NamedParent(repo_, req_.parent, header_.disk_id, disk_name_));
          if (parent_->header.end != start) {
            return Status::UnknownState("backup " + Short(parent_->id()) + " ends at " +
                                        parent_->header.end.Describe() + ", not at " + start.Describe());
          }
        } else {
          auto at = repo_.EndingAt(header_.disk_id, start);
          if (at.empty()) {
            return Status::UnknownState("no backup of " + disk_name_ + " ends at " + start.Describe() + " (" +
                                        NewestOf(repo_, header_.disk_id) +
                                        "): take 'backup --full --snapshot " + src_.since_snapshot +
                                        "' first, or --scan");
          }
          parent_ = at.front();
        }
        break;
      }
      case SourceKind::kMerge:
        return Status::InvalidArgument("a merge is not a change source");
    }
  }
  STRATA_ASSIGN_OR_RETURN(parent_chain_, repo_.OpenChain(parent_->id()));
  STRATA_RETURN_IF_ERROR(CheckChain(Raw(parent_chain_)));
  const ArchiveHeader& ph = parent_chain_[0]->header();
  if (ph.disk_size != read_->size()) {
    return Status::InvalidArgument(req_.image + ": disk is " + std::to_string(read_->size()) +
                                   " bytes but parent backup " + Short(ph.id) + " is of " +
                                   std::to_string(ph.disk_size) + " bytes (take a --full backup)");
  }
  STRATA_ASSIGN_OR_RETURN(g_, Granularity::FromShift(ph.granularity_shift));
  if (req_.granularity && *req_.granularity != g_.bytes()) {
    return Status::InvalidArgument("granularity " + std::to_string(*req_.granularity) +
                                   " differs from the parent's " + std::to_string(g_.bytes()));
  }
  header_.parent_id = ph.id;
  header_.parent_identity = IdentityCheck(ph);
  header_.start = ph.end;
  return Status::Ok();
}

// The end point is taken before the disk is read: every write after it is
// in the next backup's change set.
Status BackupJob::TakeEndPoint() {
  if (src_.changes != nullptr) {
    header_.end = src_.end;
    return Status::Ok();
  }
  if (!want_tracker_ && !want_bitmap_ && !want_reflink_) return Status::Ok();  // none, or the snapshot read
  auto take = [&]() -> Status {
    if (want_tracker_) {
      std::string name = src_.checkpoint_name.empty() ? "strata-" + IdToHex(header_.id) : src_.checkpoint_name;
      STRATA_ASSIGN_OR_RETURN(CheckpointInfo cp, tracker_->Checkpoint(name));
      header_.end = ChainPoint{PointKind::kTracker, tracker_->uuid(), cp.id, cp.name};
    } else if (want_reflink_) {
      std::string image = AbsolutePath(req_.image);
      std::string dir = src_.snapshot_dir.empty() ? DirName(image) + "/.strata-snapshots"
                                                  : AbsolutePath(src_.snapshot_dir);
      if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return Status::FromErrno(errno, dir);
      std::string clone = dir + "/" + image.substr(image.rfind('/') + 1) + ".strata-" + IdToHex(header_.id);
      STRATA_RETURN_IF_ERROR(CloneFile(image, clone));
      added_clone_ = clone;
      STRATA_ASSIGN_OR_RETURN(uint64_t fp, CloneFingerprint(clone));
      header_.end = ChainPoint{PointKind::kReflinkClone, header_.disk_id, fp, clone};
    } else {
      std::string name = "strata-" + IdToHex(header_.id);
      uint64_t gran = std::clamp<uint64_t>(g_.bytes(), 512, uint64_t{1} << 31);
      STRATA_RETURN_IF_ERROR(internal::QemuImgBitmap(req_.image, "--add", name, gran));
      added_bitmap_ = name;
      header_.end = ChainPoint{PointKind::kQcow2Bitmap, header_.disk_id, 0, name};
    }
    return Status::Ok();
  };
  bool quiesced = false;
  if (req_.point_window) {
    STRATA_RETURN_IF_ERROR(req_.point_window(take, &quiesced));
  } else {
    STRATA_RETURN_IF_ERROR(take());
  }
  header_.quiesced = quiesced;
  // The window's verdict is known only after the thaw: record it on the
  // checkpoint too, so `tracker list` shows it.
  if (want_tracker_ && quiesced) STRATA_RETURN_IF_ERROR(tracker_->SetQuiesced(header_.end.name, true));
  return Status::Ok();
}

// The bitmap an incremental reads must still record every write since the
// parent was read: present, enabled and saved cleanly.
Status BackupJob::CheckBitmap(const std::string& name) {
  STRATA_ASSIGN_OR_RETURN(std::vector<Qcow2Bitmap> bitmaps, qcow2_->Bitmaps());
  auto it = std::find_if(bitmaps.begin(), bitmaps.end(), [&](const Qcow2Bitmap& b) { return b.name == name; });
  const std::string advice = ": what changed since backup " + Short(parent_->id()) +
                             " cannot be told; take 'backup --scan " + Recorder() + "'";
  if (it == bitmaps.end()) return Status::UnknownState(req_.image + ": bitmap '" + name + "' is gone" + advice);
  if (it->in_use) {
    return Status::UnknownState(req_.image + ": bitmap '" + name +
                                "' is in use (a VM has the image open, or crashed with it open)" + advice);
  }
  if (!it->consistent) return Status::UnknownState(req_.image + ": bitmap '" + name + "' is inconsistent" + advice);
  if (!it->auto_flag) {
    return Status::UnknownState(req_.image + ": bitmap '" + name + "' was disabled, so writes since may be missing" +
                                advice);
  }
  return Status::Ok();
}

// kBitmap: the parent's end bitmap is read before the new one is added (the
// image is offline: nothing writes in between), because adding a bitmap
// rewrites the bitmap directory.
Status BackupJob::LoadParentBitmap() {
  const std::string& from = parent_->header.end.name;
  STRATA_RETURN_IF_ERROR(CheckBitmap(from));
  STRATA_ASSIGN_OR_RETURN(ExtentSet set, qcow2_->LoadBitmap(from));
  if (set.disk_size() != read_->size()) {
    return Status::UnknownState(req_.image + ": bitmap '" + from + "' is for another disk size");
  }
  STRATA_ASSIGN_OR_RETURN(ExtentSet conv, set.WithGranularity(g_));
  bitmap_changes_ = std::move(conv);
  return Status::Ok();
}

// qemu-img changed the image's metadata: read it afresh.
Status BackupJob::ReopenImage() {
  snapshot_view_.reset();
  STRATA_ASSIGN_OR_RETURN(image_,
                          OpenImage(req_.image, std::string(DiskFormatName(header_.disk_format)), req_.open));
  qcow2_ = dynamic_cast<Qcow2Image*>(image_.get());
  read_ = image_.get();
  if (want_snapshot_) {
    STRATA_ASSIGN_OR_RETURN(snapshot_view_, qcow2_->OpenSnapshot(src_.snapshot));
    read_ = snapshot_view_.get();
  }
  return Status::Ok();
}

Result<ExtentSet> BackupJob::Changes() {
  if (src_.changes != nullptr) {
    if (src_.changes->disk_size() != read_->size()) {
      return Status::InvalidArgument(req_.image + ": change set is for a disk of " +
                                     std::to_string(src_.changes->disk_size()) + " bytes");
    }
    if (src_.kind == SourceKind::kFull) return AllocatedExtents(*read_, g_, true);
    return src_.changes->WithGranularity(g_);
  }
  switch (src_.kind) {
    case SourceKind::kFull:
      return AllocatedExtents(*read_, g_, true);
    case SourceKind::kScan: {
      STRATA_ASSIGN_OR_RETURN(ExtentSet all, ExtentSet::Create(read_->size(), g_));
      STRATA_RETURN_IF_ERROR(all.AddBlocks({0, all.disk_blocks()}));
      return all;
    }
    case SourceKind::kTracker: {
      auto set = tracker_->ChangedBetween(tracker_from_, header_.end.name);
      if (!set) {
        if (set.error().code() == StatusCode::kUnknownState) {
          return set.error().WithContext("the tracker cannot tell what changed (take 'backup --scan " +
                                         Recorder() + "')");
        }
        return set.error();
      }
      return set->WithGranularity(g_);
    }
    case SourceKind::kBitmap:
      if (!bitmap_changes_) return Status::InvalidArgument("bitmap changes not loaded");
      return std::move(*bitmap_changes_);
    case SourceKind::kReflink: {
      STRATA_ASSIGN_OR_RETURN(ExtentSet set, ReflinkDiff(header_.start.name, header_.end.name, g_));
      if (set.disk_size() != read_->size()) {
        return Status::InvalidArgument(req_.image + ": the disk was resized since " + header_.start.name +
                                       " (take a --full backup)");
      }
      return set;
    }
    case SourceKind::kSnapshot: {
      STRATA_ASSIGN_OR_RETURN(ExtentSet set, qcow2_->SnapshotDiff(src_.since_snapshot, src_.snapshot));
      if (set.disk_size() != read_->size()) {
        return Status::InvalidArgument(req_.image + ": the disk was resized since " + src_.since_snapshot +
                                       " (take a --full backup)");
      }
      return set.WithGranularity(g_);
    }
    case SourceKind::kMerge:
      break;
  }
  return Status::InvalidArgument("a merge is not a change source");
}

// Times the phases of a job (BackupStats::phases).
class PhaseClock {
 public:
  void Mark(const char* name) {
    auto now = std::chrono::steady_clock::now();
    phases_.push_back({name, std::chrono::duration<double>(now - last_).count()});
    last_ = now;
  }
  std::vector<PhaseTime> Take() { return std::move(phases_); }

 private:
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
  std::vector<PhaseTime> phases_;
};

Result<BackupResult> BackupJob::Run() {
  PhaseClock clock;
  STRATA_RETURN_IF_ERROR(CheckRequest());
  STRATA_RETURN_IF_ERROR(OpenDiskAndImage());
  clock.Mark("open");
  header_.source = src_.kind;
  if (want_bitmap_) header_.source_name = src_.bitmap;
  if (src_.kind == SourceKind::kSnapshot) header_.source_name = src_.since_snapshot;
  if (src_.kind == SourceKind::kFull && req_.granularity) {
    STRATA_ASSIGN_OR_RETURN(g_, Granularity::FromBytes(*req_.granularity));
  }
  STRATA_RETURN_IF_ERROR(ChooseParent());
  if (src_.changes == nullptr && src_.kind == SourceKind::kBitmap) {
    STRATA_RETURN_IF_ERROR(LoadParentBitmap());
  }
  clock.Mark("parent");
  STRATA_RETURN_IF_ERROR(TakeEndPoint());
  header_.content_unix_ns = NowNs();
  clock.Mark("end point");
  auto run = [&]() -> Result<BackupResult> {
    if (!added_bitmap_.empty()) STRATA_RETURN_IF_ERROR(ReopenImage());
    if (!added_clone_.empty()) {  // the clone is the point in time: read it, not the live image
      STRATA_ASSIGN_OR_RETURN(image_, OpenImage(added_clone_, "raw"));
      read_ = image_.get();
    }
    STRATA_ASSIGN_OR_RETURN(ExtentSet changes, Changes());
    std::unique_ptr<ScanBaseline> baseline;
    if (src_.kind == SourceKind::kScan) {
      STRATA_ASSIGN_OR_RETURN(ScanBaseline b, ScanBaseline::Build(Raw(parent_chain_)));
      baseline = std::make_unique<ScanBaseline>(std::move(b));
    }
    clock.Mark("changes");
    STRATA_ASSIGN_OR_RETURN(auto done, WriteAndRecord(repo_, *read_, changes, header_, req_.pipeline, baseline.get()));
    result_.entry = done.first;
    result_.stats = done.second;
    return std::move(result_);
  };
  Result<BackupResult> r = run();
  if (!r) {
    // A bitmap added for an end point nobody recorded would only cost QEMU
    // work on every write: take it away again.
    if (!added_bitmap_.empty()) (void)internal::QemuImgBitmap(req_.image, "--remove", added_bitmap_);
    if (!added_clone_.empty()) ::unlink(added_clone_.c_str());
    return r;
  }
  const auto cleanup_start = std::chrono::steady_clock::now();
  // The clone the parent ended at is no longer needed: this backup's clone
  // is the next start. Only clones strata made (".strata-<id>") are removed.
  if (src_.kind == SourceKind::kReflink && header_.start.name.find(".strata-") != std::string::npos) {
    if (::unlink(header_.start.name.c_str()) != 0 && errno != ENOENT) {
      r->notes.push_back("could not remove the previous clone " + header_.start.name + ": " + std::strerror(errno));
    } else {
      (void)Env::Default()->SyncDirOf(header_.start.name);
    }
  }
  // The bitmap the parent ended at is not needed once this backup is
  // durable (this backup's end bitmap records everything after it). Only
  // bitmaps strata made are removed; a user's own are left alone.
  // (The catalog grew: parent_ may point into reallocated memory; use the
  // copy of the point taken before.)
  if (src_.changes == nullptr && src_.kind == SourceKind::kBitmap && header_.start.name.rfind("strata-", 0) == 0) {
    Status s = internal::QemuImgBitmap(req_.image, "--remove", header_.start.name);
    if (!s.ok()) r->notes.push_back("could not remove the previous bitmap: " + s.message());
  }
  if (owned_tracker_) {
    if (Status s = tracker_->Close(); !s.ok()) r->notes.push_back("closing the tracker: " + s.message());
  }
  // The pipeline's own phases (setup, transfer, finish) come from RunBackup;
  // the catalog update is timed in WriteAndRecord.
  std::vector<PhaseTime> phases = clock.Take();
  for (PhaseTime& p : r->stats.phases) phases.push_back(std::move(p));
  phases.push_back({"cleanup", std::chrono::duration<double>(std::chrono::steady_clock::now() - cleanup_start).count()});
  r->stats.phases = std::move(phases);
  return r;
}

}  // namespace

Result<BackupResult> BackupToRepository(Repository& repo, const BackupRequest& req) {
  STRATA_RETURN_IF_ERROR(CompletePending(repo, req.pipeline));
  BackupJob job(repo, req);
  return job.Run();
}

Result<RestoreStats> RestoreFromRepository(Repository& repo, const std::string& which,
                                           const std::string& output, const PipelineOptions& opt) {
  STRATA_ASSIGN_OR_RETURN(const CatalogEntry* e, repo.Find(which));
  STRATA_ASSIGN_OR_RETURN(auto chain, repo.OpenChain(e->id()));
  return RunRestore(Raw(chain), output, opt);
}

namespace {

// Rewrites every child of `victim` that still builds on it and updates the
// catalog; children rewritten before an interruption (their archive already
// names victim's parent) only get their catalog entry updated. Then removes
// victim. Idempotent: a rerun after any interruption finishes the same job.
Result<std::vector<ArchiveId>> FinishRemove(Repository& repo, const ArchiveId& victim, PipelineOptions opt) {
  opt.env = repo.env();
  std::vector<ArchiveId> children;
  for (const CatalogEntry* c : repo.Children(victim)) children.push_back(c->id());
  for (const ArchiveId& child : children) {
    STRATA_ASSIGN_OR_RETURN(auto current, ArchiveReader::Open(repo.ArchivePath(child), repo.env()));
    if (current->header().parent_id == victim) {
      STRATA_ASSIGN_OR_RETURN(auto chain, repo.OpenChain(child));
      // The rewritten child replaces its archive atomically and keeps its
      // identity: a crash here leaves either the old or the new child, and
      // both restore the same content.
      STRATA_RETURN_IF_ERROR(FoldIntoChild(Raw(chain), repo.ArchivePath(child), opt).status());
      STRATA_ASSIGN_OR_RETURN(current, ArchiveReader::Open(repo.ArchivePath(child), repo.env()));
    }
    STRATA_RETURN_IF_ERROR(repo.Replace(Repository::EntryFor(*current)));
  }
  STRATA_RETURN_IF_ERROR(repo.Remove(victim));
  return children;
}

}  // namespace

Status CompletePending(Repository& repo, const PipelineOptions& opt) {
  if (repo.read_only()) return Status::Ok();
  std::vector<PendingOp> ops = repo.pending();
  for (const PendingOp& op : ops) {
    if (op.kind != PendingOp::Kind::kRemove) continue;
    STRATA_RETURN_IF_ERROR(FinishRemove(repo, op.id, opt)
                               .status()
                               .WithContext(repo.dir() + ": completing the interrupted removal of backup " +
                                            IdToHex(op.id)));
  }
  return Status::Ok();
}

Result<std::vector<ArchiveId>> RemoveBackup(Repository& repo, const ArchiveId& victim,
                                            const PipelineOptions& opt) {
  STRATA_RETURN_IF_ERROR(CompletePending(repo, opt));
  bool known = false;
  for (const CatalogEntry& e : repo.entries()) known |= e.id() == victim;
  if (!known) return Status::NotFound(repo.dir() + ": no backup " + IdToHex(victim));
  STRATA_RETURN_IF_ERROR(repo.Begin({PendingOp::Kind::kRemove, victim}));
  return FinishRemove(repo, victim, opt);
}

Result<RepairPlan> PlanRepair(Repository& repo) {
  RepairPlan plan;
  plan.catalog = repo.LoadCatalog();
  Env* env = repo.env();
  const std::string adir = repo.dir() + "/archives";
  STRATA_ASSIGN_OR_RETURN(std::vector<std::string> names, env->ListDir(adir));
  std::sort(names.begin(), names.end());
  // Temporaries of catalog writes a killed writer (repair included) left.
  STRATA_ASSIGN_OR_RETURN(std::vector<std::string> top, env->ListDir(repo.dir()));
  std::sort(top.begin(), top.end());
  for (const std::string& n : top) {
    if (Repository::IsCatalogTemporary(n)) plan.removed.push_back(repo.dir() + "/" + n);
  }
  std::vector<ArchiveId> unacknowledged;
  for (const PendingOp& op : repo.pending()) {
    if (op.kind == PendingOp::Kind::kBackup) unacknowledged.push_back(op.id);
    if (op.kind == PendingOp::Kind::kRemove) plan.pending_merge = true;
  }
  for (const std::string& n : names) {
    const std::string path = adir + "/" + n;
    if (n.find(".partial.") != std::string::npos) {
      plan.removed.push_back(path);
      continue;
    }
    if (n.size() != 36 || n.compare(32, 4, ".sar") != 0 || !IdFromHex(n.substr(0, 32))) continue;
    const ArchiveId id = *IdFromHex(n.substr(0, 32));
    if (std::find(unacknowledged.begin(), unacknowledged.end(), id) != unacknowledged.end()) {
      plan.removed.push_back(path);
      continue;
    }
    auto r = ArchiveReader::Open(path, env);
    if (!r) {
      plan.damaged.push_back(path + ": " + r.error().message());
      continue;
    }
    if ((*r)->header().id != id) {
      plan.damaged.push_back(path + ": holds backup " + IdToHex((*r)->header().id));
      continue;
    }
    plan.entries.push_back(Repository::EntryFor(**r));
  }
  std::stable_sort(plan.entries.begin(), plan.entries.end(), [](const CatalogEntry& a, const CatalogEntry& b) {
    return a.header.created_unix_ns < b.header.created_unix_ns;
  });
  if (plan.catalog.ok()) {
    for (const CatalogEntry& e : repo.entries()) {
      auto it = std::find_if(plan.entries.begin(), plan.entries.end(),
                             [&](const CatalogEntry& x) { return x.id() == e.id(); });
      if (it == plan.entries.end()) {
        plan.dropped.push_back(IdToHex(e.id()));
      } else if (EncodeHeader(it->header) != EncodeHeader(e.header) || it->logical_bytes != e.logical_bytes ||
                 it->stored_bytes != e.stored_bytes || it->archive_bytes != e.archive_bytes) {
        plan.corrected.push_back(IdToHex(e.id()));
      }
    }
    for (const CatalogEntry& e : plan.entries) {
      bool named = std::any_of(repo.entries().begin(), repo.entries().end(),
                               [&](const CatalogEntry& x) { return x.id() == e.id(); });
      if (!named) plan.added.push_back(IdToHex(e.id()));
    }
  } else {
    for (const CatalogEntry& e : plan.entries) plan.added.push_back(IdToHex(e.id()));
  }
  // Chains are checked on the archives as they are (a pending merge is
  // finished first, which can only make chains whole).
  if (!plan.pending_merge) {
    for (const CatalogEntry& e : plan.entries) {
      std::vector<std::unique_ptr<ArchiveReader>> chain;
      ArchiveId cur = e.id();
      Status s;
      for (size_t depth = 0; s.ok(); ++depth) {
        auto it = std::find_if(plan.entries.begin(), plan.entries.end(),
                               [&](const CatalogEntry& x) { return x.id() == cur; });
        if (it == plan.entries.end() || depth > plan.entries.size()) {
          s = Status::NotFound("its chain needs backup " + IdToHex(cur) + ", which is missing or damaged");
          break;
        }
        auto r = ArchiveReader::Open(repo.ArchivePath(cur), env);
        if (!r) {
          s = r.error();
          break;
        }
        bool full = (*r)->header().is_full();
        cur = (*r)->header().parent_id;
        chain.push_back(std::move(*r));
        if (full) break;
      }
      if (s.ok()) s = CheckChain(Raw(chain));
      if (!s.ok()) plan.broken.push_back(IdToHex(e.id()) + ": " + s.message());
    }
  }
  return plan;
}

Status ApplyRepair(Repository& repo, const RepairPlan& plan, const PipelineOptions& opt) {
  Env* env = repo.env();
  // Leftovers of killed writers: temporaries and archives of backups never
  // acknowledged.
  for (const std::string& p : plan.removed) {
    Status s = env->Remove(p);
    if (!s.ok() && s.code() != StatusCode::kNotFound) return s;
  }
  if (plan.pending_merge && plan.catalog.ok()) {
    // The journal is intact: finish the merge instead of guessing.
    STRATA_RETURN_IF_ERROR(CompletePending(repo, opt));
    return Status::Ok();
  }
  const std::string catalog = repo.dir() + "/catalog";
  if (env->Exists(catalog)) {
    STRATA_ASSIGN_OR_RETURN(std::vector<uint8_t> old, env->ReadWholeFile(catalog));
    STRATA_RETURN_IF_ERROR(env->WriteFileAtomic(catalog + ".replaced-" + std::to_string(NowNs() / 1000000000), old));
  }
  if (!plan.damaged.empty()) {
    const std::string ddir = repo.dir() + "/archives/damaged";
    Status m = env->MakeDir(ddir);
    if (!m.ok() && m.code() != StatusCode::kAlreadyExists) return m;
    for (const std::string& d : plan.damaged) {
      const std::string path = d.substr(0, d.find(": "));
      STRATA_RETURN_IF_ERROR(env->Rename(path, ddir + "/" + path.substr(path.rfind('/') + 1)));
    }
    STRATA_RETURN_IF_ERROR(env->SyncDir(ddir));
  }
  STRATA_RETURN_IF_ERROR(env->SyncDir(repo.dir() + "/archives"));
  return repo.Rewrite(plan.entries);
}

Result<BackupResult> SyntheticFull(Repository& repo, const ArchiveId& source,
                                   const PipelineOptions& opt) {
  STRATA_RETURN_IF_ERROR(CompletePending(repo, opt));
  STRATA_ASSIGN_OR_RETURN(auto chain, repo.OpenChain(source));
  STRATA_ASSIGN_OR_RETURN(auto image, OpenChainImage(Raw(chain)));
  const ArchiveHeader& src = chain[0]->header();
  STRATA_ASSIGN_OR_RETURN(Granularity g, Granularity::FromShift(src.granularity_shift));
  STRATA_ASSIGN_OR_RETURN(ExtentSet set, AllocatedExtents(*image, g, true));
  // Same disk, same content, same end point: later incrementals may build
  // on either; its content is as old as the source's (§8).
  ArchiveHeader h;
  h.id = NewArchiveId();
  h.created_unix_ns = NowNs();
  h.source = SourceKind::kFull;
  h.merged = true;
  h.source_name = "synthetic full of " + IdToHex(src.id);
  h.disk_id = src.disk_id;
  h.disk_name = src.disk_name;
  h.disk_format = src.disk_format;
  h.content_unix_ns = src.content_unix_ns;
  h.quiesced = src.quiesced;
  h.end = src.end;
  PipelineOptions o = opt;
  o.chunk_size = src.chunk_size;
  STRATA_ASSIGN_OR_RETURN(auto done, WriteAndRecord(repo, *image, set, h, o, nullptr));
  return BackupResult{done.first, done.second, {}};
}

}  // namespace strata
