// The tracker control socket: TrackerControlServer (the owner's side) and
// TrackerHandle (everyone else). Wire format in strata/tracker_control.h and
// docs/design/filter.md.
#include "strata/tracker_control.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "strata/id128.h"

namespace strata {
namespace {

using Json = nlohmann::json;

constexpr uint32_t kMaxMessage = 64u << 20;
constexpr int kProtocolVersion = 1;
// A peer that stalls mid-message is dropped after this long.
constexpr int kIoTimeoutSeconds = 30;

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { Reset(); }
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      Reset();
      fd_ = o.fd_;
      o.fd_ = -1;
    }
    return *this;
  }
  int get() const { return fd_; }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

Status WriteAll(int fd, const void* data, size_t n, const std::string& what) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, what);
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status::Ok();
}

// Reads exactly n bytes; *eof set (and OK returned) when the peer closed
// before the first byte.
Status ReadAll(int fd, void* data, size_t n, const std::string& what, bool* eof) {
  char* p = static_cast<char*>(data);
  size_t got = 0;
  if (eof) *eof = false;
  while (got < n) {
    ssize_t r = ::recv(fd, p + got, n - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, what);
    }
    if (r == 0) {
      if (got == 0 && eof) {
        *eof = true;
        return Status::Ok();
      }
      return Status(StatusCode::kIoError, what + ": connection closed mid-message", ECONNRESET);
    }
    got += static_cast<size_t>(r);
  }
  return Status::Ok();
}

Status SendMessage(int fd, std::string_view bytes, const std::string& what) {
  if (bytes.size() > kMaxMessage) return Status::InvalidArgument(what + ": message of " + std::to_string(bytes.size()) + " bytes is too large");
  uint8_t len[4];
  for (int i = 0; i < 4; ++i) len[i] = static_cast<uint8_t>(bytes.size() >> (8 * i));
  STRATA_RETURN_IF_ERROR(WriteAll(fd, len, 4, what));
  return WriteAll(fd, bytes.data(), bytes.size(), what);
}

Status ReceiveMessage(int fd, std::string* out, const std::string& what, bool* eof) {
  uint8_t len[4];
  STRATA_RETURN_IF_ERROR(ReadAll(fd, len, 4, what, eof));
  if (eof && *eof) return Status::Ok();
  uint32_t n = len[0] | (uint32_t{len[1]} << 8) | (uint32_t{len[2]} << 16) | (uint32_t{len[3]} << 24);
  if (n > kMaxMessage) return Status::Corruption(what + ": message length " + std::to_string(n) + " over the limit");
  out->resize(n);
  return ReadAll(fd, out->data(), n, what, nullptr);
}

