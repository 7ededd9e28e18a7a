// Env: the one seam between strata's persistent state (repositories,
// archives, catalogs, tracker state) and storage (LevelDB's Env; STYLE §4,
// shared/ARCHITECTURE.md). Files, directories, atomic publish, locks and
// syncs go through it, so a test can run the same code over FaultEnv, which
// simulates a power cut by dropping every write and directory entry that was
// not made durable.
//
// Durability rules every caller relies on (and FaultEnv enforces):
//  * a file's bytes are durable once File::Sync returned after they were
//    written;
//  * a name (a created file or directory, a rename, a removal) is durable once
//    SyncDir of the directory holding it returned.
// Files and directories this Env creates are private: 0600 and 0700 (a
// backup holds a whole disk; restic and borg do the same).
//
// Thread safety: an Env may be used from several threads at once.
#ifndef STRATA_ENV_H_
#define STRATA_ENV_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "strata/status.h"
#include "strata/file.h"

namespace strata {

// Holds a lock until destroyed.
class FileLock {
 public:
  virtual ~FileLock() = default;
};

enum class LockMode { kShared, kExclusive };

class Env {
 public:
  virtual ~Env() = default;
  // The local file system (POSIX calls). Never null; not owned.
  static Env* Default();

  // Opens (or creates, 0600) a file. kAlreadyExists for kCreateExclusive on
  // an existing name, kNotFound when it must exist and does not.
  virtual Result<std::unique_ptr<File>> Open(const std::string& path, OpenMode mode,
                                             bool direct = false) = 0;
  // Renames `from` to `to`, replacing `to` atomically if it exists.
  virtual Status Rename(const std::string& from, const std::string& to) = 0;
  // Removes a file (kNotFound if absent).
  virtual Status Remove(const std::string& path) = 0;
  // Creates a directory (0700); kAlreadyExists if present.
  virtual Status MakeDir(const std::string& path) = 0;
  // Removes an empty directory.
  virtual Status RemoveDir(const std::string& path) = 0;
  // Names in a directory (without "." and ".."), unsorted.
  virtual Result<std::vector<std::string>> ListDir(const std::string& dir) = 0;
  // Makes the names in `dir` durable (fsync of the directory).
  virtual Status SyncDir(const std::string& dir) = 0;
  // Whether `path` names a file or directory.
  virtual bool Exists(const std::string& path) = 0;
  // Takes a lock on `path` (created if absent), shared or exclusive, waiting
  // up to `wait` for a conflicting holder to go (zero: do not wait). kBusy
  // when the wait runs out. POSIX: open file description locks (fcntl
  // F_OFD_SETLK), which NFS turns into byte-range locks that hold across
  // hosts; they are released when the process dies.
  virtual Result<std::unique_ptr<FileLock>> Lock(const std::string& path, LockMode mode,
                                                 std::chrono::milliseconds wait) = 0;

  // Built on the calls above.
  // Writes `data` to `path` atomically: a temporary file beside it, Sync,
  // Rename, SyncDir. On failure before the rename the temporary is removed
  // and `path` is untouched. A failure of the final SyncDir is reported with
  // the new contents in place (the caller must not remove what it names).
  Status WriteFileAtomic(const std::string& path, std::span<const uint8_t> data);
  Result<std::vector<uint8_t>> ReadWholeFile(const std::string& path);
  // SyncDir of the directory holding `path`.
  Status SyncDirOf(const std::string& path);
};

// The directory part of `path` ("." when there is none).
std::string DirName(const std::string& path);

// An in-memory file system that models power loss (for crash tests).
//
// Every file has its current bytes and its durable bytes (those at its last
// Sync); every directory has its current names and its durable names (those
// at its last SyncDir). PowerCut() keeps only durable state; after it, the
// Env works again on what survived (a "reboot"). Cut points: with
// CutAfter(n), the n-th mutating call (write, sync, truncate, create,
// rename, remove, mkdir, syncdir, counting from 1) and every later call fail
// with EIO, as if the machine lost power there; the test then calls
// PowerCut() and re-opens.
class FaultEnv : public Env {
 public:
  FaultEnv();
  ~FaultEnv() override;

  Result<std::unique_ptr<File>> Open(const std::string& path, OpenMode mode, bool direct = false) override;
  Status Rename(const std::string& from, const std::string& to) override;
  Status Remove(const std::string& path) override;
  Status MakeDir(const std::string& path) override;
  Status RemoveDir(const std::string& path) override;
  Result<std::vector<std::string>> ListDir(const std::string& dir) override;
  Status SyncDir(const std::string& dir) override;
  bool Exists(const std::string& path) override;
  Result<std::unique_ptr<FileLock>> Lock(const std::string& path, LockMode mode,
                                         std::chrono::milliseconds wait) override;

  // 0: never cut. Mutating calls made so far: MutatingCalls().
  void CutAfter(uint64_t n);
  uint64_t MutatingCalls() const;
  bool cut() const;
  // How a power cut treats what was not made durable: kStrict drops all of
  // it; kKeepNames keeps names not yet durable (directory entries may reach
  // the disk before their directory's fsync) but drops unsynced bytes;
  // kKeepBytes keeps unsynced bytes but drops names not yet durable.
  enum class CutMode { kStrict, kKeepNames, kKeepBytes };
  void PowerCut(CutMode mode = CutMode::kStrict);

  // Test access: the current bytes of a file (kNotFound if absent).
  Result<std::vector<uint8_t>> Contents(const std::string& path);

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace strata

#endif  // STRATA_ENV_H_
