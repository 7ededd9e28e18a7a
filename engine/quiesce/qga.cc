#include "engine/quiesce/qga.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>

namespace strata::quiesce {
namespace {

using Json = nlohmann::json;
// Commands are built with "execute" first, as in QEMU's documentation.
using OrderedJson = nlohmann::ordered_json;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

constexpr size_t kMaxLine = 1 << 20;  // a reply longer than this is refused

// nlohmann's messages start with "[json.exception.parse_error.101] ".
std::string WithoutJsonPrefix(const char* what) {
  std::string s = what;
  if (!s.empty() && s[0] == '[') {
    size_t close = s.find("] ");
    if (close != std::string::npos) s.erase(0, close + 2);
  }
  return s;
}

// A reply line as JSON; kCorruption naming the byte on malformed input.
Result<Json> ParseReply(const std::string& line, const std::string& what) {
  try {
    return Json::parse(line);
  } catch (const Json::parse_error& e) {
    return Status::Corruption(what + ": byte " + std::to_string(e.byte) + ": " +
                              WithoutJsonPrefix(e.what()));
  } catch (const std::exception& e) {  // nlohmann reports depth and size limits this way
    return Status::Corruption(what + ": " + WithoutJsonPrefix(e.what()));
  }
}

// One command line; kInvalidArgument when a string is not valid UTF-8.
Result<std::string> CommandLine(const std::string& command, const OrderedJson* arguments) {
  OrderedJson cmd;
  cmd["execute"] = command;
  if (arguments != nullptr) cmd["arguments"] = *arguments;
  try {
    return cmd.dump() + "\n";
  } catch (const Json::type_error& e) {
    return Status::InvalidArgument(command + ": an argument is not valid UTF-8, which JSON "
                                   "cannot carry to qemu-ga (" +
                                   WithoutJsonPrefix(e.what()) + ")");
  }
}

int64_t SyncId() {
  // A random-ish id so replies meant for an earlier client are recognised.
  return static_cast<int64_t>(Clock::now().time_since_epoch().count() % 1000000000) + ::getpid();
}

}  // namespace

struct QgaClient::Impl {
  int fd = -1;
  std::string path;
  milliseconds timeout{0};
  Clock::time_point deadline = Clock::time_point::max();
  std::string buffered;

  ~Impl() {
    if (fd >= 0) ::close(fd);
  }

  // The end of a call starting now.
  Clock::time_point End() const {
    Clock::time_point now = Clock::now();
    if (deadline - now <= timeout) return deadline;
    return now + timeout;
  }

  Status TimeUp(Clock::time_point end) const {
    if (end == deadline) {
      return Status::Busy(path + ": no reply from qemu-ga before the freeze deadline");
    }
    return Status::Busy(path + ": no reply from qemu-ga within " +
                        std::to_string(timeout.count()) + " ms");
  }

