#include "engine/quiesce/qga.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <set>

#include "engine/quiesce/json.h"

namespace strata::quiesce {
namespace {

using internal::Json;
using internal::JsonQuote;
using internal::ParseJson;

constexpr size_t kMaxLine = 1 << 20;  // a reply longer than this is refused

}  // namespace

Result<std::unique_ptr<QgaClient>> QgaClient::Connect(const std::string& socket_path,
                                                      std::chrono::milliseconds timeout) {
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof addr.sun_path) {
    return Status::InvalidArgument(socket_path + ": socket path longer than " +
                                   std::to_string(sizeof addr.sun_path - 1) + " bytes");
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno(errno, "socket");
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    ::close(fd);
    return Status::FromErrno(err, socket_path + ": connect to qemu-ga");
  }
  std::unique_ptr<QgaClient> c(new QgaClient(fd, socket_path, timeout));
  STRATA_RETURN_IF_ERROR(c->Sync());
  return c;
}

QgaClient::~QgaClient() { ::close(fd_); }

Status QgaClient::SendAll(const std::string& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, path_ + ": send to qemu-ga");
    off += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status QgaClient::Fill(std::chrono::steady_clock::time_point end) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return Status::Busy(path_ + ": no reply from qemu-ga within " +
                          std::to_string(timeout_.count()) + " ms");
    }
    pollfd p = {fd_, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Status::FromErrno(errno, path_ + ": poll");
    if (r == 0) continue;
    char buf[4096];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, path_ + ": recv from qemu-ga");
    if (n == 0) return Status(StatusCode::kIoError, path_ + ": qemu-ga closed the connection");
    buffered_.append(buf, static_cast<size_t>(n));
    return Status::Ok();
  }
}

Result<std::string> QgaClient::ReadLine() {
  auto end = std::chrono::steady_clock::now() + timeout_;
  for (;;) {
    size_t nl = buffered_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffered_.substr(0, nl);
      buffered_.erase(0, nl + 1);
      return line;
    }
    if (buffered_.size() > kMaxLine) {
      return Status::Corruption(path_ + ": qemu-ga reply longer than " + std::to_string(kMaxLine) +
                                " bytes without a newline");
    }
    STRATA_RETURN_IF_ERROR(Fill(end));
  }
}

Status QgaClient::Sync() {
  // A random-ish id so replies meant for an earlier client are recognised.
  int64_t id = static_cast<int64_t>(std::chrono::steady_clock::now().time_since_epoch().count() %
                                    1000000000) +
               ::getpid();
  std::string cmd =
      "\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":" + std::to_string(id) +
      "}}\n";
  STRATA_RETURN_IF_ERROR(SendAll(cmd));
  for (int attempts = 0; attempts < 64; ++attempts) {
    // Skip everything up to the 0xFF delimiter, then read the reply line.
    auto end = std::chrono::steady_clock::now() + timeout_;
    for (;;) {
      size_t ff = buffered_.find('\xff');
      if (ff != std::string::npos) {
        buffered_.erase(0, ff + 1);
        break;
      }
      buffered_.clear();
      Status s = Fill(end);
      if (!s.ok()) return s.WithContext("guest-sync-delimited");
    }
    STRATA_ASSIGN_OR_RETURN(std::string line, ReadLine());
    auto j = ParseJson(line, path_ + ": guest-sync-delimited reply");
    if (!j.has_value()) return j.error();
    const Json* ret = j->Find("return");
    if (ret != nullptr && ret->type == Json::Type::kNumber &&
        ret->number == static_cast<double>(id)) {
      return Status::Ok();
    }
    // A stale reply; wait for ours.
  }
  return Status::Corruption(path_ + ": qemu-ga never answered guest-sync-delimited id " +
                            std::to_string(id));
}

