#include "strata/repository.h"


#include <cstdio>
#include <algorithm>
#include <cstring>
#include <sstream>

#include "extents/endian.h"

namespace strata {

namespace {
constexpr char kMarker[] = "strata-repository";
constexpr char kMarkerText[] = "strata repository, format 1\n";
constexpr char kCatalogMagic[] = "strata-catalog 2";
constexpr char kCatalogMagicV1[] = "strata-catalog 1";

// Version 1 catalogs %-escaped names.
bool Unescape(const std::string& s, std::string* out) {
  out->clear();
  if (s == "-") return true;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      *out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return false;
    char* end = nullptr;
    std::string hex = s.substr(i + 1, 2);
    long v = std::strtol(hex.c_str(), &end, 16);
    if (*end != 0) return false;
    *out += static_cast<char>(v);
    i += 2;
  }
  return true;
}

bool ParseU64(const std::string& s, uint64_t* v) {
  if (s.empty() || s.size() > 20) return false;
  char* end = nullptr;
  *v = std::strtoull(s.c_str(), &end, 10);
  return *end == 0;
}
}  // namespace

CatalogEntry Repository::EntryFor(const ArchiveReader& a) {
  CatalogEntry e;
  e.header = a.header();
  e.logical_bytes = a.logical_bytes();
  e.stored_bytes = a.stored_bytes();
  e.archive_bytes = a.file_size();
  return e;
}

Status Repository::Init(const std::string& dir, Env* env) {
  if (env == nullptr) env = Env::Default();
  Status made = env->MakeDir(dir);
  if (!made.ok() && made.code() != StatusCode::kAlreadyExists) return made;
  if (made.ok()) STRATA_RETURN_IF_ERROR(env->SyncDirOf(dir));
  // Two `init`s of one directory at once: one waits for the other, then
  // finds its marker.
  STRATA_ASSIGN_OR_RETURN(auto lock, env->Lock(dir + "/lock", LockMode::kExclusive, std::chrono::seconds(10)));
  std::string marker = dir + "/" + kMarker;
  if (env->Exists(marker)) return Status::AlreadyExists(dir + ": already a strata repository");
  Status a = env->MakeDir(dir + "/archives");
  if (!a.ok() && a.code() != StatusCode::kAlreadyExists) return a;
  std::string cat = std::string(kCatalogMagic) + "\n";
  cat += "xxh3 " + Hex(Xxh3_64(cat.data(), cat.size())) + "\n";
  STRATA_RETURN_IF_ERROR(env->WriteFileAtomic(
      dir + "/catalog", {reinterpret_cast<const uint8_t*>(cat.data()), cat.size()}));
  // The marker last: a repository exists only once it is complete.
  return env->WriteFileAtomic(marker, {reinterpret_cast<const uint8_t*>(kMarkerText), sizeof kMarkerText - 1});
}

Result<std::unique_ptr<Repository>> Repository::Lock(const std::string& dir, const RepositoryOptions& o) {
  std::unique_ptr<Repository> r(new Repository);
  r->dir_ = dir;
  r->env_ = o.env ? o.env : Env::Default();
  r->read_only_ = o.read_only;
  auto marker = r->env_->ReadWholeFile(dir + "/" + kMarker);
  if (!marker) {
    if (marker.error().code() == StatusCode::kNotFound) {
      return Status::NotFound(dir + ": not a strata repository (run 'strata init " + dir + "')");
    }
    return marker.error();
  }
  if (std::string(marker->begin(), marker->end()) != kMarkerText) {
    return Status::Unsupported(dir + "/" + kMarker + ": unknown repository format");
  }
  auto lock = r->env_->Lock(dir + "/lock", o.read_only ? LockMode::kShared : LockMode::kExclusive, o.lock_wait);
  if (!lock) {
    if (lock.error().code() == StatusCode::kBusy) {
      return Status::Busy(dir + ": repository is in use by another strata process" +
                          std::string(o.lock_wait.count() ? "" : " (wait for it with --lock-wait SECONDS)"));
    }
    return lock.error();
  }
  r->lock_ = std::move(*lock);
  return r;
}

Result<std::unique_ptr<Repository>> Repository::Open(const std::string& dir, const RepositoryOptions& o) {
  STRATA_ASSIGN_OR_RETURN(auto r, Lock(dir, o));
  STRATA_RETURN_IF_ERROR(r->Load());
  if (!r->read_only_) STRATA_RETURN_IF_ERROR(r->CleanUp());
  return r;
}