  Status Open() {
    sockaddr_un addr = {};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) {
      return Status::InvalidArgument(path + ": socket path longer than " +
                                     std::to_string(sizeof addr.sun_path - 1) + " bytes");
    }
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return Status::FromErrno(errno, "socket");
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      return Status::FromErrno(errno, path + ": connect to qemu-ga");
    }
    return Status::Ok();
  }

  Status SendAll(const std::string& bytes) {
    size_t off = 0;
    while (off < bytes.size()) {
      ssize_t n = ::send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Status::FromErrno(errno, path + ": send to qemu-ga");
      off += static_cast<size_t>(n);
    }
    return Status::Ok();
  }

  // Appends what the socket has to `buffered` (waits until `end`).
  Status Fill(Clock::time_point end) {
    for (;;) {
      auto left = duration_cast<milliseconds>(end - Clock::now());
      if (left.count() <= 0) return TimeUp(end);
      pollfd p = {fd, POLLIN, 0};
      int r = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count() + 1, 1 << 30)));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return Status::FromErrno(errno, path + ": poll");
      if (r == 0) continue;
      char buf[4096];
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Status::FromErrno(errno, path + ": recv from qemu-ga");
      if (n == 0) return Status(StatusCode::kIoError, path + ": qemu-ga closed the connection");
      buffered.append(buf, static_cast<size_t>(n));
      return Status::Ok();
    }
  }

  // One '\n'-terminated line (the agent ends each reply with one).
  Result<std::string> ReadLine(Clock::time_point end) {
    for (;;) {
      size_t nl = buffered.find('\n');
      if (nl != std::string::npos) {
        std::string line = buffered.substr(0, nl);
        buffered.erase(0, nl + 1);
        return line;
      }
      if (buffered.size() > kMaxLine) {
        return Status::Corruption(path + ": qemu-ga reply longer than " +
                                  std::to_string(kMaxLine) + " bytes without a newline");
      }
      STRATA_RETURN_IF_ERROR(Fill(end));
    }
  }

  static std::string SyncCommand(int64_t id) {
    return "\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":" +
           std::to_string(id) + "}}\n";
  }

  // Skips input up to a 0xFF delimiter and reads the line after it, until
  // that line is {"return": id}. However many stale replies come, the wait
  // ends at `end`.
  Status AwaitSync(int64_t id, Clock::time_point end) {
    const std::string what = path + ": guest-sync-delimited reply";
    for (;;) {
      for (;;) {
        size_t ff = buffered.find('\xff');
        if (ff != std::string::npos) {
          buffered.erase(0, ff + 1);
          break;
        }
        buffered.clear();
        Status s = Fill(end);
        if (!s.ok()) return s.WithContext("guest-sync-delimited");
      }
      STRATA_ASSIGN_OR_RETURN(std::string line, ReadLine(end));
      STRATA_ASSIGN_OR_RETURN(Json j, ParseReply(line, what));
      if (j.is_object()) {
        auto ret = j.find("return");
        if (ret != j.end() && ret->is_number_integer() && ret->get<int64_t>() == id) {
          return Status::Ok();
        }
      }
      // A stale reply; wait for ours.
    }
  }

  // Reads the reply to `command`: its "return" member, or the agent's
  // "error" as a Status.
  Result<Json> AwaitReply(const std::string& command, Clock::time_point end) {
    STRATA_ASSIGN_OR_RETURN(std::string line, ReadLine(end));
    STRATA_ASSIGN_OR_RETURN(Json j, ParseReply(line, path + ": " + command + " reply"));
    if (!j.is_object()) {
      return Status::Corruption(path + ": " + command + " reply is not an object");
    }
    auto err = j.find("error");
    if (err != j.end()) {
      std::string cls, desc = line;
      if (err->is_object()) {
        auto c = err->find("class");
        auto d = err->find("desc");
        if (c != err->end() && c->is_string()) cls = c->get<std::string>() + ": ";
        if (d != err->end() && d->is_string()) desc = d->get<std::string>();
      }
      return Status(StatusCode::kIoError, path + ": qemu-ga " + command + ": " + cls + desc);
    }
    auto ret = j.find("return");
    if (ret == j.end()) {
      return Status::Corruption(path + ": " + command + " reply has no 'return'");
    }
    return *ret;
  }

  Result<int64_t> AwaitCount(const std::string& command, Clock::time_point end) {
    STRATA_ASSIGN_OR_RETURN(Json ret, AwaitReply(command, end));
    if (!ret.is_number_integer()) {
      return Status::Corruption(path + ": " + command + " returned " + ret.dump(-1, ' ', true) +
                                ", not an integer");
    }
    return ret.get<int64_t>();
  }

  Result<Json> Execute(const std::string& command, const OrderedJson* arguments) {
    STRATA_ASSIGN_OR_RETURN(std::string line, CommandLine(command, arguments));
    Clock::time_point end = End();
    STRATA_RETURN_IF_ERROR(SendAll(line));
    return AwaitReply(command, end);
  }
};

QgaClient::QgaClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
QgaClient::~QgaClient() = default;

Result<std::unique_ptr<QgaClient>> QgaClient::Connect(const std::string& socket_path,
                                                      milliseconds timeout,
                                                      Clock::time_point deadline) {
  auto impl = std::make_unique<Impl>();
  impl->path = socket_path;
  impl->timeout = timeout;
  impl->deadline = deadline;
  Clock::time_point end = impl->End();
  if (Clock::now() >= end) return impl->TimeUp(end);
  STRATA_RETURN_IF_ERROR(impl->Open());
  int64_t id = SyncId();
  STRATA_RETURN_IF_ERROR(impl->SendAll(Impl::SyncCommand(id)));
  STRATA_RETURN_IF_ERROR(impl->AwaitSync(id, end));
  return std::unique_ptr<QgaClient>(new QgaClient(std::move(impl)));
}

Result<int64_t> QgaClient::FreezeList(const std::vector<std::string>& mount_points) {
  OrderedJson args;
  args["mountpoints"] = mount_points;
  STRATA_ASSIGN_OR_RETURN(std::string line, CommandLine("guest-fsfreeze-freeze-list", &args));
  Clock::time_point end = impl_->End();
  STRATA_RETURN_IF_ERROR(impl_->SendAll(line));
  return impl_->AwaitCount("guest-fsfreeze-freeze-list", end);
}

Result<int64_t> QgaClient::FreezeAll() {
  STRATA_ASSIGN_OR_RETURN(std::string line, CommandLine("guest-fsfreeze-freeze", nullptr));
  Clock::time_point end = impl_->End();
  STRATA_RETURN_IF_ERROR(impl_->SendAll(line));
  return impl_->AwaitCount("guest-fsfreeze-freeze", end);
}

