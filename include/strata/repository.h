// A repository: a directory of archives plus a catalog
// (docs/formats/archive.md §7).
//
//   REPO/strata-repository   marker and format version
//   REPO/archives/ID.sar     one archive per backup
//   REPO/catalog             every backup, oldest first, the operations in
//                            progress, and an XXH3 trailer
//   REPO/lock                locked for the life of a Repository object:
//                            shared by readers, exclusive by writers
//
// All I/O goes through an Env. Every change is journaled in the catalog,
// which is replaced atomically: a backup is recorded as pending before its
// archive takes its final name and committed after; a removal is recorded
// before any child is rewritten. Opening for writing completes or rolls
// back what an interrupted process left: a pending backup's archive is
// removed (it was never acknowledged), temporaries are removed, and a
// pending removal is finished by CompletePending (jobs.h) before anything
// else is written.
//
// A repository holds backups of any number of disks. Each backup's header
// names its disk (a random id given at the disk's first backup, plus a
// name) and its start and end points; the catalog keeps a copy of every
// header so lookups need not open archives.
#ifndef STRATA_REPOSITORY_H_
#define STRATA_REPOSITORY_H_

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "strata/archive.h"

namespace strata {

struct CatalogEntry {
  ArchiveHeader header;        // a copy of the archive's header
  uint64_t logical_bytes = 0;  // guest bytes the backup defines
  uint64_t stored_bytes = 0;   // compressed payload (zstd frames)
  uint64_t archive_bytes = 0;  // archive file size

  const ArchiveId& id() const { return header.id; }
  const ArchiveId& parent() const { return header.parent_id; }
};

// One disk of a repository, summarised from its backups.
struct DiskInfo {
  Id128 id{};
  std::string name;            // as of its newest backup
  DiskFormat format = DiskFormat::kUnknown;
  uint64_t size = 0;           // as of its newest backup
  size_t backups = 0;
  uint64_t newest_content_unix_ns = 0;
};

struct RepositoryOptions {
  Env* env = nullptr;  // null: the local file system
  // Readers (list, info, restore, verify) share the lock; a writer holds it
  // alone. A read-only repository cannot be changed and cleans nothing up.
  bool read_only = false;
  // How long to wait for a conflicting holder of the lock (0: fail at once
  // with kBusy).
  std::chrono::milliseconds lock_wait{0};
};

// An operation in progress, journaled in the catalog.
struct PendingOp {
  enum class Kind { kBackup, kRemove };
  Kind kind = Kind::kBackup;
  ArchiveId id{};  // the backup being added, or the one being removed
  bool operator==(const PendingOp&) const = default;
};

class Repository {
 public:
  // Creates an empty repository (under its lock); kAlreadyExists if DIR
  // holds one.
  static Status Init(const std::string& dir, Env* env = nullptr);
  // Opens and locks a repository. Writers also remove leftovers: archives of
  // pending backups (never acknowledged) and temporaries.
  static Result<std::unique_ptr<Repository>> Open(const std::string& dir,
                                                   const RepositoryOptions& options = {});
  // For `strata repair`: locks (exclusively) without reading the catalog;
  // LoadCatalog then says whether the catalog can be read.
  static Result<std::unique_ptr<Repository>> OpenForRepair(const std::string& dir,
                                                           const RepositoryOptions& options = {});
  Status LoadCatalog();
  ~Repository();

  const std::string& dir() const { return dir_; }
  Env* env() const { return env_; }
  bool read_only() const { return read_only_; }
  // What opening found and cleaned up, one line each.
  const std::vector<std::string>& recovery_notes() const { return notes_; }
  const std::vector<PendingOp>& pending() const { return pending_; }
  const std::vector<CatalogEntry>& entries() const { return entries_; }
  // "latest" (the backup whose content is newest: a synthetic full of an old
  // backup is as old as that backup), a full id, or a unique prefix of at
  // least 4 hex digits. With `disk`, only that disk's backups are candidates.
  Result<const CatalogEntry*> Find(const std::string& which, const Id128* disk = nullptr) const;
  // The backup with the newest content (of `disk`, when given); null if none.
  const CatalogEntry* Latest(const Id128* disk = nullptr) const;
  // Backups of `disk` whose end point is `p`, newest content first.
  std::vector<const CatalogEntry*> EndingAt(const Id128& disk, const ChainPoint& p) const;
  // Every disk, in order of first appearance.
  std::vector<DiskInfo> Disks() const;
  // The disk whose newest backup carries `name`; kNotFound if none.
  Result<DiskInfo> DiskNamed(const std::string& name) const;

  std::string ArchivePath(const ArchiveId& id) const;
  // Opens the chain ending at `id`: newest first, down to its full backup.
  Result<std::vector<std::unique_ptr<ArchiveReader>>> OpenChain(const ArchiveId& id) const;
  // Backups whose parent is `id`.
  std::vector<const CatalogEntry*> Children(const ArchiveId& id) const;

  // Journals `op` (atomically) before the operation touches any archive.
  Status Begin(const PendingOp& op);
  // Adds a finished archive to the catalog and ends its pending backup, in
  // one atomic catalog update.
  Status Add(const CatalogEntry& e);
  // Ends a pending backup that failed: its archive (if any) is removed.
  Status Abandon(const ArchiveId& id);
  // Replaces the entry with e.id (atomically).
  Status Replace(const CatalogEntry& e);
  // Removes an entry from the catalog (keeping a journaled removal of it),
  // then its archive file, then the journal line. Also finishes a journaled
  // removal whose entry is already gone (a crash between those steps).
  Status Remove(const ArchiveId& id);
  // Replaces the whole catalog (strata repair); no operation stays pending.
  Status Rewrite(std::vector<CatalogEntry> entries);

  // Names in archives/ that look like archives (ID.sar) but no entry names.
  Result<std::vector<std::string>> Orphans() const;

  // Whether `name`, in the repository's top directory, is a temporary of an
  // atomic catalog write that a killed process left: "catalog.tmp.*" (a
  // catalog update) or "catalog.replaced-<seconds>.tmp.*" (the copy of the
  // old catalog `strata repair --apply` keeps).
  static bool IsCatalogTemporary(const std::string& name);

  static CatalogEntry EntryFor(const ArchiveReader& a);

 private:
  Repository() = default;
  static Result<std::unique_ptr<Repository>> Lock(const std::string& dir, const RepositoryOptions& options);
  Status Load();
  Status LoadVersion1(const std::string& text, const std::string& path);
  Status Save() const;
  Status CleanUp();
  Status CheckWritable() const;

  std::string dir_;
  Env* env_ = nullptr;
  bool read_only_ = false;
  std::unique_ptr<FileLock> lock_;
  std::vector<CatalogEntry> entries_;
  std::vector<PendingOp> pending_;
  std::vector<std::string> notes_;
};

}  // namespace strata

#endif  // STRATA_REPOSITORY_H_