Result<std::unique_ptr<Repository>> Repository::OpenForRepair(const std::string& dir, const RepositoryOptions& o) {
  RepositoryOptions w = o;
  w.read_only = false;
  return Lock(dir, w);
}

Status Repository::LoadCatalog() {
  entries_.clear();
  pending_.clear();
  Status s = Load();
  if (!s.ok()) {
    entries_.clear();
    pending_.clear();
  }
  return s;
}

Repository::~Repository() = default;

Status Repository::CheckWritable() const {
  if (read_only_) return Status::InvalidArgument(dir_ + ": repository opened read-only");
  return Status::Ok();
}

bool Repository::IsCatalogTemporary(const std::string& n) {
  if (n.rfind("catalog.tmp.", 0) == 0) return true;
  const std::string prefix = "catalog.replaced-";
  if (n.rfind(prefix, 0) != 0) return false;
  size_t i = prefix.size();
  while (i < n.size() && n[i] >= '0' && n[i] <= '9') ++i;
  return i > prefix.size() && n.compare(i, 5, ".tmp.") == 0;
}

// What an interrupted process left, removed by the next writer (which holds
// the lock alone): temporaries, and archives of backups that were pending
// (never acknowledged). A pending removal stays: CompletePending finishes it.
Status Repository::CleanUp() {
  auto names = env_->ListDir(dir_ + "/archives");
  if (!names) return names.error();
  for (const std::string& n : *names) {
    if (n.find(".partial.") != std::string::npos) {
      STRATA_RETURN_IF_ERROR(env_->Remove(dir_ + "/archives/" + n));
      notes_.push_back("removed " + n + ", left by an interrupted backup");
    }
  }
  if (auto top = env_->ListDir(dir_)) {
    for (const std::string& n : *top) {
      if (IsCatalogTemporary(n)) {
        STRATA_RETURN_IF_ERROR(env_->Remove(dir_ + "/" + n));
        notes_.push_back("removed " + n + ", left by an interrupted catalog update");
      }
    }
  }
  bool changed = false;
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->kind != PendingOp::Kind::kBackup) {
      ++it;
      continue;
    }
    const std::string path = ArchivePath(it->id);
    if (env_->Exists(path)) {
      STRATA_RETURN_IF_ERROR(env_->Remove(path));
      notes_.push_back("removed archive " + IdToHex(it->id) + " of a backup that was interrupted before it was recorded");
    }
    it = pending_.erase(it);
    changed = true;
  }
  if (changed) {
    STRATA_RETURN_IF_ERROR(env_->SyncDir(dir_ + "/archives"));
    STRATA_RETURN_IF_ERROR(Save());
  }
  return Status::Ok();
}

Status Repository::Load() {
  const std::string path = dir_ + "/catalog";
  STRATA_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, env_->ReadWholeFile(path));
  std::string text(bytes.begin(), bytes.end());
  size_t trailer = text.rfind("xxh3 ");
  if (trailer == std::string::npos || text.back() != '\n') {
    return Status::Corruption(path + ": catalog truncated (no checksum line)");
  }
  std::string want = text.substr(trailer + 5, text.size() - trailer - 6);
  if (want != Hex(Xxh3_64(text.data(), trailer))) {
    return Status::Corruption(path + ": catalog checksum mismatch at byte " + Hex(trailer));
  }
  text.resize(trailer);
  std::string first = text.substr(0, text.find('\n'));
  if (first == kCatalogMagicV1) return LoadVersion1(text, path);
  if (first != kCatalogMagic) return Status::Corruption(path + ": not a strata catalog (version 2)");
  std::istringstream in(text);
  std::string line;
  size_t lineno = 0;
  while (std::getline(in, line)) {
    if (++lineno == 1) continue;
    // id, logical bytes, stored bytes, archive bytes, the archive's header
    // (hex); or "pending", the operation ("backup", "remove") and an id.
    std::vector<std::string> f;
    std::istringstream ls(line);
    std::string field;
    while (std::getline(ls, field, '\t')) f.push_back(field);
    auto bad = [&](const std::string& why) {
      return Status::Corruption(path + ": line " + std::to_string(lineno) + " malformed (" + why + ")");
    };
    if (!f.empty() && f[0] == "pending") {
      PendingOp op;
      if (f.size() != 3 || (f[1] != "backup" && f[1] != "remove")) return bad("pending operation");
      op.kind = f[1] == "backup" ? PendingOp::Kind::kBackup : PendingOp::Kind::kRemove;
      auto id = IdFromHex(f[2]);
      if (!id) return bad("pending id");
      op.id = *id;
      pending_.push_back(op);
      continue;
    }
    if (f.size() != 5) return bad("fields");
    CatalogEntry e;
    auto id = IdFromHex(f[0]);
    if (!id) return bad("id");
    if (!ParseU64(f[1], &e.logical_bytes) || !ParseU64(f[2], &e.stored_bytes) ||
        !ParseU64(f[3], &e.archive_bytes)) {
      return bad("sizes");
    }
    std::vector<uint8_t> hdr;
    if (f[4].size() % 2 != 0) return bad("header");
    for (size_t i = 0; i < f[4].size(); i += 2) {
      auto hexdig = [](char c) {
        return (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
      };
      int hi = hexdig(f[4][i]), lo = hexdig(f[4][i + 1]);
      if (hi < 0 || lo < 0) return bad("header");
      hdr.push_back(static_cast<uint8_t>(hi << 4 | lo));
    }
    uint64_t hsize = 0, hsum = 0;
    auto h = DecodeHeader(hdr, path + " line " + std::to_string(lineno), &hsize, &hsum);
    if (!h) return h.error();
    if (hsize != hdr.size() || h->id != *id) return bad("header does not match the id");
    e.header = std::move(*h);
    entries_.push_back(std::move(e));
  }
  return Status::Ok();
}