Result<int64_t> QgaClient::Thaw() {
  STRATA_ASSIGN_OR_RETURN(std::string line, CommandLine("guest-fsfreeze-thaw", nullptr));
  Clock::time_point end = impl_->End();
  STRATA_RETURN_IF_ERROR(impl_->SendAll(line));
  return impl_->AwaitCount("guest-fsfreeze-thaw", end);
}

Result<std::string> QgaClient::FreezeStatus() {
  STRATA_ASSIGN_OR_RETURN(Json ret, impl_->Execute("guest-fsfreeze-status", nullptr));
  if (!ret.is_string()) {
    return Status::Corruption(impl_->path + ": guest-fsfreeze-status returned " +
                              ret.dump(-1, ' ', true) + ", not a string");
  }
  return ret.get<std::string>();
}

Result<int64_t> QgaClient::SyncAndThaw(const std::string& socket_path, milliseconds timeout) {
  Impl c;
  c.path = socket_path;
  c.timeout = timeout;
  Clock::time_point end = c.End();
  STRATA_RETURN_IF_ERROR(c.Open());
  int64_t id = SyncId();
  STRATA_ASSIGN_OR_RETURN(std::string thaw, CommandLine("guest-fsfreeze-thaw", nullptr));
  STRATA_RETURN_IF_ERROR(c.SendAll(Impl::SyncCommand(id) + thaw));
  Status s = c.AwaitSync(id, end);
  Result<int64_t> n = s.ok() ? c.AwaitCount("guest-fsfreeze-thaw", end) : Result<int64_t>(s);
  if (!n.has_value()) return n.error().WithContext("guest-fsfreeze-thaw sent but not confirmed");
  return n;
}

namespace {

class QgaBackend : public Backend {
 public:
  QgaBackend(std::string path, milliseconds timeout) : path_(std::move(path)), timeout_(timeout) {}
  std::string Name() const override { return "qga"; }
  std::string RecoveryTarget() const override { return path_; }
  bool CanThawPart() const override { return false; }

  Status Freeze(const std::vector<Filesystem>& fss, Clock::time_point deadline) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!held_.empty()) {
      return Status::Unsupported(path_ + ": qemu-ga holds one frozen set at a time (" +
                                 std::to_string(held_.size()) +
                                 " filesystems frozen); thaw the other handle first");
    }
    return FreezeSet(fss, deadline);
  }

  // The agent thaws everything it froze, whatever `fss` names.
  Status Thaw(const std::vector<Filesystem>& /*fss*/) override {
    std::lock_guard<std::mutex> lock(mu_);
    held_.clear();  // confirmed or not, the thaw was sent
    auto n = QgaClient::SyncAndThaw(path_, timeout_);
    if (!n.has_value()) return n.error();
    return Status::Ok();
  }

 private:
  // Caller holds mu_.
  Status FreezeSet(const std::vector<Filesystem>& fss, Clock::time_point deadline) {
    std::vector<std::string> mps;
    for (const auto& f : fss) mps.push_back(f.mount_point);
    STRATA_ASSIGN_OR_RETURN(auto c, QgaClient::Connect(path_, timeout_, deadline));
    auto n = c->FreezeList(mps);
    // The agent serves one connection at a time: close ours before thawing.
    c.reset();
    if (!n.has_value()) {
      if (n.error().code() == StatusCode::kInvalidArgument) return n.error();  // nothing sent
      // The command went out: the agent may have frozen some of the set.
      auto t = QgaClient::SyncAndThaw(path_, timeout_);
      return n.error().WithContext(t.has_value() ? "(sent guest-fsfreeze-thaw)"
                                                 : "(and the thaw failed: " +
                                                       t.error().message() + ")");
    }
    if (*n != static_cast<int64_t>(fss.size())) {
      auto t = QgaClient::SyncAndThaw(path_, timeout_);
      return Status(StatusCode::kIoError,
                    path_ + ": qemu-ga froze " + std::to_string(*n) + " of " +
                        std::to_string(fss.size()) +
                        " filesystems (mount points not seen by the agent?); " +
                        (t.has_value() ? "thawed" : "thaw failed: " + t.error().message()));
    }
    held_ = fss;
    return Status::Ok();
  }

  std::string path_;
  milliseconds timeout_;
  std::mutex mu_;
  std::vector<Filesystem> held_;
};

}  // namespace

std::unique_ptr<Backend> MakeQgaBackend(const std::string& socket_path, milliseconds timeout) {
  return std::make_unique<QgaBackend>(socket_path, timeout);
}

}  // namespace strata::quiesce
