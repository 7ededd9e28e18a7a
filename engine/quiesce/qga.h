// A client for the QEMU guest agent's JSON protocol over a unix socket
// (qemu-ga -m unix-listen on the host, or the host end of a virtio-serial
// chardev), and a quiesce Backend built on it.
//
// Every operation opens a connection and synchronises with
// guest-sync-delimited: the client sends a 0xFF byte (resets the agent's
// parser), then {"execute":"guest-sync-delimited","arguments":{"id":N}}; the
// agent answers 0xFF followed by {"return":N}. Bytes before the 0xFF and
// replies with another id (stale output of an earlier client) are skipped.
// Replies are parsed with nlohmann-json.
//
// Every call is bounded in time as a whole: a slow or hostile agent (one that
// answers guest-sync with an endless trickle of stale replies, say) makes a
// call fail with kBusy when its time is up, never later.
//
// Thread safety: none; one client per thread.
#ifndef STRATA_ENGINE_QUIESCE_QGA_H_
#define STRATA_ENGINE_QUIESCE_QGA_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "strata/quiesce.h"
#include "strata/status.h"

namespace strata::quiesce {

class QgaClient {
 public:
  // Connects and synchronises. The whole call takes at most `timeout`, and
  // ends by `deadline` if that comes first. kIoError if the socket cannot be
  // reached, kBusy when the time is up, kCorruption for a malformed reply.
  static Result<std::unique_ptr<QgaClient>> Connect(
      const std::string& socket_path, std::chrono::milliseconds timeout,
      Clock::time_point deadline = Clock::time_point::max());
  ~QgaClient();
  QgaClient(const QgaClient&) = delete;
  QgaClient& operator=(const QgaClient&) = delete;

  // Each call below waits at most the client's timeout for its reply, and
  // never past the deadline given to Connect.
  // guest-fsfreeze-freeze-list: returns how many filesystems were frozen.
  // kInvalidArgument for a mount point that is not valid UTF-8 (JSON cannot
  // carry it), before anything is sent.
  Result<int64_t> FreezeList(const std::vector<std::string>& mount_points);
  // guest-fsfreeze-thaw (thaws everything the agent froze): count thawed.
  Result<int64_t> Thaw();
  // guest-fsfreeze-status: "thawed" or "frozen".
  Result<std::string> FreezeStatus();

  // Connects and sends 0xFF, guest-sync-delimited and guest-fsfreeze-thaw in
  // one write, so the agent receives the thaw at once even when it stalls
  // the sync reply; then waits (at most `timeout` in all) for the sync reply
  // and the thaw's. Returns how many filesystems the agent thawed. Errors
  // after the write say that the thaw was sent but not confirmed.
  static Result<int64_t> SyncAndThaw(const std::string& socket_path,
                                     std::chrono::milliseconds timeout);

 private:
  struct Impl;
  explicit QgaClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Backend over qemu-ga. The agent holds one frozen set at a time and its
// thaw thaws everything, so: Freeze while the agent already holds a set is
// kUnsupported, and CanThawPart() is false (the Coordinator thaws the whole
// set and freezes the rest again, and reports the gap in the handles that
// held the rest). Freeze is bounded by its deadline; when the freeze command
// was sent but its reply did not come in time (or froze fewer filesystems
// than asked), the backend sends guest-fsfreeze-thaw before returning the
// error. Thaw uses SyncAndThaw. `timeout` bounds every call. Thread safe:
// calls are serialised inside.
std::unique_ptr<Backend> MakeQgaBackend(const std::string& socket_path,
                                        std::chrono::milliseconds timeout);

}  // namespace strata::quiesce

#endif  // STRATA_ENGINE_QUIESCE_QGA_H_