// A catalog written by strata 0.1 (archive version 1 era): tab-separated
// fields per backup. The archives' own headers are authoritative; the line
// is used where an archive cannot be opened.
Status Repository::LoadVersion1(const std::string& text, const std::string& path) {
  std::istringstream in(text);
  std::string line;
  size_t lineno = 0;
  while (std::getline(in, line)) {
    if (++lineno == 1) continue;
    std::vector<std::string> f;
    std::istringstream ls(line);
    std::string field;
    while (std::getline(ls, field, '\t')) f.push_back(field);
    auto bad = [&] { return Status::Corruption(path + ": line " + std::to_string(lineno) + " malformed"); };
    if (f.size() != 9) return bad();
    CatalogEntry e;
    ArchiveHeader& h = e.header;
    h.version = 1;
    auto id = IdFromHex(f[0]);
    if (!id) return bad();
    h.id = *id;
    if (f[1] != "-") {
      auto p = IdFromHex(f[1]);
      if (!p) return bad();
      h.parent_id = *p;
    }
    uint64_t src = 0, shift = 0;
    if (!ParseU64(f[2], &h.created_unix_ns) || !ParseU64(f[3], &src) || src > 5 ||
        !Unescape(f[4], &h.source_name) || !ParseU64(f[5], &h.disk_size) ||
        !ParseU64(f[6], &shift) || shift > 63 || !ParseU64(f[7], &e.logical_bytes) ||
        !ParseU64(f[8], &e.archive_bytes)) {
      return bad();
    }
    h.source = static_cast<SourceKind>(src);
    h.granularity_shift = static_cast<uint32_t>(shift);
    h.content_unix_ns = h.created_unix_ns;
    if (auto r = ArchiveReader::Open(ArchivePath(h.id), env_); r && (*r)->header().id == h.id) {
      e = EntryFor(**r);
    }
    entries_.push_back(std::move(e));
  }
  return Status::Ok();
}

