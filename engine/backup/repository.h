// A repository: a directory of archives plus a catalog
// (docs/formats/archive.md §7).
//
//   REPO/strata-repository   marker and format version
//   REPO/archives/ID.sar     one archive per backup
//   REPO/catalog             every backup, oldest first, with an XXH3 trailer
//   REPO/lock                flock'ed for the life of a Repository object
//
// Archives are written and renamed into place before the catalog names
// them, and the catalog is replaced atomically, so an interrupted backup
// leaves the repository exactly as before (at worst an unnamed *.partial.*
// file, which Open removes).
//
// A repository holds backups of any number of disks. Each backup's header
// names its disk (a random id given at the disk's first backup, plus a
// name) and its start and end points; the catalog keeps a copy of every
// header so lookups need not open archives.
#ifndef STRATA_ENGINE_BACKUP_REPOSITORY_H_
#define STRATA_ENGINE_BACKUP_REPOSITORY_H_

#include <memory>
#include <string>
#include <vector>

#include "engine/backup/archive.h"

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

class Repository {
 public:
  // Creates an empty repository; kAlreadyExists if DIR holds one.
  static Status Init(const std::string& dir);
  // Opens and locks (flock, exclusive) a repository.
  static Result<std::unique_ptr<Repository>> Open(const std::string& dir);
  ~Repository();

  const std::string& dir() const { return dir_; }
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

  // Adds a finished archive to the catalog (atomically).
  Status Add(const CatalogEntry& e);
  // Replaces the entry with e.id (atomically).
  Status Replace(const CatalogEntry& e);
  // Removes an entry from the catalog and then its archive file.
  Status Remove(const ArchiveId& id);

  static CatalogEntry EntryFor(const ArchiveReader& a);

 private:
  Repository() = default;
  Status Load();
  Status LoadVersion1(const std::string& text, const std::string& path);
  Status Save() const;

  std::string dir_;
  int lock_fd_ = -1;
  std::vector<CatalogEntry> entries_;
};

}  // namespace strata

#endif  // STRATA_ENGINE_BACKUP_REPOSITORY_H_
