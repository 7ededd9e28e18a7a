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
#ifndef STRATA_ENGINE_BACKUP_REPOSITORY_H_
#define STRATA_ENGINE_BACKUP_REPOSITORY_H_

#include <memory>
#include <string>
#include <vector>

#include "engine/backup/archive.h"

namespace strata {

struct CatalogEntry {
  ArchiveId id{};
  ArchiveId parent{};
  uint64_t created_unix_ns = 0;
  SourceKind source = SourceKind::kFull;
  std::string source_name;
  uint64_t disk_size = 0;
  uint32_t granularity_shift = 16;
  uint64_t logical_bytes = 0;  // guest bytes the backup defines
  uint64_t stored_bytes = 0;   // archive file size
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
  // "latest", a full id, or a unique prefix of at least 4 hex digits.
  Result<const CatalogEntry*> Find(const std::string& which) const;
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
  Status Save() const;

  std::string dir_;
  int lock_fd_ = -1;
  std::vector<CatalogEntry> entries_;
};

}  // namespace strata

#endif  // STRATA_ENGINE_BACKUP_REPOSITORY_H_
