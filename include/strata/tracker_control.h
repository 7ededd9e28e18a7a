// Sharing a tracker between the process that writes the disk (its owner)
// and the processes that checkpoint it and read its changes (backup
// software, the CLI). docs/design/filter.md.
//
// A read-write Tracker is held by one process at a time (an exclusive lock
// on DIR/LOCK). The owner may serve a control socket, DIR/control.sock,
// through TrackerControlServer; TrackerHandle::Open then reaches the
// tracker through that socket while the owner keeps marking writes, and
// opens the state directory itself (Tracker::Open, as before) when no owner
// answers. Requests are served one at a time by the owner's Tracker, so
// every guarantee of tracker.h (the consistency contract, persistence
// before a checkpoint returns) holds as for a call in the owner's process.
//
// Lock safety: only the holder of the exclusive lock starts a server (it
// replaces a stale socket file left by a killed owner: no other live owner
// can exist). A client that cannot connect (no socket file, or a stale one:
// ECONNREFUSED) opens the directory directly, which fails with kBusy while
// some process holds the lock; TrackerHandle::Open then retries the socket
// for `owner_wait` (an owner still starting up) before giving up with kBusy.
//
// Wire format (version 1, unix stream socket, mode 0600, peers of another
// uid than the owner's are refused unless root): each message is a 4-byte
// little-endian length N (at most 64 MiB) and N bytes. A request is a JSON
// object {"op": ..., ...}; the reply is a JSON object {"ok": true, ...} or
// {"ok": false, "code": <StatusCode>, "message": ...}, followed for the
// change queries by one more message holding the serialized ExtentSet
// (docs/formats/extent-set.md).
#ifndef STRATA_TRACKER_CONTROL_H_
#define STRATA_TRACKER_CONTROL_H_

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "strata/extent_set.h"
#include "strata/status.h"
#include "strata/tracker.h"
#include "strata/units.h"

namespace strata {

// DIR + "/control.sock".
std::string TrackerControlSocketPath(const std::string& dir);

struct ControlServerOptions {
  // Runs `checkpoint` (the owner's Tracker::Checkpoint for a client's
  // request) and returns its Status. An owner whose writes mark the tracker
  // before they reach the disk uses it to hold writes off meanwhile, so that
  // no write marked before the checkpoint lands on the disk after it (a
  // backup reading the disk after the checkpoint would miss it, and the next
  // generation would not hold it). Unset: the checkpoint is taken directly.
  std::function<Status(const std::function<Status()>& checkpoint)> checkpoint_guard;
};

// The owner's side. Thread safety: Start and Stop from one thread; requests
// are served from one background thread, which calls the tracker (Tracker
// methods are thread-safe).
class TrackerControlServer {
 public:
  // Binds TrackerControlSocketPath(tracker->dir()) (replacing a leftover
  // file) and serves requests until Stop. `tracker` must be open read-write
  // (checked by flushing it once: kInvalidArgument otherwise) and outlive
  // the server. Call it after any
  // fork (the serving thread does not survive one). kIoError when the
  // socket cannot be made (e.g. the path is longer than 107 bytes).
  static Result<std::unique_ptr<TrackerControlServer>> Start(Tracker* tracker,
                                                             ControlServerOptions options = {});
  ~TrackerControlServer();  // Stop()
  TrackerControlServer(const TrackerControlServer&) = delete;
  TrackerControlServer& operator=(const TrackerControlServer&) = delete;

  // Stops serving: closes the connections, joins the thread and removes the
  // socket file. Idempotent. A client in the middle of a request gets an
  // I/O error.
  void Stop();
  // Requests answered so far (tests).
  uint64_t requests() const;

  struct Impl;

 private:
  explicit TrackerControlServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct HandleOptions {
  // Open the state directory read-only when no owner answers (through an
  // owner, mutating calls are refused with kInvalidArgument too).
  bool read_only = false;
  // How long to keep trying the control socket when no owner answers but
  // the directory is locked by another process (zero: once).
  std::chrono::milliseconds owner_wait{2000};
};

// A tracker as another process sees it: through its owner's control socket
// when one answers, else opened directly. The methods mean what the
// Tracker methods of the same name mean (tracker.h). Through an owner,
// uuid/disk_size/granularity/intent_log_enabled/recovery are those the
// owner reported when the handle opened (recovery: the owner's own open).
// Thread safety: one thread at a time.
class TrackerHandle {
 public:
  static Result<std::unique_ptr<TrackerHandle>> Open(const std::string& dir, const HandleOptions& options = {});
  // Wraps a Tracker the caller holds (not owned; must outlive the handle).
  static std::unique_ptr<TrackerHandle> Borrow(Tracker* tracker);
  ~TrackerHandle();  // Close() if not closed; errors are lost
  TrackerHandle(const TrackerHandle&) = delete;
  TrackerHandle& operator=(const TrackerHandle&) = delete;

  // Whether calls go to an owner process through its control socket.
  bool via_owner() const;
  // The owner's pid (0 when opened directly).
  int64_t owner_pid() const;

  std::array<uint8_t, 16> uuid() const;
  uint64_t disk_size() const;
  Granularity granularity() const;
  const std::string& dir() const;
  bool intent_log_enabled() const;
  const RecoveryInfo& recovery() const;

  Status Mark(uint64_t offset, uint64_t length);
  Result<CheckpointInfo> Checkpoint(const std::string& name);
  Status SetQuiesced(const std::string& name, bool quiesced);
  Result<ExtentSet> ChangedSince(const std::string& name);
  Result<ExtentSet> ChangedBetween(const std::string& from, const std::string& to);
  Status Remove(const std::string& name);
  Result<std::vector<CheckpointInfo>> List();
  Status Flush();
  // Closes the tracker when this handle opened it directly; disconnects
  // from an owner (which keeps running); nothing for a borrowed tracker.
  Status Close();

  struct Impl;

 private:
  explicit TrackerHandle(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace strata

#endif  // STRATA_TRACKER_CONTROL_H_
