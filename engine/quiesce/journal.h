// The freeze journal: every filesystem a process is about to freeze is
// written down, durably, before the freeze, so that a process killed at any
// point (SIGKILL, OOM) leaves a record of what it may have left frozen.
// Format: docs/formats/quiesce-journal.md (version 2).
//
// A Coordinator with Options::journal_dir set keeps one FreezeJournal: a
// file <dir>/journal-<pid>-<nonce> that exists while the process holds (or
// is freezing) something, flock()ed by it for as long as it is open. A
// record is one line padded to whole 512-byte sectors: "F" before a freeze
// ("freeze intent"), "T" after the thaw; the header sector, rewritten in
// place, commits them, so a record that was committed is never mistaken for
// one that was cut short. RecoverJournals() (`strata thaw --all`) takes the flock of every
// journal whose owner is gone, thaws what its F records name without a T,
// after checking that the mount point still holds the same filesystem
// (device number), appends the T records and removes the file.
#ifndef STRATA_ENGINE_QUIESCE_JOURNAL_H_
#define STRATA_ENGINE_QUIESCE_JOURNAL_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "strata/status.h"

namespace strata::quiesce {

// One frozen (or about to be frozen) filesystem.
struct JournalEntry {
  std::string backend;  // "fifreeze" or "qga"
  std::string target;   // qga: the agent's socket; "" for fifreeze
  uint32_t major = 0, minor = 0;
  std::string mount_point;
  // Identity: backend, target and device (the mount point is informative).
  std::string Key() const;
  bool operator==(const JournalEntry&) const = default;
};

// ---- pure codec (docs/formats/quiesce-journal.md) ---------------------------

// Record number `seq` (1, 2, ...), one line padded with zeros to whole
// 512-byte sectors. kind: 'F' (freeze intent) or 'T' (thawed).
std::string EncodeJournalRecord(char kind, const JournalEntry& entry, uint64_t seq);
// The header sector: owner pid, the boot it was written in, and the
// committed end (bytes of the file that hold committed records, header
// included; a multiple of 512).
std::string EncodeJournalHeader(int64_t pid, std::string_view boot_id, uint64_t committed_end);
// /proc/sys/kernel/random/boot_id ("" if unreadable).
std::string CurrentBootId();

struct JournalContents {
  int version = 0;
  int64_t pid = 0;                       // from the header
  std::string boot_id;                   // version 2: the boot it was written in
  uint64_t committed_bytes = 0;          // version 2: the header's committed end
  uint64_t records = 0;                  // version 2: committed records read
  std::vector<JournalEntry> outstanding;  // F records without a later T, in F order
  // Damage: committed records that are missing (the file is shorter than
  // the header's committed end), fail their checksum or do not parse. What
  // they named is unknown, so the journal must not be removed.
  std::vector<std::string> bad_lines;  // "<name>: byte N: <problem>"
  bool torn_tail = false;  // version 1 only: last line without '\n', ignored
};
// Parses a whole journal. Only a missing or unreadable header is an error
// (kCorruption naming the file and byte offset); damage after it is listed.
Result<JournalContents> ParseJournal(std::string_view text, const std::string& name);

// ---- the writer -------------------------------------------------------------

// Thread safe. The file is created on the first Intend and removed once every
// F has its T.
class FreezeJournal {
 public:
  explicit FreezeJournal(std::string dir) : dir_(std::move(dir)) {}
  // Closes the file (releasing the flock); removes it if nothing is
  // outstanding, else leaves it for RecoverJournals.
  ~FreezeJournal();
  FreezeJournal(const FreezeJournal&) = delete;
  FreezeJournal& operator=(const FreezeJournal&) = delete;

  // Appends one F record per entry and fdatasync()s before returning: call
  // it before freezing. Creates the journal file first if needed (written
  // under a temporary name, flocked, synced, then renamed into place, so
  // recovery never sees a journal without its owner's lock).
  Status Intend(const std::vector<JournalEntry>& entries);
  // Appends T records (fdatasync). Removes the file when nothing is left.
  Status Thawed(const std::vector<JournalEntry>& entries);

  // The current file ("" when none).
  std::string path() const;

 private:
  Status CreateLocked();
  Status AppendLocked(char kind, const std::vector<JournalEntry>& entries);

  const std::string dir_;
  mutable std::mutex mu_;
  int fd_ = -1;
  std::string path_;
  std::string boot_id_;
  uint64_t end_ = 0;  // committed end
  uint64_t seq_ = 0;  // records committed
  std::vector<JournalEntry> outstanding_;
};

// ---- recovery ---------------------------------------------------------------

struct RecoveryReport {
  // Mount points that were frozen and are thawed now.
  std::vector<std::string> thawed;
  // Named by a journal but not frozen: the owner died between the journal
  // write and the freeze, or someone thawed it since.
  std::vector<std::string> not_frozen;
  // Could not be recovered, with the reason (a different filesystem at the
  // journaled mount point, an unreachable agent, a bad journal line, ...).
  // Their journals are kept.
  std::vector<std::string> failed;
  // Journals whose owner still runs (its flock is held): left alone.
  std::vector<std::string> live;
};

// Recovers every journal in `dir` that no live process holds. A journal
// written before the last reboot names nothing frozen and is removed; a
// damaged one (unreadable header, committed records missing or bad) is kept
// and its damage listed under `failed`, with what could be read recovered. A fifreeze
// entry is thawed (FITHAW) only when the mount point's st_dev is the
// journaled device; if the mount point now holds another filesystem, the
// device's own mount (from `mountinfo_path`) is used, else the entry fails.
// A qga entry sends guest-fsfreeze-thaw to the journaled socket.
Result<RecoveryReport> RecoverJournals(const std::string& dir,
                                       const std::string& mountinfo_path = "/proc/self/mountinfo");

// Outstanding entries of the journals in `dir` that no live process holds
// (what `strata status` shows as left frozen), and the damage found in them
// (a damaged journal may name frozen filesystems nobody can see).
// Journals written before the last reboot name nothing frozen: skipped.
struct StaleJournals {
  std::vector<JournalEntry> entries;
  std::vector<std::string> damaged;
};
Result<StaleJournals> StaleJournalEntries(const std::string& dir);

}  // namespace strata::quiesce

#endif  // STRATA_ENGINE_QUIESCE_JOURNAL_H_
