// A client for QEMU's machine protocol (QMP) over a unix socket: a running
// qemu-system-* (-qmp unix:PATH,server=on,wait=off) or qemu-storage-daemon
// (--chardev socket,... --monitor). Commands and replies are JSON lines
// (nlohmann-json); asynchronous events that arrive in between are kept for
// WaitEvent. Every call is bounded by the client's timeout.
//
// Thread safety: none; one client per thread.
#ifndef STRATA_ENGINE_LIVE_QMP_H_
#define STRATA_ENGINE_LIVE_QMP_H_

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "strata/status.h"

namespace strata::live {

using Json = nlohmann::ordered_json;

class QmpClient {
 public:
  // Connects, reads the greeting and enters command mode
  // (qmp_capabilities). kIoError when the socket cannot be reached.
  static Result<std::unique_ptr<QmpClient>> Connect(const std::string& socket_path,
                                                    std::chrono::milliseconds timeout);
  ~QmpClient();
  QmpClient(const QmpClient&) = delete;
  QmpClient& operator=(const QmpClient&) = delete;

  // Runs `command` and returns its "return" member. A QMP error is kIoError
  // "SOCKET: COMMAND: CLASS: DESC" (kNotFound for DeviceNotFound); the text
  // of the error is also in last_error_desc().
  Result<Json> Execute(const std::string& command, const Json& arguments = Json());
  // Waits for an event for which `match` is true (events received earlier
  // and not yet consumed count). kBusy after `timeout`.
  Result<Json> WaitEvent(const std::function<bool(const Json&)>& match, std::chrono::milliseconds timeout);
  const std::string& last_error_desc() const { return last_error_desc_; }
  const std::string& path() const { return path_; }

 private:
  QmpClient() = default;
  Result<Json> ReadMessage(std::chrono::steady_clock::time_point end);
  Status Send(const std::string& line);

  int fd_ = -1;
  std::string path_;
  std::chrono::milliseconds timeout_{0};
  std::string buffered_;
  std::deque<Json> events_;
  uint64_t next_id_ = 1;
  std::string last_error_desc_;
};

}  // namespace strata::live

#endif  // STRATA_ENGINE_LIVE_QMP_H_
