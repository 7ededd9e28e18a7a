// BackupQemuNode: pull-mode backups of a running QEMU over QMP
// (docs/design/live.md).
//
// Names QEMU holds for one node (KEY = 16 hex digits of a hash of the node
// name, so every name fits QEMU's 31-byte node-name limit):
//   strata-s-KEY   scratch qcow2 node (backing: the live node) and its file
//                  STATE/s-KEY-RANDOM.qcow2 (a new name per run)
//   strata-f-KEY   the blockdev-backup sync=none job (copy-before-write)
//   strata-e-KEY   the NBD export of the scratch node, and the disabled copy
//                  of the parent's checkpoint bitmap it exports
// and, per QEMU (QMP socket), an NBD server on STATE/q-QKEY.sock started
// only if none runs (recorded in STATE/q-QKEY.server before it starts).
// Checkpoint bitmaps are strata-<series>-<n> (live_internal.h).
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <chrono>
#include <thread>

#include "engine/live/live_internal.h"
#include "engine/live/qmp.h"
#include "engine/quiesce/process.h"
#include "engine/quiesce/qga.h"

namespace strata::live {

namespace {

using namespace internal;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr milliseconds kQmpTimeout = seconds(30);

bool Exists(const std::string& p) {
  struct stat st;
  return ::lstat(p.c_str(), &st) == 0;
}

void RemoveFile(const std::string& p) { (void)::unlink(p.c_str()); }

// qemu-img: $STRATA_QEMU_IMG, else the first on PATH.
std::string QemuImgPath() {
  if (const char* e = std::getenv("STRATA_QEMU_IMG"); e && *e) return e;
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/bin:/bin";
  for (size_t at = 0; at <= p.size();) {
    size_t colon = p.find(':', at);
    if (colon == std::string::npos) colon = p.size();
    std::string cand = p.substr(at, colon - at) + "/qemu-img";
    if (::access(cand.c_str(), X_OK) == 0) return cand;
    at = colon + 1;
  }
  return "/usr/bin/qemu-img";
}

Status WriteText(const std::string& path, const std::string& text) {
  return Env::Default()->WriteFileAtomic(path, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

std::string ReadText(const std::string& path) {
  auto r = Env::Default()->ReadWholeFile(path);
  if (!r) return "";
  return std::string(r->begin(), r->end());
}

// One node's facts from query-named-block-nodes.
struct NodeInfo {
  bool found = false;
  uint64_t size = 0;
  std::string driver;
  Json bitmaps = Json::array();
};

Result<Json> NamedNodes(QmpClient& q) { return q.Execute("query-named-block-nodes", Json{{"flat", true}}); }

Result<NodeInfo> QueryNode(QmpClient& q, const std::string& node) {
  STRATA_ASSIGN_OR_RETURN(Json nodes, NamedNodes(q));
  NodeInfo n;
  for (const Json& b : nodes) {
    if (b.value("node-name", "") != node) continue;
    n.found = true;
    n.driver = b.value("drv", "");
    if (b.contains("image")) n.size = b["image"].value("virtual-size", uint64_t{0});
    if (b.contains("dirty-bitmaps")) n.bitmaps = b["dirty-bitmaps"];
  }
  return n;
}

const Json* FindBitmap(const NodeInfo& n, const std::string& name) {
  for (const Json& b : n.bitmaps) {
    if (b.value("name", "") == name) return &b;
  }
  return nullptr;
}

class QemuBackup {
 public:
  QemuBackup(Repository& repo, const QmpSource& src, const LiveOptions& opt)
      : repo_(repo), src_(src), opt_(opt) {}
  Result<LiveResult> Run();

 private:
  Status Cleanup();                // what earlier (killed) runs left
  Status ChooseMode();
  Status Arrange();                // scratch, transaction, server, export
  Status Transaction();
  Status Teardown();               // export, server, job, scratch, export bitmap
  Status CancelJob(const std::string& id);
  Status DeleteExport(const std::string& id);
  Status RemoveBitmap(const std::string& name);

  Repository& repo_;
  const QmpSource& src_;
  const LiveOptions& opt_;
  LiveResult result_;
  LiveDisk disk_;
  std::unique_ptr<QmpClient> qmp_;
  std::string state_, qkey_, key_;
  std::string scratch_node_, scratch_file_, job_, export_, export_bitmap_, socket_, server_record_, freeze_record_,
      pending_record_;
  NodeInfo node_;
  const CatalogEntry* parent_ = nullptr;
  ChainPoint parent_end_;  // copied: the catalog grows during the backup
  ChainPoint start_, end_;
  Granularity g_ = Granularity::Default();
  bool made_new_bitmap_ = false;
};

Status QemuBackup::CancelJob(const std::string& id) {
  STRATA_ASSIGN_OR_RETURN(Json jobs, qmp_->Execute("query-block-jobs"));
  bool present = false;
  for (const Json& j : jobs) present |= j.value("device", "") == id;
  if (!present) return Status::Ok();
  Status s = qmp_->Execute("block-job-cancel", Json{{"device", id}, {"force", true}}).status();
  if (!s.ok() && s.code() != StatusCode::kNotFound) return s;
  // The job goes away once cancelled (auto-dismiss); wait for that.
  for (int i = 0; i < 600; ++i) {
    STRATA_ASSIGN_OR_RETURN(jobs, qmp_->Execute("query-block-jobs"));
    present = false;
    for (const Json& j : jobs) present |= j.value("device", "") == id;
    if (!present) return Status::Ok();
    std::this_thread::sleep_for(milliseconds(10));
  }
  return Status::Busy(qmp_->path() + ": job " + id + " did not end after block-job-cancel");
}

Status QemuBackup::DeleteExport(const std::string& id) {
  STRATA_ASSIGN_OR_RETURN(Json ex, qmp_->Execute("query-block-exports"));
  bool present = false;
  for (const Json& e : ex) present |= e.value("id", "") == id;
  if (!present) return Status::Ok();
  Status s = qmp_->Execute("block-export-del", Json{{"id", id}, {"mode", "hard"}}).status();
  if (!s.ok() && s.code() != StatusCode::kNotFound) return s;
  for (int i = 0; i < 600; ++i) {
    STRATA_ASSIGN_OR_RETURN(ex, qmp_->Execute("query-block-exports"));
    present = false;
    for (const Json& e : ex) present |= e.value("id", "") == id;
    if (!present) return Status::Ok();
    std::this_thread::sleep_for(milliseconds(10));
  }
  return Status::Busy(qmp_->path() + ": export " + id + " did not go away");
}

Status QemuBackup::RemoveBitmap(const std::string& name) {
  Status s = qmp_->Execute("block-dirty-bitmap-remove", Json{{"node", src_.node}, {"name", name}}).status();
  if (!s.ok() && qmp_->last_error_desc().find("not found") == std::string::npos &&
      qmp_->last_error_desc().find("Dirty bitmap") == std::string::npos) {
    return s;
  }
  return Status::Ok();
}

// Everything a killed run may have left, in the order that frees each
// thing before what it holds: a freeze, the export (holds the export
// bitmap and the scratch node), our NBD server, the job (holds the scratch
// node), the scratch node and file, the export bitmap.
Status QemuBackup::Cleanup() {
  Step(opt_, "cleanup");
  std::vector<std::string> done;
  if (Exists(freeze_record_)) {
    std::string qga = ReadText(freeze_record_);
    auto n = quiesce::QgaClient::SyncAndThaw(qga, seconds(10));
    if (!n) return n.error().WithContext("thawing the guest a killed run froze (" + freeze_record_ + ")");
    RemoveFile(freeze_record_);
    done.push_back("thawed the guest filesystems a killed run had frozen");
  }
  STRATA_ASSIGN_OR_RETURN(Json ex, qmp_->Execute("query-block-exports"));
  for (const Json& e : ex) {
    if (e.value("id", "") == export_) {
      STRATA_RETURN_IF_ERROR(DeleteExport(export_));
      done.push_back("NBD export " + export_);
    }
  }
  if (Exists(server_record_)) {
    // Our server, unless other exports use it (then it is left running).
    STRATA_ASSIGN_OR_RETURN(ex, qmp_->Execute("query-block-exports"));
    bool foreign = false;
    for (const Json& e : ex) foreign |= !IsStrataName(e.value("id", ""));
    if (!foreign && ex.empty()) {
      Status s = qmp_->Execute("nbd-server-stop").status();
      if (s.ok()) done.push_back("NBD server on " + socket_);
      RemoveFile(server_record_);
      RemoveFile(socket_);
    }
  }
  STRATA_ASSIGN_OR_RETURN(Json jobs, qmp_->Execute("query-block-jobs"));
  for (const Json& j : jobs) {
    if (j.value("device", "") == job_) {
      STRATA_RETURN_IF_ERROR(CancelJob(job_));
      done.push_back("block job " + job_);
    }
  }
  STRATA_ASSIGN_OR_RETURN(Json nodes, NamedNodes(*qmp_));
  for (const Json& b : nodes) {
    if (b.value("node-name", "") == scratch_node_) {
      STRATA_RETURN_IF_ERROR(qmp_->Execute("blockdev-del", Json{{"node-name", scratch_node_}}).status());
      done.push_back("scratch node " + scratch_node_);
    }
  }
  // Scratch images of earlier runs (each run names its own: a killed run's
  // qemu-img may still be creating one, holding its lock).
  if (auto names = Env::Default()->ListDir(state_)) {
    const std::string prefix = "s-" + key_ + "-";
    for (const std::string& n : *names) {
      if (n.rfind(prefix, 0) == 0 && n.size() > 6 && n.compare(n.size() - 6, 6, ".qcow2") == 0) {
        RemoveFile(state_ + "/" + n);
        done.push_back("scratch image " + n);
      }
    }
  }
  STRATA_ASSIGN_OR_RETURN(node_, QueryNode(*qmp_, src_.node));
  if (!node_.found) return Status::NotFound(qmp_->path() + ": no block node named '" + src_.node + "'");
  if (Exists(pending_record_)) {
    // The checkpoint bitmap a killed run added: kept if its backup was
    // recorded, removed otherwise.
    const std::string name = ReadText(pending_record_);
    bool ended = false;
    for (const CatalogEntry& e : repo_.entries()) ended |= e.header.end.kind == PointKind::kQemuBitmap && e.header.end.name == name;
    if (!ended && !name.empty() && FindBitmap(node_, name)) {
      STRATA_RETURN_IF_ERROR(RemoveBitmap(name));
      done.push_back("checkpoint bitmap " + name + " (no backup ends at it)");
    }
    RemoveFile(pending_record_);
  }
  if (FindBitmap(node_, export_bitmap_)) {
    STRATA_RETURN_IF_ERROR(RemoveBitmap(export_bitmap_));
    done.push_back("export bitmap " + export_bitmap_);
  }
  if (!done.empty()) {
    std::string s;
    for (const std::string& d : done) s += (s.empty() ? "" : ", ") + d;
    result_.notes.push_back("removed what an interrupted run left in QEMU: " + s);
  }
  STRATA_ASSIGN_OR_RETURN(node_, QueryNode(*qmp_, src_.node));
  return Status::Ok();
}

Status QemuBackup::ChooseMode() {
  parent_ = NewestEndingAt(repo_, disk_.disk_name, PointKind::kQemuBitmap);
  Id128 series = RandomId128();
  uint64_t seq = 1;
  if (parent_) {
    parent_end_ = parent_->header.end;
    series = parent_end_.source;
    seq = parent_end_.seq + 1;
    STRATA_ASSIGN_OR_RETURN(g_, Granularity::FromShift(parent_->header.granularity_shift));
  } else if (opt_.granularity) {
    STRATA_ASSIGN_OR_RETURN(g_, Granularity::FromBytes(*opt_.granularity));
  }
  // Checkpoint bitmaps of this chain that no backup ends at (a killed run's
  // new bitmap, or a parent bitmap whose removal a killed run missed).
  // Any chain of this disk counts: a killed --full leaves the old chain's
  // bitmap behind once the new chain has its first backup.
  std::vector<Id128> chains;
  if (auto disk = repo_.DiskNamed(disk_.disk_name)) {
    for (const CatalogEntry& e : repo_.entries()) {
      if (e.header.disk_id == disk->id && e.header.end.kind == PointKind::kQemuBitmap) chains.push_back(e.header.end.source);
    }
  }
  for (const Json& b : node_.bitmaps) {
    std::string name = b.value("name", "");
    bool ours = std::any_of(chains.begin(), chains.end(), [&](const Id128& c) { return IsSeriesName(name, c); });
    if (parent_ && ours && name != parent_end_.name) {
      STRATA_RETURN_IF_ERROR(RemoveBitmap(name));
      result_.notes.push_back("removed checkpoint bitmap '" + name + "' that no backup ends at");
    }
  }
  if (opt_.full || !parent_) {
    disk_.mode = "full";
    if (!opt_.full) {
      disk_.notes.push_back("no backup of " + disk_.disk_name + " ends at a QEMU bitmap yet: taking a full backup");
    }
    if (opt_.full && parent_) series = RandomId128(), seq = 1;
    if (!parent_ || opt_.full) {
      g_ = Granularity::Default();
      if (opt_.granularity) {
      STRATA_ASSIGN_OR_RETURN(g_, Granularity::FromBytes(*opt_.granularity));
    }
    }
  } else {
    const Json* b = FindBitmap(node_, parent_end_.name);
    std::string why;
    if (b == nullptr) {
      why = "is gone (QEMU restarted without saving it, or it was removed)";
    } else if (b->value("inconsistent", false)) {
      why = "is inconsistent (QEMU or the host crashed while it was in use)";
    } else if (!b->value("recording", true)) {
      why = "is disabled, so writes since may be missing";
    } else if (b->value("busy", false)) {
      return Status::Busy(qmp_->path() + ": bitmap '" + parent_end_.name + "' of node " + src_.node +
                          " is in use by another operation");
    } else if (b->value("granularity", uint64_t{0}) > g_.bytes()) {
      why = "has a coarser granularity than the backups";
    }
    if (!why.empty()) {
      disk_.mode = "scan";
      disk_.notes.push_back("bitmap '" + parent_end_.name + "' " + why + ": reading the whole disk and storing only " +
                            "chunks that differ from backup " + IdToHex(parent_->id()).substr(0, 8) +
                            " (--scan), then continuing with a new bitmap");
    } else {
      disk_.mode = "incremental";
    }
    start_ = parent_end_;
  }
  end_ = SeriesPoint(PointKind::kQemuBitmap, series, seq);
  return Status::Ok();
}

Status QemuBackup::Transaction() {
  Json actions = Json::array();
  if (disk_.mode == "incremental") {
    actions.push_back({{"type", "block-dirty-bitmap-add"},
                       {"data",
                        {{"node", src_.node},
                         {"name", export_bitmap_},
                         {"granularity", g_.bytes()},
                         {"persistent", false},
                         {"disabled", true}}}});
    actions.push_back({{"type", "block-dirty-bitmap-merge"},
                       {"data", {{"node", src_.node}, {"target", export_bitmap_}, {"bitmaps", {parent_end_.name}}}}});
  }
  const bool persistent = node_.driver == "qcow2";
  actions.push_back({{"type", "block-dirty-bitmap-add"},
                     {"data", {{"node", src_.node}, {"name", end_.name}, {"granularity", g_.bytes()},
                               {"persistent", persistent}}}});
  actions.push_back({{"type", "blockdev-backup"},
                     {"data", {{"job-id", job_}, {"device", src_.node}, {"target", scratch_node_},
                               {"sync", "none"}, {"auto-dismiss", true}}}});
  if (!persistent) {
    disk_.notes.push_back("node " + src_.node + " is " + node_.driver +
                          ", not qcow2: its checkpoint bitmap lives only in QEMU's memory (a restart loses it "
                          "and the next backup is a --scan)");
  }
  made_new_bitmap_ = true;  // from here on, a failure removes it again
  STRATA_RETURN_IF_ERROR(WriteText(pending_record_, end_.name));  // and so does the next run after a kill
  auto run = [&]() -> Status { return qmp_->Execute("transaction", Json{{"actions", actions}}).status(); };
  if (src_.qga_socket.empty() || !src_.quiesce) return run();
  // The freeze covers the transaction only. It is recorded first, so a run
  // killed inside the window is thawed by the next one.
  STRATA_RETURN_IF_ERROR(WriteText(freeze_record_, src_.qga_socket));
  auto agent = quiesce::QgaClient::Connect(src_.qga_socket, seconds(10));
  if (!agent) {
    RemoveFile(freeze_record_);
    return agent.error().WithContext("guest agent");
  }
  auto frozen = src_.quiesce_mounts.empty() ? (*agent)->FreezeAll() : (*agent)->FreezeList(src_.quiesce_mounts);
  if (!frozen) {
    (void)quiesce::QgaClient::SyncAndThaw(src_.qga_socket, seconds(10));
    RemoveFile(freeze_record_);
    return frozen.error().WithContext("freezing the guest");
  }
  Status s = run();
  auto thawed = (*agent)->Thaw();
  if (!thawed) thawed = quiesce::QgaClient::SyncAndThaw(src_.qga_socket, seconds(10));
  if (!thawed) return thawed.error().WithContext("thawing the guest (" + freeze_record_ + " stays for the next run)");
  RemoveFile(freeze_record_);
  result_.quiesced = s.ok();
  result_.notes.push_back("froze " + std::to_string(*frozen) + " guest filesystem(s) for the transaction");
  return s;
}

Status QemuBackup::Arrange() {
  if (node_.size == 0) return Status::InvalidArgument(qmp_->path() + ": node " + src_.node + " has no image size");
  // The scratch image holds the old data of blocks the guest overwrites
  // while the backup reads (copy-before-write); it starts empty.
  auto rc = quiesce::internal::RunProcess({QemuImgPath(), "create", "-q", "-f", "qcow2", scratch_file_,
                                           std::to_string(node_.size)},
                                          seconds(60));
  if (!rc) return rc.error().WithContext("qemu-img create " + scratch_file_);
  if (*rc != 0) return Status(StatusCode::kIoError, "qemu-img create " + scratch_file_ + " exited with " + std::to_string(*rc));
  STRATA_RETURN_IF_ERROR(qmp_->Execute("blockdev-add", Json{{"driver", "qcow2"},
                                                              {"node-name", scratch_node_},
                                                              {"file", {{"driver", "file"}, {"filename", scratch_file_}}},
                                                              {"backing", src_.node}})
                             .status());
  Step(opt_, "transaction");
  STRATA_RETURN_IF_ERROR(Transaction());
  Step(opt_, "export");
  STRATA_ASSIGN_OR_RETURN(Json ex, qmp_->Execute("query-block-exports"));
  // One NBD server per QEMU: start ours unless one runs (then this fails
  // and says so: QEMU cannot serve two).
  STRATA_RETURN_IF_ERROR(WriteText(server_record_, socket_));
  RemoveFile(socket_);
  Status s = qmp_->Execute("nbd-server-start", Json{{"addr", {{"type", "unix"}, {"data", {{"path", socket_}}}}}}).status();
  if (!s.ok()) {
    RemoveFile(server_record_);
    return s.WithContext("starting an NBD server (is another backup tool serving this QEMU?)");
  }
  Json exp = {{"type", "nbd"}, {"id", export_}, {"node-name", scratch_node_}, {"name", "strata"}, {"writable", false}};
  if (disk_.mode == "incremental") exp["bitmaps"] = Json::array({export_bitmap_});
  return qmp_->Execute("block-export-add", exp).status();
}

Status QemuBackup::Teardown() {
  Step(opt_, "teardown");
  Status first;
  auto keep = [&](const Status& s) {
    if (first.ok() && !s.ok()) first = s;
  };
  keep(DeleteExport(export_));
  if (Exists(server_record_)) {
    Status s = qmp_->Execute("nbd-server-stop").status();
    if (s.ok() || qmp_->last_error_desc().find("not running") != std::string::npos) {
      RemoveFile(server_record_);
      RemoveFile(socket_);
    } else {
      keep(s);
    }
  }
  keep(CancelJob(job_));
  auto nodes = NamedNodes(*qmp_);
  if (nodes) {
    for (const Json& b : *nodes) {
      if (b.value("node-name", "") == scratch_node_) {
        keep(qmp_->Execute("blockdev-del", Json{{"node-name", scratch_node_}}).status());
      }
    }
  } else {
    keep(nodes.error());
  }
  RemoveFile(scratch_file_);
  keep(RemoveBitmap(export_bitmap_));
  return first;
}

Result<LiveResult> QemuBackup::Run() {
  if (src_.node.empty()) return Status::InvalidArgument("--node names the disk's block node");
  state_ = opt_.state_dir.empty() ? DefaultStateDir() : opt_.state_dir;
  STRATA_RETURN_IF_ERROR(PrepareStateDir(state_));
  const std::string socket_path = RealPath(src_.socket);
  qkey_ = ShortHash(socket_path);
  key_ = ShortHash(socket_path + "\n" + src_.node);
  STRATA_ASSIGN_OR_RETURN(auto lock, LockState(state_, "q-" + qkey_));
  scratch_node_ = "strata-s-" + key_;
  job_ = "strata-f-" + key_;
  export_ = "strata-e-" + key_;
  export_bitmap_ = "strata-e-" + key_;
  scratch_file_ = state_ + "/s-" + key_ + "-" + Id128ToHex(RandomId128()).substr(0, 12) + ".qcow2";
  socket_ = state_ + "/q-" + qkey_ + ".sock";
  server_record_ = state_ + "/q-" + qkey_ + ".server";
  freeze_record_ = state_ + "/q-" + qkey_ + ".frozen";
  pending_record_ = state_ + "/n-" + key_ + ".pending";
  disk_.disk_name = opt_.disk_name.empty() ? "qemu:" + socket_path + ":" + src_.node : opt_.disk_name;
  STRATA_ASSIGN_OR_RETURN(qmp_, QmpClient::Connect(src_.socket, kQmpTimeout));
  STRATA_RETURN_IF_ERROR(Cleanup());
  STRATA_RETURN_IF_ERROR(ChooseMode());

  auto backup = [&]() -> Status {
    STRATA_RETURN_IF_ERROR(Arrange());
    Step(opt_, "read");
    NbdOptions no;
    no.connections = opt_.connections;
    if (disk_.mode == "incremental") no.bitmap = export_bitmap_;
    const std::string uri = "nbd+unix:///strata?socket=" + socket_;
    STRATA_ASSIGN_OR_RETURN(auto img, NbdImage::Open(uri, no));
    if (img->size() != node_.size) {
      return Status(StatusCode::kIoError, uri + ": export has " + std::to_string(img->size()) + " bytes, node " +
                                              src_.node + " " + std::to_string(node_.size));
    }
    std::optional<ExtentSet> changes;
    if (disk_.mode == "incremental") {
      STRATA_ASSIGN_OR_RETURN(changes, img->DirtyExtents(g_));
    }
    STRATA_ASSIGN_OR_RETURN(disk_.backup, BackupImage(repo_, *img, disk_.disk_name, disk_.mode,
                                                      changes ? &*changes : nullptr, start_, end_, opt_));
    return Status::Ok();
  };
  Status s = backup();
  Status t = Teardown();
  if (!s.ok()) {
    // The new checkpoint bitmap ends no backup: drop it. The parent's
    // bitmap was never touched, so the next backup still covers every
    // write since the last one that succeeded.
    if (made_new_bitmap_ && RemoveBitmap(end_.name).ok()) RemoveFile(pending_record_);
    return s;
  }
  Step(opt_, "commit");
  RemoveFile(pending_record_);
  // The backup is durable: the parent's bitmap is not needed any more (the
  // new one records everything after this backup's point).
  if (parent_ && IsStrataName(parent_end_.name)) {
    Status r = RemoveBitmap(parent_end_.name);
    if (!r.ok()) disk_.notes.push_back("could not remove the previous checkpoint bitmap: " + r.message());
  }
  if (!t.ok()) result_.notes.push_back("teardown incomplete (the next run finishes it): " + t.message());
  result_.disks.push_back(std::move(disk_));
  return std::move(result_);
}

}  // namespace

Result<LiveResult> BackupQemuNode(Repository& repo, const QmpSource& src, const LiveOptions& opt) {
  QemuBackup b(repo, src, opt);
  return b.Run();
}

}  // namespace strata::live