Result<std::string> QgaClient::Execute(const std::string& command,
                                       const std::string& arguments_json) {
  std::string cmd = "{\"execute\":" + JsonQuote(command);
  if (!arguments_json.empty()) cmd += ",\"arguments\":" + arguments_json;
  cmd += "}\n";
  STRATA_RETURN_IF_ERROR(SendAll(cmd));
  STRATA_ASSIGN_OR_RETURN(std::string line, ReadLine());
  auto j = ParseJson(line, path_ + ": " + command + " reply");
  if (!j.has_value()) return j.error();
  if (j->type != Json::Type::kObject) {
    return Status::Corruption(path_ + ": " + command + " reply is not an object");
  }
  if (const Json* err = j->Find("error")) {
    const Json* desc = err->Find("desc");
    const Json* cls = err->Find("class");
    return Status(StatusCode::kIoError,
                  path_ + ": qemu-ga " + command + ": " +
                      (cls && cls->type == Json::Type::kString ? cls->string + ": " : "") +
                      (desc && desc->type == Json::Type::kString ? desc->string : line));
  }
  const Json* ret = j->Find("return");
  if (ret == nullptr) return Status::Corruption(path_ + ": " + command + " reply has no 'return'");
  if (ret->type == Json::Type::kString) return ret->string;
  if (ret->type == Json::Type::kNumber) {
    if (!std::isfinite(ret->number) || std::fabs(ret->number) > 9e15) {
      return Status::Corruption(path_ + ": " + command + " returned an out-of-range number");
    }
    return std::to_string(static_cast<int64_t>(ret->number));
  }
  return std::string();
}

Result<int64_t> QgaClient::FreezeList(const std::vector<std::string>& mount_points) {
  std::string args = "{\"mountpoints\":[";
  for (size_t i = 0; i < mount_points.size(); ++i) {
    if (i) args += ",";
    args += JsonQuote(mount_points[i]);
  }
  args += "]}";
  STRATA_ASSIGN_OR_RETURN(std::string r, Execute("guest-fsfreeze-freeze-list", args));
  return std::strtoll(r.c_str(), nullptr, 10);
}

Result<int64_t> QgaClient::Thaw() {
  STRATA_ASSIGN_OR_RETURN(std::string r, Execute("guest-fsfreeze-thaw", ""));
  return std::strtoll(r.c_str(), nullptr, 10);
}

Result<std::string> QgaClient::FreezeStatus() { return Execute("guest-fsfreeze-status", ""); }

namespace {

class QgaBackend : public Backend {
 public:
  QgaBackend(std::string path, std::chrono::milliseconds timeout)
      : path_(std::move(path)), timeout_(timeout) {}
  std::string Name() const override { return "qga"; }

  Status Freeze(const std::vector<Filesystem>& fss) override {
    if (!held_.empty()) {
      return Status::Unsupported(path_ + ": qemu-ga holds one frozen set at a time (" +
                                 std::to_string(held_.size()) +
                                 " filesystems frozen); thaw the other handle first");
    }
    return FreezeSet(fss);
  }

  Status Thaw(const std::vector<Filesystem>& fss) override {
    STRATA_ASSIGN_OR_RETURN(auto c, QgaClient::Connect(path_, timeout_));
    STRATA_ASSIGN_OR_RETURN(int64_t n, c->Thaw());
    (void)n;
    std::set<std::string> gone;
    for (const auto& f : fss) gone.insert(f.mount_point);
    std::vector<Filesystem> rest;
    for (const auto& f : held_) {
      if (!gone.count(f.mount_point)) rest.push_back(f);
    }
    held_.clear();
    if (!rest.empty()) {
      std::fprintf(stderr, "strata: qemu-ga thaws everything; re-freezing %zu filesystems\n",
                   rest.size());
      return FreezeSet(rest);
    }
    return Status::Ok();
  }

 private:
  Status FreezeSet(const std::vector<Filesystem>& fss) {
    std::vector<std::string> mps;
    for (const auto& f : fss) mps.push_back(f.mount_point);
    STRATA_ASSIGN_OR_RETURN(auto c, QgaClient::Connect(path_, timeout_));
    auto n = c->FreezeList(mps);
    if (!n.has_value()) return n.error();
    if (*n != static_cast<int64_t>(fss.size())) {
      (void)c->Thaw();
      return Status(StatusCode::kIoError,
                    path_ + ": qemu-ga froze " + std::to_string(*n) + " of " +
                        std::to_string(fss.size()) +
                        " filesystems (mount points not seen by the agent?); thawed");
    }
    held_ = fss;
    return Status::Ok();
  }

  std::string path_;
  std::chrono::milliseconds timeout_;
  std::vector<Filesystem> held_;
};

}  // namespace

std::unique_ptr<Backend> MakeQgaBackend(const std::string& socket_path,
                                        std::chrono::milliseconds timeout) {
  return std::make_unique<QgaBackend>(socket_path, timeout);
}

}  // namespace strata::quiesce
