// Tracker: dirty-block tracking for one disk, with named checkpoints,
// persistent generations and crash safety. This is strata's public API for
// hypervisors and storage daemons (call Mark on every guest write) and for
// backup software (ask ChangedSince / ChangedBetween).
//
// Generations. Between two checkpoints the marked blocks form a generation.
// Checkpoint(name) seals the active generation and starts a new one.
// ChangedSince(X) is the union of the generations after X plus the active
// one; ChangedBetween(X, Y) is the union of the generations after X up to
// and including Y's. Both cost O(dirty runs x generations), independent of
// the disk size. Remove(X) merges X's generation into the next one (the
// active generation when X is the newest), so every remaining query answers
// exactly as before.
//
// THE CONSISTENCY CONTRACT (between Mark and Checkpoint):
//  * a Mark that returned before Checkpoint(X) began is in a generation at
//    or before X (so ChangedSince(X) need not contain it);
//  * a Mark that began after Checkpoint(X) returned is in a generation
//    after X (so ChangedSince(X) contains it);
//  * a Mark racing Checkpoint(X) lands on one side or the other (or both),
//    never on neither.
// Over-reporting is allowed, under-reporting never. Mechanism: Checkpoint
// swaps the active bitmap pointer, then waits for marks still using the old
// one to drain (striped in-flight counters) before sealing it.
// docs/design/tracker.md, tests/tracker_concurrency_test.cc.
//
// Persistence and crashes (docs/formats/tracker-state.md). Sealed
// generations are written atomically with XXH3 checksums. The active
// generation is flushed on Close, on Checkpoint, on Flush and optionally on
// a periodic interval. With the intent log enabled (the default) a Mark that
// touches a coarse region (default 64 MiB) not yet recorded since the last
// flush first makes that region durable in the intent log; after an unclean
// shutdown the active generation is rebuilt as the last flushed one plus
// the intent regions, and recovery() reports the bytes this may over-report.
// Where the information is lost (unclean shutdown without intent log, a
// missing or corrupt generation file) the queries that need it return
// StatusCode::kUnknownState ("full backup or rescan needed"), never a
// silently incomplete set.
//
// Thread safety: Mark may be called from any number of threads at once and
// concurrently with every other method. The other methods serialise on an
// internal mutex. Close must not race Mark. One opener at a time may open a
// state directory read-write (an exclusive OFD lock on LOCK through Env::Lock;
// kBusy otherwise); read-only opens share a shared lock.
//
// I/O. Every file, directory listing, lock and sync goes through the Env of
// the options (include/strata/env.h; Env::Default() is the local file system), so
// tests run the same code over FaultEnv and cut the power at any call.
#ifndef STRATA_TRACKER_H_
#define STRATA_TRACKER_H_

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "strata/extent_set.h"
#include "strata/status.h"
#include "strata/units.h"
#include "strata/env.h"

namespace strata {

struct TrackerOptions {
  // Disk size in bytes (Create only; 1 .. 2^63).
  uint64_t disk_size = 0;
  // Block size of the tracked bitmap (Create only): 512 B .. 64 MiB.
  uint64_t granularity_bytes = Granularity::kDefaultBytes;
  // Crash-safety intent log (Create only). Without it an unclean shutdown
  // loses the active generation (queries then return kUnknownState).
  bool intent_log = true;
  // log2 of the intent-log region size (Create only); default 64 MiB.
  uint32_t intent_region_shift = 26;
  // Where the state directory lives (not owned; must outlive the tracker).
  Env* env = Env::Default();
};

struct OpenOptions {
  // Read-only: no file in the directory is written; Mark, Checkpoint,
  // Remove, Resize and Flush return kInvalidArgument. Takes a shared lock.
  bool read_only = false;
  // Flush the active generation every `flush_interval` from a background
  // thread (zero: only on Checkpoint, Flush and Close).
  std::chrono::milliseconds flush_interval{0};
  // Where the state directory lives (not owned; must outlive the tracker).
  Env* env = Env::Default();
};

struct CheckpointInfo {
  uint64_t id = 0;               // unique, increasing
  std::string name;              // unique among live checkpoints
  int64_t created_unix_ns = 0;   // wall clock at creation
  uint64_t changed_bytes = 0;    // bytes in the generation this checkpoint sealed
  bool generation_unknown = false;  // that generation's information was lost
  // Taken inside a freeze window that held until after the checkpoint
  // (recorded by SetQuiesced once the window's verdict is known).
  bool quiesced = false;
};

// What Open found.
struct RecoveryInfo {
  bool clean_shutdown = true;
  // Unclean shutdown repaired from the intent log: bytes added to the active
  // generation from intent regions beyond the last flushed active set (an
  // upper bound on the over-approximation).
  uint64_t intent_regions = 0;
  uint64_t added_bytes = 0;
  // The active generation is unknown (unclean shutdown without intent log,
  // or a corrupt active/intent file).
  bool active_unknown = false;
  // One line per problem found ("<file>: ..."), e.g. a corrupt generation.
  std::vector<std::string> problems;
};

class Tracker {
 public:
  // Creates a new state directory (created if absent; kAlreadyExists when it
  // already holds a tracker). kInvalidArgument for bad options.
  static Result<std::unique_ptr<Tracker>> Create(const std::string& dir,
                                                 const TrackerOptions& options);
  // Opens an existing state directory and recovers after an unclean
  // shutdown. kNotFound without a MANIFEST; kCorruption naming the file for
  // a corrupt MANIFEST; kBusy when another process holds it.
  static Result<std::unique_ptr<Tracker>> Open(const std::string& dir,
                                               const OpenOptions& options = {});
  ~Tracker();  // Close() if not closed; errors are lost (call Close).
  Tracker(const Tracker&) = delete;
  Tracker& operator=(const Tracker&) = delete;

