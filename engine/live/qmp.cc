#include "engine/live/qmp.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace strata::live {

namespace {
using Clock = std::chrono::steady_clock;
constexpr size_t kMaxLine = 16 << 20;  // query replies of a big VM stay far below
}  // namespace

Result<std::unique_ptr<QmpClient>> QmpClient::Connect(const std::string& socket_path,
                                                      std::chrono::milliseconds timeout) {
  std::unique_ptr<QmpClient> c(new QmpClient());
  c->path_ = socket_path;
  c->timeout_ = timeout;
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof addr.sun_path) {
    return Status::InvalidArgument(socket_path + ": socket path longer than " +
                                   std::to_string(sizeof addr.sun_path - 1) + " bytes");
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  c->fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c->fd_ < 0) return Status::FromErrno(errno, "socket");
  if (::connect(c->fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return Status::FromErrno(errno, socket_path + ": connect to QMP");
  }
  auto end = Clock::now() + timeout;
  STRATA_ASSIGN_OR_RETURN(Json greeting, c->ReadMessage(end));
  if (!greeting.contains("QMP")) return Status::Corruption(socket_path + ": no QMP greeting");
  STRATA_RETURN_IF_ERROR(c->Execute("qmp_capabilities").status());
  return c;
}

QmpClient::~QmpClient() {
  if (fd_ >= 0) ::close(fd_);
}

Status QmpClient::Send(const std::string& line) {
  size_t off = 0;
  while (off < line.size()) {
    ssize_t n = ::send(fd_, line.data() + off, line.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, path_ + ": send to QMP");
    off += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Result<Json> QmpClient::ReadMessage(Clock::time_point end) {
  for (;;) {
    size_t nl = buffered_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffered_.substr(0, nl);
      buffered_.erase(0, nl + 1);
      if (line.find_first_not_of(" \r\t") == std::string::npos) continue;
      try {
        return Json::parse(line);
      } catch (const std::exception& e) {
        return Status::Corruption(path_ + ": malformed QMP message: " + e.what());
      }
    }
    if (buffered_.size() > kMaxLine) return Status::Corruption(path_ + ": QMP message too long");
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count();
    if (left <= 0) return Status::Busy(path_ + ": no reply from QEMU within " + std::to_string(timeout_.count()) + " ms");
    pollfd p = {fd_, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left + 1, 1 << 30)));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Status::FromErrno(errno, path_ + ": poll");
    if (r == 0) continue;
    char buf[65536];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, path_ + ": recv from QMP");
    if (n == 0) return Status(StatusCode::kIoError, path_ + ": QEMU closed the QMP connection");
    buffered_.append(buf, static_cast<size_t>(n));
  }
}

Result<Json> QmpClient::Execute(const std::string& command, const Json& arguments) {
  const uint64_t id = next_id_++;
  Json cmd;
  cmd["execute"] = command;
  if (!arguments.is_null()) cmd["arguments"] = arguments;
  cmd["id"] = id;
  STRATA_RETURN_IF_ERROR(Send(cmd.dump() + "\n"));
  auto end = Clock::now() + timeout_;
  for (;;) {
    STRATA_ASSIGN_OR_RETURN(Json m, ReadMessage(end));
    if (m.contains("event")) {
      events_.push_back(std::move(m));
      continue;
    }
    if (!m.contains("id") || m["id"] != id) continue;  // a reply to someone else's command
    if (m.contains("error")) {
      const Json& e = m["error"];
      std::string cls = e.value("class", "Error"), desc = e.value("desc", m.dump());
      last_error_desc_ = desc;
      StatusCode code = cls == "DeviceNotFound" ? StatusCode::kNotFound : StatusCode::kIoError;
      return Status(code, path_ + ": " + command + ": " + desc);
    }
    last_error_desc_.clear();
    return m.contains("return") ? m["return"] : Json::object();
  }
}

Result<Json> QmpClient::WaitEvent(const std::function<bool(const Json&)>& match, std::chrono::milliseconds timeout) {
  for (auto it = events_.begin(); it != events_.end(); ++it) {
    if (match(*it)) {
      Json e = std::move(*it);
      events_.erase(it);
      return e;
    }
  }
  auto end = Clock::now() + timeout;
  for (;;) {
    auto m = ReadMessage(end);
    if (!m) {
      if (m.error().code() == StatusCode::kBusy) return Status::Busy(path_ + ": the awaited QMP event did not come");
      return m.error();
    }
    if (!m->contains("event")) continue;
    if (match(*m)) return *m;
    events_.push_back(std::move(*m));
  }
}

}  // namespace strata::live
