// BackupLibvirtDomain: libvirt checkpoints + pull-mode virDomainBackupBegin
// (docs/design/live.md).
//
// One backup job covers every chosen disk, so all are read at the same
// point in time. Each disk is a disk of the repository
// ("libvirt:DOMAIN:TARGET") whose backups start and end at libvirt
// checkpoints strata-<series>-<n>; each disk continues from the checkpoint
// its own newest backup ends at (per-disk backupmode/incremental), so a run
// that stored some disks and failed on others loses nothing.
//
// State (STATE = the state directory, KEY = hash of URI and domain):
//   STATE/l-KEY.lock      one run per domain at a time
//   STATE/l-KEY.pending   the checkpoint a run is creating (a killed run's is
//                         deleted by the next run unless a backup ends at it)
//   STATE/l-KEY.frozen    the guest was frozen through libvirt (thawed next run)
//   STATE/w-KEY/          NBD socket and scratch images, owned by the user
//                         QEMU runs as (libvirt creates the scratch images)
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>

#include "engine/live/live_internal.h"

namespace strata::live {

namespace {

using namespace internal;

std::string VirError(const std::string& what) {
  virErrorPtr e = virGetLastError();
  return what + ": " + (e && e->message ? e->message : "libvirt error");
}

Status WriteText(const std::string& path, const std::string& text) {
  return Env::Default()->WriteFileAtomic(path, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

std::string ReadText(const std::string& path) {
  auto r = Env::Default()->ReadWholeFile(path);
  if (!r) return "";
  return std::string(r->begin(), r->end());
}

bool Exists(const std::string& p) {
  struct stat st;
  return ::lstat(p.c_str(), &st) == 0;
}

// Attributes of every element named `tag` in a libvirt XML document
// (libvirt writes attributes in single quotes and escapes them).
std::vector<std::map<std::string, std::string>> Elements(const std::string& xml, const std::string& tag,
                                                         size_t from = 0, size_t to = std::string::npos) {
  std::vector<std::map<std::string, std::string>> out;
  const std::string open = "<" + tag;
  for (size_t at = xml.find(open, from); at != std::string::npos && at < to; at = xml.find(open, at + 1)) {
    char next = xml[at + open.size()];
    if (next != ' ' && next != '>' && next != '/') continue;
    size_t end = xml.find('>', at);
    if (end == std::string::npos) break;
    std::map<std::string, std::string> attrs;
    std::string body = xml.substr(at + open.size(), end - at - open.size());
    for (size_t p = 0;;) {
      size_t eq = body.find('=', p);
      if (eq == std::string::npos || eq + 1 >= body.size()) break;
      char q = body[eq + 1];
      if (q != '\'' && q != '"') break;
      size_t close = body.find(q, eq + 2);
      if (close == std::string::npos) break;
      size_t ks = body.find_last_of(" \t\n", eq);
      std::string key = body.substr(ks == std::string::npos ? 0 : ks + 1, eq - (ks == std::string::npos ? 0 : ks + 1));
      attrs[key] = body.substr(eq + 2, close - eq - 2);
      p = close + 1;
    }
    attrs["@offset"] = std::to_string(at);
    out.push_back(std::move(attrs));
  }
  return out;
}

struct DiskPlan {
  std::string target;      // sda, vda, ...
  std::string disk_name;   // in the repository
  std::string mode;        // full, incremental, scan
  ChainPoint start;
  std::string note;
  Granularity g = Granularity::Default();
  std::string export_name, export_bitmap;
};

class LibvirtBackup {
 public:
  LibvirtBackup(Repository& repo, const LibvirtSource& src, const LiveOptions& opt)
      : repo_(repo), src_(src), opt_(opt) {}
  ~LibvirtBackup() {
    if (dom_) virDomainFree(dom_);
    if (conn_) virConnectClose(conn_);
  }
  Result<LiveResult> Run();

 private:
  Status Cleanup();
  Status Plan();
  Status Begin();
  Status EndJob();
  Status AbortAndWait(const std::string& what);
  Status DeleteCheckpoint(const std::string& name);
  bool CheckpointExists(const std::string& name);
  std::vector<std::string> StrataCheckpoints();

  Repository& repo_;
  const LibvirtSource& src_;
  const LiveOptions& opt_;
  LiveResult result_;
  virConnectPtr conn_ = nullptr;
  virDomainPtr dom_ = nullptr;
  Id128 uuid_{};
  std::string state_, key_, work_, socket_, pending_record_, freeze_record_;
  std::vector<DiskPlan> disks_;
  ChainPoint end_;
  bool job_running_ = false;
};

bool LibvirtBackup::CheckpointExists(const std::string& name) {
  virDomainCheckpointPtr cp = virDomainCheckpointLookupByName(dom_, name.c_str(), 0);
  if (!cp) return false;
  virDomainCheckpointFree(cp);
  return true;
}

Status LibvirtBackup::DeleteCheckpoint(const std::string& name) {
  virDomainCheckpointPtr cp = virDomainCheckpointLookupByName(dom_, name.c_str(), 0);
  if (!cp) return Status::Ok();
  int r = virDomainCheckpointDelete(cp, 0);
  // Read the error before the free (which resets it).
  Status s = r == 0 ? Status::Ok() : Status(StatusCode::kIoError, VirError("deleting checkpoint " + name));
  if (r != 0 && s.message().find("not found") != std::string::npos) {
    // libvirt kept the checkpoint's metadata but QEMU has no bitmap for it
    // (a run killed inside virDomainBackupBegin): drop the metadata only.
    if (virDomainCheckpointDelete(cp, VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY) == 0) {
      s = Status::Ok();
    } else {
      s = Status(StatusCode::kIoError, s.message() + "; " + VirError("deleting its metadata only"));
    }
  }
  virDomainCheckpointFree(cp);
  return s;
}

std::vector<std::string> LibvirtBackup::StrataCheckpoints() {
  std::vector<std::string> names;
  virDomainCheckpointPtr* cps = nullptr;
  int n = virDomainListAllCheckpoints(dom_, &cps, 0);
  for (int i = 0; i < n; ++i) {
    std::string name = virDomainCheckpointGetName(cps[i]);
    if (IsStrataName(name)) names.push_back(name);
    virDomainCheckpointFree(cps[i]);
  }
  free(cps);
  return names;
}

// A pull-mode job of ours still running (its NBD socket is ours), a freeze,
// a checkpoint no backup ends at, scratch images.
Status LibvirtBackup::Cleanup() {
  Step(opt_, "cleanup");
  std::vector<std::string> done;
  if (Exists(freeze_record_)) {
    if (virDomainFSThaw(dom_, nullptr, 0, 0) < 0) {
      return Status(StatusCode::kIoError, VirError("thawing the guest a killed run froze"));
    }
    ::unlink(freeze_record_.c_str());
    done.push_back("thawed the guest filesystems a killed run had frozen");
  }
  // A killed run's virDomainBackupBegin may still run inside libvirtd:
  // touch nothing until the domain is quiet (no job, or a backup job that
  // has begun), or libvirt's own rollback races ours.
  for (int i = 0; i < 12000; ++i) {
    virDomainJobInfo info;
    if (virDomainGetJobInfo(dom_, &info) != 0 || info.type == VIR_DOMAIN_JOB_NONE) break;
    if (char* xml = virDomainBackupGetXMLDesc(dom_, 0)) {
      bool begun = std::string(xml).find("exportname") != std::string::npos;
      free(xml);
      if (begun) break;
    }
    usleep(10000);
  }
  if (char* xml = virDomainBackupGetXMLDesc(dom_, 0)) {
    std::string x = xml;
    free(xml);
    if (x.find(socket_) != std::string::npos) {
      STRATA_RETURN_IF_ERROR(AbortAndWait("ending a killed run's backup job"));
      done.push_back("pull-mode backup job");
    } else {
      return Status::Busy(src_.domain + ": another backup job runs on the domain (not strata's)");
    }
  }
  if (Exists(pending_record_)) {
    const std::string name = ReadText(pending_record_);
    bool ended = false;
    for (const CatalogEntry& e : repo_.entries()) {
      ended |= e.header.end.kind == PointKind::kLibvirtCheckpoint && e.header.end.name == name;
    }
    if (!ended && !name.empty() && CheckpointExists(name)) {
      STRATA_RETURN_IF_ERROR(DeleteCheckpoint(name));
      done.push_back("checkpoint " + name + " (no backup ends at it)");
    }
    ::unlink(pending_record_.c_str());
  }
  if (auto names = Env::Default()->ListDir(work_)) {
    for (const std::string& n : *names) {
      if (n.size() > 6 && n.compare(n.size() - 6, 6, ".qcow2") == 0) {
        ::unlink((work_ + "/" + n).c_str());
        done.push_back("scratch image " + n);
      }
    }
  }
  ::unlink(socket_.c_str());
  if (!done.empty()) {
    std::string s;
    for (const std::string& d : done) s += (s.empty() ? "" : ", ") + d;
    result_.notes.push_back("removed what an interrupted run left: " + s);
  }
  return Status::Ok();
}

Status LibvirtBackup::Plan() {
  char* xml = virDomainGetXMLDesc(dom_, 0);
  if (!xml) return Status(StatusCode::kIoError, VirError(src_.domain));
  std::string x = xml;
  free(xml);
  // <disk type=... device='disk'> ... <target dev='sda' .../> ... </disk>
  std::vector<std::string> all;
  std::string owner_file;
  for (const auto& d : Elements(x, "disk")) {
    auto dev = d.find("device");
    if (dev != d.end() && dev->second != "disk") continue;
    size_t at = std::stoull(d.at("@offset"));
    size_t end = x.find("</disk>", at);
    auto targets = Elements(x, "target", at, end);
    if (targets.empty() || !targets[0].count("dev")) continue;
    all.push_back(targets[0].at("dev"));
    auto sources = Elements(x, "source", at, end);
    if (owner_file.empty() && !sources.empty() && sources[0].count("file")) owner_file = sources[0].at("file");
  }
  std::vector<std::string> chosen = src_.disks.empty() ? all : src_.disks;
  for (const std::string& t : chosen) {
    if (std::find(all.begin(), all.end(), t) == all.end()) {
      return Status::NotFound(src_.domain + ": no disk with target " + t);
    }
  }
  if (chosen.empty()) return Status::NotFound(src_.domain + ": no disk to back up");
  // The work directory belongs to the user QEMU runs as (libvirt gives the
  // disk images to that user), so QEMU can create the NBD socket there.
  STRATA_RETURN_IF_ERROR(PrepareStateDir(work_));
  struct stat st;
  if (!owner_file.empty() && ::stat(owner_file.c_str(), &st) == 0) {
    if (::chown(work_.c_str(), st.st_uid, st.st_gid) != 0) return Status::FromErrno(errno, work_);
    for (std::string p = state_; p.size() > 1; p = p.substr(0, p.rfind('/'))) {
      struct stat ps;
      if (::stat(p.c_str(), &ps) == 0 && (ps.st_mode & 0111) != 0111) ::chmod(p.c_str(), (ps.st_mode & 07777) | 0111);
      if (p.rfind('/') == 0 || p.rfind('/') == std::string::npos) break;
    }
  }
  uint64_t seq = 0;
  for (const std::string& t : chosen) {
    DiskPlan p;
    p.target = t;
    p.disk_name = "libvirt:" + src_.domain + ":" + t;
    const CatalogEntry* parent = NewestEndingAt(repo_, p.disk_name, PointKind::kLibvirtCheckpoint);
    if (parent && parent->header.end.source == uuid_) {
      seq = std::max(seq, parent->header.end.seq);
      STRATA_ASSIGN_OR_RETURN(p.g, Granularity::FromShift(parent->header.granularity_shift));
      p.start = parent->header.end;
      if (opt_.full) {
        p.mode = "full";
      } else if (!CheckpointExists(p.start.name)) {
        p.mode = "scan";
        p.note = "checkpoint '" + p.start.name + "' is gone: reading the whole disk and storing only chunks that " +
                 "differ from backup " + IdToHex(parent->id()).substr(0, 8) + " (--scan)";
      } else {
        p.mode = "incremental";
      }
    } else {
      p.mode = "full";
      if (!opt_.full) p.note = "no backup of " + p.disk_name + " ends at a libvirt checkpoint yet: taking a full backup";
      if (opt_.granularity) {
      STRATA_ASSIGN_OR_RETURN(p.g, Granularity::FromBytes(*opt_.granularity));
    }
    }
    disks_.push_back(std::move(p));
  }
  // Checkpoint names: strata-<domain uuid>-<n>, n one more than any
  // disk's newest end point.
  end_ = SeriesPoint(PointKind::kLibvirtCheckpoint, uuid_, seq + 1);
  while (CheckpointExists(end_.name)) end_ = SeriesPoint(PointKind::kLibvirtCheckpoint, uuid_, end_.seq + 1);
  return Status::Ok();
}

Status LibvirtBackup::Begin() {
  std::vector<std::string> all_targets;
  std::string bx = "<domainbackup mode='pull'>\n  <server transport='unix' socket='" + socket_ + "'/>\n  <disks>\n";
  std::string cx = "<domaincheckpoint>\n  <name>" + end_.name + "</name>\n  <disks>\n";
  for (const DiskPlan& p : disks_) {
    bx += "    <disk name='" + p.target + "' backup='yes' type='file'";
    if (p.mode == "incremental") bx += " backupmode='incremental' incremental='" + p.start.name + "'";
    else bx += " backupmode='full'";
    bx += "><scratch file='" + work_ + "/" + p.target + ".qcow2'/></disk>\n";
    cx += "    <disk name='" + p.target + "' checkpoint='bitmap'/>\n";
  }
  // Disks not chosen are neither read nor given a checkpoint bitmap.
  char* xml = virDomainGetXMLDesc(dom_, 0);
  std::string x = xml ? xml : "";
  free(xml);
  for (const auto& d : Elements(x, "disk")) {
    auto dev = d.find("device");
    size_t at = std::stoull(d.at("@offset"));
    auto targets = Elements(x, "target", at, x.find("</disk>", at));
    if (targets.empty() || !targets[0].count("dev")) continue;
    const std::string t = targets[0].at("dev");
    if (std::any_of(disks_.begin(), disks_.end(), [&](const DiskPlan& p) { return p.target == t; })) continue;
    if (dev != d.end() && dev->second != "disk") continue;
    bx += "    <disk name='" + t + "' backup='no'/>\n";
    cx += "    <disk name='" + t + "' checkpoint='no'/>\n";
  }
  bx += "  </disks>\n</domainbackup>\n";
  cx += "  </disks>\n</domaincheckpoint>\n";
  STRATA_RETURN_IF_ERROR(WriteText(pending_record_, end_.name));
  bool frozen = false;
  if (src_.quiesce) {
    STRATA_RETURN_IF_ERROR(WriteText(freeze_record_, src_.domain));
    if (virDomainFSFreeze(dom_, nullptr, 0, 0) < 0) {
      ::unlink(freeze_record_.c_str());
      return Status(StatusCode::kIoError, VirError(src_.domain + ": freezing through the guest agent"));
    }
    frozen = true;
  }
  // The checkpoint first, then the backup: writes in between are in this
  // backup's content and in the checkpoint's bitmap (stored twice, never
  // missed). Created inside virDomainBackupBegin instead, a client killed
  // during the call leaves libvirt 9.0 with the checkpoint's metadata but
  // without its bitmap (libvirt cancels the job and discards the bitmap),
  // which then cannot be deleted.
  std::string err;
  int r = -1;
  virDomainCheckpointPtr cp = virDomainCheckpointCreateXML(dom_, cx.c_str(), 0);
  if (cp == nullptr) {
    err = VirError(src_.domain + ": creating checkpoint " + end_.name);
  } else {
    virDomainCheckpointFree(cp);
    r = virDomainBackupBegin(dom_, bx.c_str(), nullptr, 0);
    if (r < 0) {
      err = VirError(src_.domain + ": backup begin");
      (void)DeleteCheckpoint(end_.name);
    }
  }
  if (frozen) {
    if (virDomainFSThaw(dom_, nullptr, 0, 0) < 0) {
      return Status(StatusCode::kIoError, VirError(src_.domain + ": thawing (the next run retries)"));
    }
    ::unlink(freeze_record_.c_str());
    result_.quiesced = r >= 0;
  }
  if (r < 0) {
    ::unlink(pending_record_.c_str());
    return Status(StatusCode::kIoError, err);
  }
  job_running_ = true;
  char* bxml = virDomainBackupGetXMLDesc(dom_, 0);
  if (!bxml) return Status(StatusCode::kIoError, VirError("backup XML"));
  std::string b = bxml;
  free(bxml);
  for (const auto& d : Elements(b, "disk")) {
    auto name = d.find("name");
    if (name == d.end()) continue;
    for (DiskPlan& p : disks_) {
      if (p.target != name->second) continue;
      p.export_name = d.count("exportname") ? d.at("exportname") : p.target;
      p.export_bitmap = d.count("exportbitmap") ? d.at("exportbitmap") : "";
    }
  }
  return Status::Ok();
}

// virDomainAbortJob returns while libvirt still tears the job down (the
// backup XML stays readable for a moment): wait until it is gone, so the
// checkpoint and bitmap operations after it find a quiet domain.
Status LibvirtBackup::AbortAndWait(const std::string& what) {
  if (virDomainAbortJob(dom_) != 0) {
    std::string err = VirError(what);
    if (err.find("no job is active") == std::string::npos) return Status(StatusCode::kIoError, err);
  }
  for (int i = 0; i < 3000; ++i) {
    char* xml = virDomainBackupGetXMLDesc(dom_, 0);
    virDomainJobInfo info;
    bool idle = virDomainGetJobInfo(dom_, &info) == 0 && info.type == VIR_DOMAIN_JOB_NONE;
    if (xml == nullptr && idle) return Status::Ok();
    free(xml);
    usleep(10000);
  }
  return Status::Busy(what + ": the backup job did not end within 30 s");
}

Status LibvirtBackup::EndJob() {
  if (!job_running_) return Status::Ok();
  Step(opt_, "teardown");
  STRATA_RETURN_IF_ERROR(AbortAndWait(src_.domain + ": ending the backup job"));
  job_running_ = false;
  return Status::Ok();
}

Result<LiveResult> LibvirtBackup::Run() {
  state_ = opt_.state_dir.empty() ? DefaultStateDir() : opt_.state_dir;
  STRATA_RETURN_IF_ERROR(PrepareStateDir(state_));
  key_ = ShortHash(src_.uri + "\n" + src_.domain);
  STRATA_ASSIGN_OR_RETURN(auto lock, LockState(state_, "l-" + key_));
  work_ = state_ + "/w-" + key_;
  socket_ = work_ + "/nbd.sock";
  pending_record_ = state_ + "/l-" + key_ + ".pending";
  freeze_record_ = state_ + "/l-" + key_ + ".frozen";
  // Errors are returned as Status values; libvirt's default handler would
  // also print each one (including the expected "not found" lookups).
  virSetErrorFunc(nullptr, [](void*, virErrorPtr) {});
  conn_ = virConnectOpen(src_.uri.empty() ? nullptr : src_.uri.c_str());
  if (!conn_) return Status(StatusCode::kIoError, VirError("connecting to libvirt" + (src_.uri.empty() ? "" : " at " + src_.uri)));
  dom_ = virDomainLookupByName(conn_, src_.domain.c_str());
  if (!dom_) return Status::NotFound(VirError("domain " + src_.domain));
  if (virDomainIsActive(dom_) != 1) return Status::InvalidArgument(src_.domain + ": the domain is not running");
  unsigned char uuid[VIR_UUID_BUFLEN];
  if (virDomainGetUUID(dom_, uuid) != 0) return Status(StatusCode::kIoError, VirError(src_.domain));
  std::copy(uuid, uuid + 16, uuid_.begin());
  Status begun;
  for (int attempt = 0;; ++attempt) {
    disks_.clear();
    STRATA_RETURN_IF_ERROR(Cleanup());
    STRATA_RETURN_IF_ERROR(Plan());
    Step(opt_, "transaction");
    begun = Begin();
    // A killed client's virDomainBackupBegin can keep running inside libvirtd
    // and hold the domain's job until libvirt times it out: wait for it to
    // end, then clean up what it made and plan again.
    if (begun.ok() || begun.message().find("state change lock") == std::string::npos || attempt == 5) break;
    result_.notes.push_back("waited for a backup job a killed run had started in libvirtd");
  }
  if (!begun.ok() && std::any_of(disks_.begin(), disks_.end(), [](const DiskPlan& p) { return p.mode == "incremental"; }) &&
      begun.message().find("bitmap") != std::string::npos) {
    // libvirt refuses an incremental from a checkpoint whose bitmap is
    // missing or inconsistent in QEMU (e.g. after a host crash): read
    // those disks whole and store what differs.
    for (DiskPlan& p : disks_) {
      if (p.mode != "incremental") continue;
      p.mode = "scan";
      p.note = "the bitmap of checkpoint '" + p.start.name + "' is missing or inconsistent (" + begun.message() +
               "): reading the whole disk and storing only chunks that differ (--scan)";
    }
    begun = Begin();
  }
  if (!begun.ok()) {
    (void)EndJob();
    return begun;
  }
  Step(opt_, "read");
  Status failed;
  size_t stored = 0;
  for (DiskPlan& p : disks_) {
    LiveDisk d;
    d.disk_name = p.disk_name;
    d.mode = p.mode;
    if (!p.note.empty()) d.notes.push_back(p.note);
    auto one = [&]() -> Status {
      NbdOptions no;
      no.connections = opt_.connections;
      if (p.mode == "incremental") {
        if (p.export_bitmap.empty()) return Status(StatusCode::kIoError, src_.domain + ": libvirt exported no bitmap for " + p.target);
        no.bitmap = p.export_bitmap;
      }
      STRATA_ASSIGN_OR_RETURN(auto img, NbdImage::Open("nbd+unix:///" + p.export_name + "?socket=" + socket_, no));
      std::optional<ExtentSet> changes;
      if (p.mode == "incremental") {
      STRATA_ASSIGN_OR_RETURN(changes, img->DirtyExtents(p.g));
    }
      LiveOptions o = opt_;
      if (p.mode == "full" && !o.granularity) o.granularity = p.g.bytes();
      STRATA_ASSIGN_OR_RETURN(d.backup, BackupImage(repo_, *img, p.disk_name, p.mode, changes ? &*changes : nullptr,
                                                    p.start, end_, o));
      return Status::Ok();
    };
    Status s = one();
    if (!s.ok()) {
      failed = s.WithContext(p.disk_name);
      break;
    }
    ++stored;
    result_.disks.push_back(std::move(d));
  }
  Status ended = EndJob();
  if (!failed.ok()) {
    // With no disk stored, the new checkpoint ends nothing: delete it. The
    // parents' checkpoints stay, so the next backup covers every write.
    if (stored == 0 && DeleteCheckpoint(end_.name).ok()) ::unlink(pending_record_.c_str());
    if (stored > 0) ::unlink(pending_record_.c_str());
    return failed;
  }
  Step(opt_, "commit");
  ::unlink(pending_record_.c_str());
  if (!ended.ok()) result_.notes.push_back("ending the backup job: " + ended.message() + " (the next run retries)");
  // Checkpoints of this domain's chain that no disk's newest backup ends at
  // are not needed any more.
  std::set<std::string> keep;
  for (const CatalogEntry& e : repo_.entries()) {
    if (e.header.end.kind != PointKind::kLibvirtCheckpoint || e.header.end.source != uuid_) continue;
    const CatalogEntry* newest = NewestEndingAt(repo_, e.header.disk_name, PointKind::kLibvirtCheckpoint);
    if (newest) keep.insert(newest->header.end.name);
  }
  for (const std::string& name : StrataCheckpoints()) {
    if (IsSeriesName(name, uuid_) && !keep.count(name)) {
      Status s = DeleteCheckpoint(name);
      if (!s.ok()) result_.notes.push_back("could not delete checkpoint " + name + ": " + s.message());
    }
  }
  return std::move(result_);
}

}  // namespace

Result<LiveResult> BackupLibvirtDomain(Repository& repo, const LibvirtSource& src, const LiveOptions& opt) {
  LibvirtBackup b(repo, src, opt);
  return b.Run();
}

}  // namespace strata::live
