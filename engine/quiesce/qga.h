// A client for the QEMU guest agent's JSON protocol over a unix socket
// (qemu-ga -m unix-listen on the host, or the host end of a virtio-serial
// chardev), and a quiesce Backend built on it.
//
// Every operation opens a connection and synchronises with
// guest-sync-delimited: the client sends a 0xFF byte (resets the agent's
// parser), then {"execute":"guest-sync-delimited","arguments":{"id":N}}; the
// agent answers 0xFF followed by {"return":N}. Bytes before the 0xFF and
// replies with another id (stale output of an earlier client) are skipped.
//
// Thread safety: none; one client per thread.
#ifndef STRATA_ENGINE_QUIESCE_QGA_H_
#define STRATA_ENGINE_QUIESCE_QGA_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/quiesce/quiesce.h"
#include "extents/status.h"

namespace strata::quiesce {

class QgaClient {
 public:
  // Connects and synchronises. kIoError if the socket cannot be reached,
  // kBusy on timeout, kCorruption for a malformed reply.
  static Result<std::unique_ptr<QgaClient>> Connect(const std::string& socket_path,
                                                    std::chrono::milliseconds timeout);
  ~QgaClient();

  // guest-fsfreeze-freeze-list: returns how many filesystems were frozen.
  Result<int64_t> FreezeList(const std::vector<std::string>& mount_points);
  // guest-fsfreeze-thaw (thaws everything the agent froze): count thawed.
  Result<int64_t> Thaw();
  // guest-fsfreeze-status: "thawed" or "frozen".
  Result<std::string> FreezeStatus();

 private:
  QgaClient(int fd, std::string path, std::chrono::milliseconds timeout)
      : fd_(fd), path_(std::move(path)), timeout_(timeout) {}
  Status Sync();
  Status SendAll(const std::string& bytes);
  // Appends what the socket has to buffered_ (waits until `end`).
  Status Fill(std::chrono::steady_clock::time_point end);
  // Reads one '\n'-terminated line (the agent ends each reply with one).
  Result<std::string> ReadLine();
  // Sends a command, returns the reply's "return" member (as JSON text
  // parsed) or the agent's "error" as a Status.
  Result<std::string> Execute(const std::string& command, const std::string& arguments_json);

  int fd_;
  std::string path_;
  std::chrono::milliseconds timeout_;
  std::string buffered_;
};

// Backend over qemu-ga. The agent holds one frozen set at a time and its
// thaw thaws everything, so: Freeze while the agent already holds a set is
// kUnsupported; Thaw of part of the held set thaws all and re-freezes the
// rest (a short unquiesced gap, reported on stderr).
std::unique_ptr<Backend> MakeQgaBackend(const std::string& socket_path,
                                        std::chrono::milliseconds timeout);

}  // namespace strata::quiesce

#endif  // STRATA_ENGINE_QUIESCE_QGA_H_