void SetTimeouts(int fd) {
  timeval tv{kIoTimeoutSeconds, 0};
  (void)::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  (void)::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

Result<sockaddr_un> Address(const std::string& path) {
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return Status(StatusCode::kIoError, path + ": socket path longer than " +
                                            std::to_string(sizeof addr.sun_path - 1) + " bytes", ENAMETOOLONG);
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

Json CheckpointToJson(const CheckpointInfo& c) {
  return Json{{"id", c.id},
              {"name", c.name},
              {"created_unix_ns", c.created_unix_ns},
              {"changed_bytes", c.changed_bytes},
              {"generation_unknown", c.generation_unknown},
              {"quiesced", c.quiesced}};
}

CheckpointInfo CheckpointFromJson(const Json& j) {
  CheckpointInfo c;
  c.id = j.at("id").get<uint64_t>();
  c.name = j.at("name").get<std::string>();
  c.created_unix_ns = j.at("created_unix_ns").get<int64_t>();
  c.changed_bytes = j.at("changed_bytes").get<uint64_t>();
  c.generation_unknown = j.at("generation_unknown").get<bool>();
  c.quiesced = j.at("quiesced").get<bool>();
  return c;
}

Json ErrorJson(const Status& s) {
  return Json{{"ok", false}, {"code", static_cast<int>(s.code())}, {"errno", s.sys_errno()}, {"message", s.message()}};
}

}  // namespace

std::string TrackerControlSocketPath(const std::string& dir) { return dir + "/control.sock"; }

// ---------------------------------------------------------------------------
// Server.

struct TrackerControlServer::Impl {
  Tracker* tracker = nullptr;
  ControlServerOptions options;
  std::string path;
  Fd listen_fd;
  Fd wake_read, wake_write;
  std::thread thread;
  std::atomic<uint64_t> requests{0};
  bool stopped = false;

  void Serve();
  // Answers one request on `fd`; false when the connection is done.
  bool Answer(int fd);
  Status Reply(int fd, const Json& reply, const std::string* set_bytes);
};

void TrackerControlServer::Impl::Serve() {
  std::vector<Fd> conns;
  while (true) {
    std::vector<pollfd> fds;
    fds.push_back({wake_read.get(), POLLIN, 0});
    fds.push_back({listen_fd.get(), POLLIN, 0});
    for (const Fd& c : conns) fds.push_back({c.get(), POLLIN, 0});
    int n = ::poll(fds.data(), fds.size(), -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[0].revents) return;  // Stop
    // Connections polled this time: fds[2 + i] belongs to conns[i] only for
    // these (one accepted below has no entry yet).
    const size_t polled = conns.size();
    if (fds[1].revents & POLLIN) {
      Fd c(::accept4(listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (c.get() >= 0) {
        ucred cred{};
        socklen_t len = sizeof cred;
        // Same user (or root) only; the socket's mode says the same.
        if (::getsockopt(c.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 &&
            (cred.uid == ::geteuid() || cred.uid == 0)) {
          SetTimeouts(c.get());
          conns.push_back(std::move(c));
        }
      }
    }
    // Connections answered in order; a closed or broken one is dropped.
    std::vector<Fd> keep;
    for (size_t i = 0; i < conns.size(); ++i) {
      const short ev = i < polled ? fds[2 + i].revents : 0;
      if (ev == 0 || Answer(conns[i].get())) keep.push_back(std::move(conns[i]));
    }
    conns = std::move(keep);
  }
}

Status TrackerControlServer::Impl::Reply(int fd, const Json& reply, const std::string* set_bytes) {
  STRATA_RETURN_IF_ERROR(SendMessage(fd, reply.dump(), path));
  if (set_bytes) STRATA_RETURN_IF_ERROR(SendMessage(fd, *set_bytes, path));
  return Status::Ok();
}

bool TrackerControlServer::Impl::Answer(int fd) {
  std::string msg;
  bool eof = false;
  if (!ReceiveMessage(fd, &msg, path, &eof).ok() || eof) return false;
  requests.fetch_add(1, std::memory_order_relaxed);
  Json req = Json::parse(msg, nullptr, false);
  if (!req.is_object() || !req.contains("op") || !req["op"].is_string()) {
    (void)Reply(fd, ErrorJson(Status::InvalidArgument(path + ": request is not a JSON object with an op")), nullptr);
    return false;
  }
  const std::string op = req["op"].get<std::string>();
  auto str = [&](const char* key) { return req.contains(key) && req[key].is_string() ? req[key].get<std::string>() : std::string(); };
  auto u64 = [&](const char* key) { return req.contains(key) && req[key].is_number_unsigned() ? req[key].get<uint64_t>() : uint64_t{0}; };
  Tracker& t = *tracker;
  Json ok{{"ok", true}};
  auto status_reply = [&](const Status& s) { return Reply(fd, s.ok() ? ok : ErrorJson(s), nullptr).ok(); };
  auto set_reply = [&](Result<ExtentSet> r) {
    if (!r) return Reply(fd, ErrorJson(r.error()), nullptr).ok();
    std::string bytes = r->Serialize();
    return Reply(fd, ok, &bytes).ok();
  };
  if (op == "info") {
    const RecoveryInfo& r = t.recovery();
    ok["version"] = kProtocolVersion;
    ok["pid"] = static_cast<int64_t>(::getpid());
    ok["uuid"] = Id128ToHex(t.uuid());
    ok["disk_size"] = t.disk_size();
    ok["granularity"] = t.granularity().bytes();
    ok["intent_log"] = t.intent_log_enabled();
    ok["recovery"] = Json{{"clean_shutdown", r.clean_shutdown},
                          {"intent_regions", r.intent_regions},
                          {"added_bytes", r.added_bytes},
                          {"active_unknown", r.active_unknown},
                          {"problems", r.problems}};
    return Reply(fd, ok, nullptr).ok();
  }
  if (op == "list") {
    Json arr = Json::array();
    for (const CheckpointInfo& c : t.List()) arr.push_back(CheckpointToJson(c));
    ok["checkpoints"] = arr;
    return Reply(fd, ok, nullptr).ok();
  }
  if (op == "checkpoint") {
    Result<CheckpointInfo> cp = Status::InvalidArgument("no checkpoint taken");
    auto take = [&]() -> Status {
      cp = t.Checkpoint(str("name"));
      return cp.status();
    };
    Status s = options.checkpoint_guard ? options.checkpoint_guard(take) : take();
    if (!s.ok()) return Reply(fd, ErrorJson(s), nullptr).ok();
    ok["checkpoint"] = CheckpointToJson(*cp);
    return Reply(fd, ok, nullptr).ok();
  }
  if (op == "set_quiesced") {
    bool q = req.contains("quiesced") && req["quiesced"].is_boolean() && req["quiesced"].get<bool>();
    return status_reply(t.SetQuiesced(str("name"), q));
  }
  if (op == "changed_since") return set_reply(t.ChangedSince(str("name")));
  if (op == "changed_between") return set_reply(t.ChangedBetween(str("from"), str("to")));
  if (op == "remove") return status_reply(t.Remove(str("name")));
  if (op == "mark") return status_reply(t.Mark(u64("offset"), u64("length")));
  if (op == "flush") return status_reply(t.Flush());
  return status_reply(Status::InvalidArgument(path + ": unknown request '" + op + "'"));
}

TrackerControlServer::TrackerControlServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

TrackerControlServer::~TrackerControlServer() { Stop(); }

Result<std::unique_ptr<TrackerControlServer>> TrackerControlServer::Start(Tracker* tracker,
                                                                           ControlServerOptions options) {
  if (tracker == nullptr) return Status::InvalidArgument("control server: no tracker");
  auto impl = std::make_unique<Impl>();
  impl->tracker = tracker;
  impl->options = std::move(options);
  impl->path = TrackerControlSocketPath(tracker->dir());
  // Read-write only: a read-only tracker refuses Flush with kInvalidArgument
  // (and a closed one too), so ask it.
  if (Status s = tracker->Flush(); !s.ok()) {
    return s.WithContext("control server for " + tracker->dir());
  }
  STRATA_ASSIGN_OR_RETURN(sockaddr_un addr, Address(impl->path));
  impl->listen_fd = Fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (impl->listen_fd.get() < 0) return Status::FromErrno(errno, impl->path + ": socket");
  // We hold the tracker's exclusive lock: a socket file here is a leftover
  // of a killed owner.
  if (::unlink(impl->path.c_str()) != 0 && errno != ENOENT) return Status::FromErrno(errno, impl->path + ": unlink");
  // Mode 0600 from the start: bind under a umask that leaves only the owner.
  mode_t old_mask = ::umask(0177);
  int b = ::bind(impl->listen_fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  int bind_errno = errno;
  ::umask(old_mask);
  if (b != 0) return Status::FromErrno(bind_errno, impl->path + ": bind");
  if (::listen(impl->listen_fd.get(), 16) != 0) return Status::FromErrno(errno, impl->path + ": listen");
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return Status::FromErrno(errno, "control server: pipe");
  impl->wake_read = Fd(pipefd[0]);
  impl->wake_write = Fd(pipefd[1]);
  Impl* p = impl.get();
  impl->thread = std::thread([p] { p->Serve(); });
  return std::unique_ptr<TrackerControlServer>(new TrackerControlServer(std::move(impl)));
}

void TrackerControlServer::Stop() {
  if (!impl_ || impl_->stopped) return;
  impl_->stopped = true;
  char c = 1;
  (void)!::write(impl_->wake_write.get(), &c, 1);
  if (impl_->thread.joinable()) impl_->thread.join();
  impl_->listen_fd.Reset();
  (void)::unlink(impl_->path.c_str());
}

uint64_t TrackerControlServer::requests() const { return impl_->requests.load(std::memory_order_relaxed); }

// ---------------------------------------------------------------------------
// Client.

struct TrackerHandle::Impl {
  // Direct: `direct` (owned) or `borrowed`. Through an owner: `conn`.
  std::unique_ptr<Tracker> owned;
  Tracker* local = nullptr;
  Fd conn;
  std::string dir, path;
  bool read_only = false;
  bool closed = false;
  int64_t pid = 0;
  std::array<uint8_t, 16> uuid{};
  uint64_t disk_size = 0;
  Granularity gran = Granularity::Default();
  bool intent_log = true;
  RecoveryInfo recovery;

  Result<Json> Call(const Json& request, std::string* set_bytes = nullptr);
  Status CallStatus(const Json& request) {
    auto r = Call(request);
    return r ? Status::Ok() : r.error();
  }
  Result<ExtentSet> CallSet(const Json& request) {
    std::string bytes;
    STRATA_ASSIGN_OR_RETURN(Json r, Call(request, &bytes));
    (void)r;
    auto set = ExtentSet::Deserialize({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
    if (!set) return set.error().WithContext(path + ": change set from the owner");
    return set;
  }
  Status Mutating() const {
    if (closed) return Status::InvalidArgument(dir + ": tracker handle is closed");
    if (read_only) return Status::InvalidArgument(dir + ": tracker is open read-only");
    return Status::Ok();
  }
};

Result<Json> TrackerHandle::Impl::Call(const Json& request, std::string* set_bytes) {
  if (closed) return Status::InvalidArgument(dir + ": tracker handle is closed");
  if (conn.get() < 0) return Status(StatusCode::kIoError, path + ": connection to the owner was lost", ECONNRESET);
  Status s = SendMessage(conn.get(), request.dump(), path);
  std::string msg;
  bool eof = false;
  if (s.ok()) s = ReceiveMessage(conn.get(), &msg, path, &eof);
  if (s.ok() && eof) s = Status(StatusCode::kIoError, path + ": the owner closed the connection", ECONNRESET);
  Json reply;
  if (s.ok()) {
    reply = Json::parse(msg, nullptr, false);
    if (!reply.is_object() || !reply.contains("ok")) s = Status::Corruption(path + ": malformed reply from the owner");
  }
  if (s.ok() && !reply["ok"].get<bool>()) {
    int code = reply.value("code", static_cast<int>(StatusCode::kIoError));
    return Status(static_cast<StatusCode>(code), reply.value("message", std::string("owner error")),
                  reply.value("errno", 0));
  }
  if (s.ok() && set_bytes) s = ReceiveMessage(conn.get(), set_bytes, path, nullptr);
  if (!s.ok()) {
    conn.Reset();  // out of step with the owner: no later call may read a stale reply
    return s;
  }
  return reply;
}

namespace {

// Connects to an owner: the connection, or kNotFound when nobody answers.
Result<Fd> ConnectOwner(const std::string& path) {
  // A path too long for a socket address has no owner either (no server
  // can bind it): the directory is opened directly, as before sockets.
  auto a = Address(path);
  if (!a) return Status::NotFound(path + ": no owner can serve this path");
  const sockaddr_un& addr = *a;
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return Status::FromErrno(errno, path + ": socket");
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    if (e == ENOENT || e == ECONNREFUSED || e == ENOTSOCK || e == ENOTDIR) {
      return Status::NotFound(path + ": no owner answers");
    }
    return Status::FromErrno(e, path + ": connect");
  }
  SetTimeouts(fd.get());
  return fd;
}

}  // namespace

TrackerHandle::TrackerHandle(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

TrackerHandle::~TrackerHandle() {
  if (impl_ && !impl_->closed) (void)Close();
}

std::unique_ptr<TrackerHandle> TrackerHandle::Borrow(Tracker* tracker) {
  auto impl = std::make_unique<Impl>();
  impl->local = tracker;
  impl->dir = tracker->dir();
  return std::unique_ptr<TrackerHandle>(new TrackerHandle(std::move(impl)));
}

Result<std::unique_ptr<TrackerHandle>> TrackerHandle::Open(const std::string& dir, const HandleOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->dir = dir;
  impl->path = TrackerControlSocketPath(dir);
  impl->read_only = options.read_only;
  const auto deadline = std::chrono::steady_clock::now() + options.owner_wait;
  while (true) {
    Result<Fd> fd = ConnectOwner(impl->path);
    if (fd) {
      impl->conn = std::move(*fd);
      auto info = impl->Call(Json{{"op", "info"}});
      if (!info) return info.error().WithContext("asking the tracker's owner");
      const Json& j = *info;
      try {
        impl->pid = j.at("pid").get<int64_t>();
        auto uuid = Id128FromHex(j.at("uuid").get<std::string>());
        if (!uuid) return Status::Corruption(impl->path + ": the owner sent a malformed uuid");
        impl->uuid = *uuid;
        impl->disk_size = j.at("disk_size").get<uint64_t>();
        auto g = Granularity::FromBytes(j.at("granularity").get<uint64_t>());
        if (!g) return g.error().WithContext(impl->path);
        impl->gran = *g;
        impl->intent_log = j.at("intent_log").get<bool>();
        const Json& r = j.at("recovery");
        impl->recovery.clean_shutdown = r.at("clean_shutdown").get<bool>();
        impl->recovery.intent_regions = r.at("intent_regions").get<uint64_t>();
        impl->recovery.added_bytes = r.at("added_bytes").get<uint64_t>();
        impl->recovery.active_unknown = r.at("active_unknown").get<bool>();
        impl->recovery.problems = r.at("problems").get<std::vector<std::string>>();
      } catch (const Json::exception& e) {
        return Status::Corruption(impl->path + ": malformed info from the owner: " + e.what());
      }
      return std::unique_ptr<TrackerHandle>(new TrackerHandle(std::move(impl)));
    }
    if (fd.error().code() != StatusCode::kNotFound) return fd.error();
    // Nobody answers: open the directory ourselves, as without an owner.
    OpenOptions o;
    o.read_only = options.read_only;
    auto t = Tracker::Open(dir, o);
    if (t) {
      impl->owned = std::move(*t);
      impl->local = impl->owned.get();
      return std::unique_ptr<TrackerHandle>(new TrackerHandle(std::move(impl)));
    }
    if (t.error().code() != StatusCode::kBusy) return t.error();
    // Locked by a process that does not answer (yet): an owner starting up
    // binds its socket right after taking the lock.
    if (std::chrono::steady_clock::now() >= deadline) {
      return Status::Busy(dir + ": tracker is held by another process and no owner answers on " + impl->path);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

bool TrackerHandle::via_owner() const { return impl_->local == nullptr; }
int64_t TrackerHandle::owner_pid() const { return impl_->pid; }

std::array<uint8_t, 16> TrackerHandle::uuid() const { return impl_->local ? impl_->local->uuid() : impl_->uuid; }
uint64_t TrackerHandle::disk_size() const { return impl_->local ? impl_->local->disk_size() : impl_->disk_size; }
Granularity TrackerHandle::granularity() const {
  return impl_->local ? impl_->local->granularity() : impl_->gran;
}
const std::string& TrackerHandle::dir() const { return impl_->local ? impl_->local->dir() : impl_->dir; }
bool TrackerHandle::intent_log_enabled() const {
  return impl_->local ? impl_->local->intent_log_enabled() : impl_->intent_log;
}
const RecoveryInfo& TrackerHandle::recovery() const {
  return impl_->local ? impl_->local->recovery() : impl_->recovery;
}

Status TrackerHandle::Mark(uint64_t offset, uint64_t length) {
  if (impl_->local) return impl_->local->Mark(offset, length);
  STRATA_RETURN_IF_ERROR(impl_->Mutating());
  return impl_->CallStatus(Json{{"op", "mark"}, {"offset", offset}, {"length", length}});
}

Result<CheckpointInfo> TrackerHandle::Checkpoint(const std::string& name) {
  if (impl_->local) return impl_->local->Checkpoint(name);
  STRATA_RETURN_IF_ERROR(impl_->Mutating());
  STRATA_ASSIGN_OR_RETURN(Json r, impl_->Call(Json{{"op", "checkpoint"}, {"name", name}}));
  try {
    return CheckpointFromJson(r.at("checkpoint"));
  } catch (const Json::exception& e) {
    return Status::Corruption(impl_->path + ": malformed checkpoint from the owner: " + e.what());
  }
}

Status TrackerHandle::SetQuiesced(const std::string& name, bool quiesced) {
  if (impl_->local) return impl_->local->SetQuiesced(name, quiesced);
  STRATA_RETURN_IF_ERROR(impl_->Mutating());
  return impl_->CallStatus(Json{{"op", "set_quiesced"}, {"name", name}, {"quiesced", quiesced}});
}

Result<ExtentSet> TrackerHandle::ChangedSince(const std::string& name) {
  if (impl_->local) return impl_->local->ChangedSince(name);
  return impl_->CallSet(Json{{"op", "changed_since"}, {"name", name}});
}

Result<ExtentSet> TrackerHandle::ChangedBetween(const std::string& from, const std::string& to) {
  if (impl_->local) return impl_->local->ChangedBetween(from, to);
  return impl_->CallSet(Json{{"op", "changed_between"}, {"from", from}, {"to", to}});
}

Status TrackerHandle::Remove(const std::string& name) {
  if (impl_->local) return impl_->local->Remove(name);
  STRATA_RETURN_IF_ERROR(impl_->Mutating());
  return impl_->CallStatus(Json{{"op", "remove"}, {"name", name}});
}

Result<std::vector<CheckpointInfo>> TrackerHandle::List() {
  if (impl_->local) return impl_->local->List();
  STRATA_ASSIGN_OR_RETURN(Json r, impl_->Call(Json{{"op", "list"}}));
  std::vector<CheckpointInfo> out;
  try {
    for (const Json& c : r.at("checkpoints")) out.push_back(CheckpointFromJson(c));
  } catch (const Json::exception& e) {
    return Status::Corruption(impl_->path + ": malformed checkpoint list from the owner: " + e.what());
  }
  return out;
}

Status TrackerHandle::Flush() {
  if (impl_->local) return impl_->local->Flush();
  STRATA_RETURN_IF_ERROR(impl_->Mutating());
  return impl_->CallStatus(Json{{"op", "flush"}});
}

Status TrackerHandle::Close() {
  if (impl_->closed) return Status::InvalidArgument(impl_->dir + ": tracker handle is closed");
  impl_->closed = true;
  impl_->conn.Reset();
  if (impl_->owned) return impl_->owned->Close();
  return Status::Ok();
}

}  // namespace strata