  // Records that bytes [offset, offset + length) are being written. Call it
  // before acknowledging the write. Zero length is a no-op. Errors:
  // kInvalidArgument past the disk end; kIoError/kNoSpace when the intent
  // log cannot be made durable (then the write must not be acknowledged).
  // Cost: lock-free; a few ns when the region is already recorded; one
  // batched fsync the first time a region is touched after a flush.
  Status Mark(uint64_t offset, uint64_t length);

  // kInvalidArgument unless `name` is a valid checkpoint name: 1..255 bytes,
  // no control characters. (Callers can refuse a bad name before opening.)
  static Status ValidCheckpointName(const std::string& name);

  // Seals the active generation under a new checkpoint `name` (1..255 bytes,
  // no control characters; kAlreadyExists when taken) and returns it.
  // Persists the generation and the manifest before returning.
  Result<CheckpointInfo> Checkpoint(const std::string& name);

  // Blocks changed after checkpoint `name` (including the active
  // generation). kNotFound for an unknown name; kUnknownState when a needed
  // generation was lost.
  Result<ExtentSet> ChangedSince(const std::string& name);
  // Blocks changed after `from` up to and including `to`'s generation. `from`
  // must be older than `to` (kInvalidArgument otherwise).
  Result<ExtentSet> ChangedBetween(const std::string& from, const std::string& to);

  // Removes checkpoint `name`, merging its generation into the next.
  Status Remove(const std::string& name);
  // Records whether checkpoint `name` was quiesced (taken inside a freeze
  // window). A freeze window's verdict is known only after the thaw, after
  // the checkpoint was taken, so it is a separate call. Persisted in the
  // manifest before returning (no write when unchanged). kNotFound for an
  // unknown name; kInvalidArgument when closed or read-only.
  Status SetQuiesced(const std::string& name, bool quiesced);
  // Checkpoints, oldest first.
  std::vector<CheckpointInfo> List();

  // Changes the disk size (1 .. 2^63 bytes; kInvalidArgument otherwise).
  // Growing marks the new area dirty in the active generation; shrinking
  // clips every generation. Persisted before return.
  Status Resize(uint64_t new_disk_size);

  // Persists the active generation now (and starts a new intent epoch).
  Status Flush();
  // Flushes and marks the state cleanly closed; further calls fail.
  Status Close();

  // Random identity made by Create (and, for state directories made before
  // trackers had one, at the first read-write open; all zero until then).
  // A re-created tracker has a new UUID even if it reuses checkpoint names.
  std::array<uint8_t, 16> uuid() const;
  uint64_t disk_size() const;
  Granularity granularity() const;
  const std::string& dir() const;
  bool intent_log_enabled() const;
  const RecoveryInfo& recovery() const;
  // Heap bytes of the active bitmaps (benchmarks: memory per TiB).
  size_t ActiveMemoryBytes() const;
  // Intent-log fsyncs so far (benchmarks and tests).
  uint64_t IntentSyncs() const;

  struct Impl;

 private:
  explicit Tracker(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace strata

#endif  // STRATA_TRACKER_H_