Status Repository::Save() const {
  std::string text = std::string(kCatalogMagic) + "\n";
  for (const CatalogEntry& e : entries_) {
    std::string hdr = EncodeHeader(e.header);
    std::string hex;
    hex.reserve(hdr.size() * 2);
    static const char* d = "0123456789abcdef";
    for (unsigned char c : hdr) {
      hex += d[c >> 4];
      hex += d[c & 15];
    }
    text += IdToHex(e.id()) + "\t" + std::to_string(e.logical_bytes) + "\t" +
            std::to_string(e.stored_bytes) + "\t" + std::to_string(e.archive_bytes) + "\t" + hex +
            "\n";
  }
  for (const PendingOp& op : pending_) {
    text += std::string("pending\t") + (op.kind == PendingOp::Kind::kBackup ? "backup" : "remove") + "\t" +
            IdToHex(op.id) + "\n";
  }
  text += "xxh3 " + Hex(Xxh3_64(text.data(), text.size())) + "\n";
  return env_->WriteFileAtomic(dir_ + "/catalog",
                               {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

const CatalogEntry* Repository::Latest(const Id128* disk) const {
  const CatalogEntry* best = nullptr;
  for (const CatalogEntry& e : entries_) {
    if (disk && e.header.disk_id != *disk) continue;
    if (!best || e.header.content_unix_ns >= best->header.content_unix_ns) best = &e;
  }
  return best;
}

std::vector<const CatalogEntry*> Repository::EndingAt(const Id128& disk, const ChainPoint& p) const {
  std::vector<const CatalogEntry*> v;
  if (p.is_none()) return v;
  for (const CatalogEntry& e : entries_) {
    if (e.header.version >= 2 && e.header.disk_id == disk && e.header.end == p) v.push_back(&e);
  }
  std::stable_sort(v.begin(), v.end(), [](const CatalogEntry* a, const CatalogEntry* b) {
    return a->header.content_unix_ns > b->header.content_unix_ns;
  });
  return v;
}

std::vector<DiskInfo> Repository::Disks() const {
  std::vector<DiskInfo> disks;
  for (const CatalogEntry& e : entries_) {
    const ArchiveHeader& h = e.header;
    auto it = std::find_if(disks.begin(), disks.end(), [&](const DiskInfo& d) { return d.id == h.disk_id; });
    if (it == disks.end()) {
      disks.push_back({});
      it = disks.end() - 1;
      it->id = h.disk_id;
    }
    ++it->backups;
    if (it->backups == 1 || h.content_unix_ns >= it->newest_content_unix_ns) {
      it->name = h.disk_name;
      it->size = h.disk_size;
      it->newest_content_unix_ns = h.content_unix_ns;
      if (h.disk_format != DiskFormat::kUnknown) it->format = h.disk_format;
    }
  }
  return disks;
}

Result<DiskInfo> Repository::DiskNamed(const std::string& name) const {
  for (const DiskInfo& d : Disks()) {
    if (!IsNullId128(d.id) && d.name == name) return d;
  }
  return Status::NotFound(dir_ + ": no disk named " + name);
}

Result<const CatalogEntry*> Repository::Find(const std::string& which, const Id128* disk) const {
  if (which == "latest") {
    const CatalogEntry* e = Latest(disk);
    if (!e) {
      return Status::NotFound(dir_ + (disk ? ": no backups of that disk" : ": repository holds no backups"));
    }
    return e;
  }
  if (entries_.empty()) return Status::NotFound(dir_ + ": repository holds no backups");
  if (which.size() < 4) return Status::InvalidArgument("backup id '" + which + "' is too short");
  const CatalogEntry* found = nullptr;
  for (const CatalogEntry& e : entries_) {
    if (disk && e.header.disk_id != *disk) continue;
    if (IdToHex(e.id()).compare(0, which.size(), which) == 0) {
      if (found) return Status::InvalidArgument("backup id '" + which + "' is ambiguous");
      found = &e;
    }
  }
  if (!found) return Status::NotFound(dir_ + ": no backup " + which + (disk ? " of that disk" : ""));
  return found;
}

std::string Repository::ArchivePath(const ArchiveId& id) const {
  return dir_ + "/archives/" + IdToHex(id) + ".sar";
}

std::vector<const CatalogEntry*> Repository::Children(const ArchiveId& id) const {
  std::vector<const CatalogEntry*> v;
  for (const CatalogEntry& e : entries_) {
    if (e.parent() == id) v.push_back(&e);
  }
  return v;
}

Result<std::vector<std::unique_ptr<ArchiveReader>>> Repository::OpenChain(const ArchiveId& id) const {
  std::vector<std::unique_ptr<ArchiveReader>> chain;
  ArchiveId cur = id;
  for (size_t depth = 0;; ++depth) {
    if (depth > entries_.size()) return Status::Corruption(dir_ + "/catalog: parent loop");
    STRATA_ASSIGN_OR_RETURN(auto r, ArchiveReader::Open(ArchivePath(cur), env_));
    if (r->header().id != cur) {
      return Status::Corruption(r->path() + ": holds backup " + IdToHex(r->header().id));
    }
    bool full = r->header().is_full();
    cur = r->header().parent_id;
    chain.push_back(std::move(r));
    if (full) break;
  }
  return chain;
}

// Every catalog change below is one atomic catalog write. A failed write
// may still have reached the disk (its directory sync failed after the
// rename): the in-memory state is only rolled back when the write failed
// before taking effect, and otherwise the error is reported with the new
// catalog in place; nothing is deleted on the strength of a failed update.

Status Repository::Begin(const PendingOp& op) {
  STRATA_RETURN_IF_ERROR(CheckWritable());
  pending_.push_back(op);
  Status s = Save();
  if (!s.ok()) pending_.pop_back();
  return s;
}

Status Repository::Add(const CatalogEntry& e) {
  STRATA_RETURN_IF_ERROR(CheckWritable());
  const std::vector<PendingOp> before = pending_;
  entries_.push_back(e);
  pending_.erase(std::remove(pending_.begin(), pending_.end(), PendingOp{PendingOp::Kind::kBackup, e.id()}),
                 pending_.end());
  Status s = Save();
  if (!s.ok()) {
    entries_.pop_back();
    pending_ = before;
  }
  return s;
}

Status Repository::Abandon(const ArchiveId& id) {
  STRATA_RETURN_IF_ERROR(CheckWritable());
  const std::string path = ArchivePath(id);
  if (env_->Exists(path)) {
    STRATA_RETURN_IF_ERROR(env_->Remove(path));
    STRATA_RETURN_IF_ERROR(env_->SyncDirOf(path));
  }
  const std::vector<PendingOp> before = pending_;
  pending_.erase(std::remove(pending_.begin(), pending_.end(), PendingOp{PendingOp::Kind::kBackup, id}),
                 pending_.end());
  if (pending_ == before) return Status::Ok();
  Status s = Save();
  if (!s.ok()) pending_ = before;
  return s;
}

Status Repository::Replace(const CatalogEntry& e) {
  STRATA_RETURN_IF_ERROR(CheckWritable());
  for (CatalogEntry& x : entries_) {
    if (x.id() == e.id()) {
      CatalogEntry old = x;
      x = e;
      Status s = Save();
      if (!s.ok()) x = old;
      return s;
    }
  }
  return Status::NotFound(dir_ + ": no backup " + IdToHex(e.id()));
}

Status Repository::Remove(const ArchiveId& id) {
  STRATA_RETURN_IF_ERROR(CheckWritable());
  const PendingOp op{PendingOp::Kind::kRemove, id};
  const bool journaled = std::find(pending_.begin(), pending_.end(), op) != pending_.end();
  auto it = std::find_if(entries_.begin(), entries_.end(), [&](const CatalogEntry& e) { return e.id() == id; });
  if (it == entries_.end() && !journaled) return Status::NotFound(dir_ + ": no backup " + IdToHex(id));
  if (it != entries_.end()) {
    // 1. The catalog stops naming the backup. Its journal line stays until
    // the file is gone: a crash before that leaves a removal the next writer
    // finishes (below), not an orphan that `repair` would adopt again.
    const std::vector<CatalogEntry> entries_before = entries_;
    const std::vector<PendingOp> pending_before = pending_;
    entries_.erase(it);
    if (!journaled) pending_.push_back(op);
    Status s = Save();
    if (!s.ok()) {
      entries_ = entries_before;
      pending_ = pending_before;
      return s;
    }
  }
  // 2. The file (already gone when an interrupted removal is finished).
  const std::string path = ArchivePath(id);
  Status rm = env_->Remove(path);
  if (!rm.ok() && rm.code() != StatusCode::kNotFound) return rm;
  STRATA_RETURN_IF_ERROR(env_->SyncDirOf(path));
  // 3. The journal line.
  const std::vector<PendingOp> pending_before = pending_;
  pending_.erase(std::remove(pending_.begin(), pending_.end(), op), pending_.end());
  Status s = Save();
  if (!s.ok()) pending_ = pending_before;
  return s;
}

Status Repository::Rewrite(std::vector<CatalogEntry> entries) {
  STRATA_RETURN_IF_ERROR(CheckWritable());
  std::swap(entries_, entries);
  std::vector<PendingOp> before;
  std::swap(pending_, before);
  Status s = Save();
  if (!s.ok()) {
    std::swap(entries_, entries);
    std::swap(pending_, before);
  }
  return s;
}

Result<std::vector<std::string>> Repository::Orphans() const {
  STRATA_ASSIGN_OR_RETURN(std::vector<std::string> names, env_->ListDir(dir_ + "/archives"));
  std::vector<std::string> out;
  for (const std::string& n : names) {
    if (n.size() != 36 || n.compare(32, 4, ".sar") != 0) continue;
    auto id = IdFromHex(n.substr(0, 32));
    if (!id) continue;
    bool named = std::any_of(entries_.begin(), entries_.end(), [&](const CatalogEntry& e) { return e.id() == *id; });
    bool pending = std::any_of(pending_.begin(), pending_.end(), [&](const PendingOp& p) { return p.id == *id; });
    if (!named && !pending) out.push_back(dir_ + "/archives/" + n);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace strata
