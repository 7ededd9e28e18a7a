// Quiesce daemon and its clients; see service.h and docs/design/quiesce.md.
//
// Wire protocol (one request and one reply per connection, '\n'-terminated;
// fields separated by '\t', records by '\x1e', lists by '\x1f'):
//   FREEZE deadline_ms force hook_dir confine backend qga_socket targets...
//     -> OK id mounts | ERR code message
//   THAW id -> OK expired frozen_ns mounts interrupted interruption | ERR code message
//   THAWALL -> OK (record: id expired frozen_ns mounts interrupted interruption)...
//   STATUS  -> OK pid backend
//              (record: id expired frozen_ms remaining_ms mounts interrupted interruption)...
#include "engine/quiesce/service.h"

#include "engine/quiesce/journal.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <thread>

#include "engine/quiesce/process.h"
#include "engine/quiesce/qga.h"

namespace strata::quiesce {
namespace {

namespace fs = std::filesystem;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

constexpr char kField = '\t';
constexpr char kRecord = '\x1e';
constexpr char kList = '\x1f';

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t p = s.find(sep, start);
    out.push_back(s.substr(start, p == std::string::npos ? std::string::npos : p - start));
    if (p == std::string::npos) break;
    start = p + 1;
  }
  return out;
}

std::string JoinList(const std::vector<std::string>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += kList;
    out += v[i];
  }
  return out;
}

std::vector<std::string> SplitList(const std::string& s) {
  return s.empty() ? std::vector<std::string>{} : Split(s, kList);
}

bool Clean(const std::string& s) {
  return s.find_first_of(std::string("\t\n") + kRecord + kList) == std::string::npos;
}

std::string Err(const Status& s) {
  std::string msg = s.message();
  for (char& c : msg) {
    if (c == '\n' || c == kField || c == kRecord || c == kList) c = ' ';
  }
  return "ERR" + std::string(1, kField) + std::to_string(static_cast<int>(s.code())) + kField + msg;
}

Status FromErr(const std::vector<std::string>& f) {
  if (f.size() < 3) return Status::Corruption("quiesce daemon: malformed reply");
  return Status(static_cast<StatusCode>(std::atoi(f[1].c_str())), f[2]);
}

int64_t ToInt(const std::string& s) { return std::strtoll(s.c_str(), nullptr, 10); }

std::string SockPath(const std::string& dir) { return dir + "/sock"; }

std::string Sanitized(std::string s) {
  for (char& c : s) {
    if (c == '\n' || c == kField || c == kRecord || c == kList) c = ' ';
  }
  return s;
}

Status EnsureDir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::FromErrno(ec.value(), dir + ": create state directory");
  ::chmod(dir.c_str(), 0700);
  return Status::Ok();
}

// Connects to the daemon; kNotFound when none listens.
Result<int> Connect(const std::string& dir) {
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::string path = SockPath(dir);
  if (path.size() >= sizeof addr.sun_path) {
    return Status::InvalidArgument(path + ": socket path too long");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno(errno, "socket");
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    ::close(fd);
    if (err == ENOENT || err == ECONNREFUSED) {
      return Status::NotFound("no quiesce daemon is running (" + path + ")");
    }
    return Status::FromErrno(err, path + ": connect");
  }
  return fd;
}

Status WriteAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, "quiesce daemon: send");
    off += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Result<std::string> ReadLine(int fd, milliseconds timeout) {
  std::string buf;
  auto end = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    size_t nl = buf.find('\n');
    if (nl != std::string::npos) return buf.substr(0, nl);
    if (buf.size() > (1u << 20)) return Status::Corruption("quiesce daemon: line too long");
    int left = static_cast<int>(
        duration_cast<milliseconds>(end - std::chrono::steady_clock::now()).count());
    if (left <= 0) return Status::Busy("quiesce daemon: no reply in time");
    pollfd p = {fd, POLLIN, 0};
    int r = ::poll(&p, 1, left);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Status::FromErrno(errno, "poll");
    if (r == 0) continue;
    char tmp[4096];
    ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == ECONNRESET) {
      // A daemon that decided to exit closed its socket with our connection
      // still unaccepted: it never read the request, so callers may spawn a
      // new daemon and send it again.
      return Status::NotFound("no quiesce daemon is running (it exited before reading the request)");
    }
    if (n < 0) return Status::FromErrno(errno, "quiesce daemon: recv");
    if (n == 0) return Status(StatusCode::kIoError, "quiesce daemon closed the connection");
    buf.append(tmp, static_cast<size_t>(n));
  }
}

// One request/reply; the reply's fields (first is "OK" or "ERR").
Result<std::vector<std::string>> Call(const std::string& dir, const std::string& request,
                                      milliseconds timeout) {
  STRATA_ASSIGN_OR_RETURN(int fd, Connect(dir));
  Status s = WriteAll(fd, request + "\n");
  Result<std::string> line = s.ok() ? ReadLine(fd, timeout) : Result<std::string>(s);
  ::close(fd);
  if (!line.has_value()) return line.error();
  auto f = Split(*line, kField);
  if (f[0] == "ERR") return FromErr(f);
  if (f[0] != "OK") return Status::Corruption("quiesce daemon: malformed reply '" + *line + "'");
  return f;
}

// ---- daemon -----------------------------------------------------------------

class Daemon {
 public:
  Daemon(const ServiceConfig& cfg, std::unique_ptr<Backend> backend)
      : cfg_(cfg), coordinator_(std::move(backend), Options(cfg)) {}

  std::string Handle(const std::string& line) {
    auto f = Split(line, kField);
    const std::string& cmd = f[0];
    if (cmd == "FREEZE" && f.size() >= 8) {
      if (f[5] != cfg_.backend || (f[5] == "qga" && f[6] != cfg_.qga_socket)) {
        return Err(Status::Busy("the running quiesce daemon uses backend " + cfg_.backend +
                                (cfg_.backend == "qga" ? " (" + cfg_.qga_socket + ")" : "") +
                                "; thaw its handles first"));
      }
      FreezeRequest r;
      r.deadline = milliseconds(ToInt(f[1]));
      r.force = f[2] == "1";
      r.hook_dir = f[3];
      r.confine_to = f[4];
      r.targets.assign(f.begin() + 7, f.end());
      auto h = coordinator_.Freeze(r);
      if (!h.has_value()) return Err(h.error());
      std::vector<std::string> mps;
      for (const auto& hs : coordinator_.Handles()) {
        if (hs.id == *h) mps = hs.mount_points;
      }
      return "OK" + std::string(1, kField) + std::to_string(*h) + kField + JoinList(mps);
    }
    if (cmd == "THAW" && f.size() == 2) {
      auto r = coordinator_.Thaw(static_cast<HandleId>(ToInt(f[1])));
      if (!r.has_value()) return Err(r.error());
      return "OK" + std::string(1, kField) + (r->expired ? "1" : "0") + kField +
             std::to_string(r->frozen_for.count()) + kField + JoinList(r->thawed) + kField +
             (r->interrupted ? "1" : "0") + kField + Sanitized(r->interruption);
    }
    if (cmd == "THAWALL") {
      std::string out = "OK";
      for (const auto& r : coordinator_.ThawAll()) {
        out += kField + (std::to_string(r.id) + kRecord + (r.expired ? "1" : "0") + kRecord +
                         std::to_string(r.frozen_for.count()) + kRecord + JoinList(r.thawed) +
                         kRecord + (r.interrupted ? "1" : "0") + kRecord +
                         Sanitized(r.interruption));
      }
      return out;
    }
    if (cmd == "STATUS") {
      std::string out = "OK" + std::string(1, kField) + std::to_string(::getpid()) + kField +
                        coordinator_.backend_name();
      auto now = Clock::now();
      for (const auto& h : coordinator_.Handles()) {
        int64_t frozen =
            duration_cast<milliseconds>((h.expired ? h.deadline : now) - h.frozen_at).count();
        int64_t left = duration_cast<milliseconds>(h.deadline - now).count();
        out += kField + (std::to_string(h.id) + kRecord + (h.expired ? "1" : "0") + kRecord +
                         std::to_string(frozen) + kRecord + std::to_string(left) + kRecord +
                         JoinList(h.mount_points) + kRecord + (h.interrupted ? "1" : "0") +
                         kRecord + Sanitized(h.interruption));
      }
      return out;
    }
    return Err(Status::InvalidArgument("quiesce daemon: bad request '" + cmd + "'"));
  }

  // Idle when nothing is held, or only expired handles nobody collected
  // for a minute.
  bool Idle(Clock::time_point last_activity) {
    if (coordinator_.Busy()) return false;  // e.g. a signal thaw in progress
    auto hs = coordinator_.Handles();
    if (hs.empty()) return true;
    for (const auto& h : hs) {
      if (!h.expired) return false;
    }
    return Clock::now() - last_activity > std::chrono::seconds(60);
  }

  Coordinator& coordinator() { return coordinator_; }

 private:
  static Coordinator::Options Options(const ServiceConfig& cfg) {
    Coordinator::Options o;
    o.protected_paths = cfg.protected_paths;
    o.protected_paths.push_back(cfg.state_dir);
    o.journal_dir = cfg.state_dir;
    o.on_step = TestSteps();
    return o;
  }

  // Test-only observation points, from the environment of the client that
  // spawned the daemon: STRATA_QUIESCE_TEST_STEP_SLEEP_US=N sleeps N us at
  // every step, STRATA_QUIESCE_TEST_STOP_AT=NAME stops the daemon (SIGSTOP)
  // at every step NAME, so a test can SIGKILL it exactly there.
  static std::function<void(const char*)> TestSteps() {
    const char* sleep_env = std::getenv("STRATA_QUIESCE_TEST_STEP_SLEEP_US");
    const char* stop_env = std::getenv("STRATA_QUIESCE_TEST_STOP_AT");
    if ((sleep_env == nullptr || *sleep_env == 0) && (stop_env == nullptr || *stop_env == 0)) {
      return nullptr;
    }
    int64_t sleep_us = sleep_env != nullptr ? std::strtoll(sleep_env, nullptr, 10) : 0;
    std::string stop_at = stop_env != nullptr ? stop_env : "";
    return [sleep_us, stop_at](const char* step) {
      if (sleep_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
      if (!stop_at.empty() && stop_at == step) ::raise(SIGSTOP);
    };
  }

  ServiceConfig cfg_;
  Coordinator coordinator_;
};

// Runs in the forked child. Never returns.
[[noreturn]] void DaemonMain(const ServiceConfig& cfg, int lock_fd, int ready_fd) {
  ::setsid();
  // Keep only what the daemon needs: the client's other descriptors (its
  // spawn.lock above all, whose flock would otherwise live as long as the
  // daemon) must not be inherited.
  int keep[] = {lock_fd, ready_fd};
  internal::CloseDescriptorsExcept(keep, 2);
  int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null >= 0) {
    ::dup2(null, 0);
    ::dup2(null, 1);
    ::close(null);
  }
  int log = ::open((cfg.state_dir + "/daemon.log").c_str(),
                   O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (log >= 0) {
    ::dup2(log, 2);
    ::close(log);
  }
  (void)lock_fd;  // held (flock) until we exit; O_CLOEXEC, so hooks never get it

  std::string path = SockPath(cfg.state_dir);
  ::unlink(path.c_str());
  int lfd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), std::min(path.size() + 1, sizeof addr.sun_path - 1));
  ::umask(077);
  if (lfd < 0 || ::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(lfd, 16) != 0) {
    std::fprintf(stderr, "strata quiesce daemon: %s: %s\n", path.c_str(), std::strerror(errno));
    ::_exit(1);
  }
  std::unique_ptr<Backend> backend = cfg.backend == "qga"
                                         ? MakeQgaBackend(cfg.qga_socket, milliseconds(20000))
                                         : MakeFifreezeBackend();
  {
    Daemon d(cfg, std::move(backend));
    (void)InstallSignalThaw(&d.coordinator());
    char ok = 'R';
    (void)!::write(ready_fd, &ok, 1);
    ::close(ready_fd);
    auto last = Clock::now();
    bool served = false;
    for (;;) {
      pollfd p = {lfd, POLLIN, 0};
      int r = ::poll(&p, 1, 200);
      if (r > 0) {
        int cfd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
        if (cfd >= 0) {
          auto line = ReadLine(cfd, milliseconds(5000));
          if (line.has_value()) (void)WriteAll(cfd, d.Handle(*line) + "\n");
          ::close(cfd);
          last = Clock::now();
          served = true;
        }
      }
      bool startup_grace = !served && Clock::now() - last < std::chrono::seconds(10);
      if (!startup_grace && d.Idle(last)) break;
    }
    // Stop listening, thaw (signal handler still armed), then disarm it
    // before the coordinator goes away.
    ::unlink(path.c_str());
    ::close(lfd);
    (void)d.coordinator().ThawAll();
    (void)InstallSignalThaw(nullptr);
  }
  ::_exit(0);
}

// Takes an flock; returns the fd (or -1 when `nonblock` and it is held).
Result<int> Lock(const std::string& path, bool nonblock) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno(errno, path);
  if (::flock(fd, LOCK_EX | (nonblock ? LOCK_NB : 0)) != 0) {
    int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) return -1;
    return Status::FromErrno(err, path + ": flock");
  }
  return fd;
}

Status SpawnDaemon(const ServiceConfig& cfg) {
  // We hold spawn.lock, so no daemon is starting: one that still holds
  // daemon.lock but did not answer is exiting. Wait for it to go.
  std::string lock_path = cfg.state_dir + "/daemon.lock";
  int lock_fd = -1;
  for (int i = 0; i < 3000; ++i) {
    STRATA_ASSIGN_OR_RETURN(lock_fd, Lock(lock_path, true));
    if (lock_fd >= 0) break;
    std::this_thread::sleep_for(milliseconds(10));
  }
  if (lock_fd < 0) {
    return Status::Busy(lock_path + ": held by a quiesce daemon that does not answer on " +
                        SockPath(cfg.state_dir));
  }
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) {
    ::close(lock_fd);
    return Status::FromErrno(errno, "pipe");
  }
  pid_t pid = ::fork();
  if (pid < 0) return Status::FromErrno(errno, "fork quiesce daemon");
  if (pid == 0) {
    ::close(pipefd[0]);
    DaemonMain(cfg, lock_fd, pipefd[1]);
  }
  ::close(pipefd[1]);
  ::close(lock_fd);  // the child keeps its copy (and the flock)
  char c = 0;
  pollfd p = {pipefd[0], POLLIN, 0};
  int r = ::poll(&p, 1, 10000);
  ssize_t n = r > 0 ? ::read(pipefd[0], &c, 1) : 0;
  ::close(pipefd[0]);
  if (n != 1 || c != 'R') {
    return Status(StatusCode::kIoError,
                  "quiesce daemon failed to start; see " + cfg.state_dir + "/daemon.log");
  }
  return Status::Ok();
}

}  // namespace

std::string DefaultStateDir() {
  const char* env = std::getenv("STRATA_QUIESCE_DIR");
  return env && *env ? env : "/run/strata/quiesce";
}

Result<std::pair<HandleId, std::vector<std::string>>> ServiceFreeze(const ServiceConfig& config,
                                                                    const FreezeRequest& request) {
  ServiceConfig cfg = config;
  if (cfg.state_dir.empty()) cfg.state_dir = DefaultStateDir();
  for (const auto& s : request.targets) {
    if (!Clean(s)) return Status::InvalidArgument("target contains a tab or newline");
  }
  if (!Clean(request.hook_dir) || !Clean(request.confine_to) || !Clean(cfg.qga_socket)) {
    return Status::InvalidArgument("path contains a tab or newline");
  }
  STRATA_RETURN_IF_ERROR(EnsureDir(cfg.state_dir));
  std::string req = "FREEZE";
  for (const std::string& f :
       {std::to_string(request.deadline.count()), std::string(request.force ? "1" : "0"),
        request.hook_dir, request.confine_to, cfg.backend, cfg.qga_socket}) {
    req += kField + f;
  }
  for (const auto& t : request.targets) req += kField + t;
  auto timeout = request.hook_timeout * 4 + milliseconds(60000);
  auto reply = Call(cfg.state_dir, req, timeout);
  if (!reply.has_value() && reply.error().code() == StatusCode::kNotFound) {
    STRATA_ASSIGN_OR_RETURN(int spawn, Lock(cfg.state_dir + "/spawn.lock", false));
    reply = Call(cfg.state_dir, req, timeout);
    if (!reply.has_value() && reply.error().code() == StatusCode::kNotFound) {
      Status s = SpawnDaemon(cfg);
      if (s.ok())
        reply = Call(cfg.state_dir, req, timeout);
      else
        reply = s;
    }
    ::close(spawn);
  }
  if (!reply.has_value()) return reply.error();
  const auto& f = *reply;
  if (f.size() < 3) return Status::Corruption("quiesce daemon: short FREEZE reply");
  return std::make_pair(static_cast<HandleId>(ToInt(f[1])), SplitList(f[2]));
}

Status PrepareStateDir(const std::string& dir) { return EnsureDir(dir); }

namespace {

ThawReport ParseReport(const std::vector<std::string>& f, size_t first) {
  ThawReport r;
  r.expired = f[first] == "1";
  r.frozen_for = std::chrono::nanoseconds(ToInt(f[first + 1]));
  r.thawed = SplitList(f[first + 2]);
  if (f.size() > first + 4) {
    r.interrupted = f[first + 3] == "1";
    r.interruption = f[first + 4];
  }
  return r;
}

}  // namespace

Result<ThawReport> ServiceThaw(const std::string& state_dir, HandleId id) {
  auto reply =
      Call(state_dir, "THAW" + std::string(1, kField) + std::to_string(id), milliseconds(120000));
  if (!reply.has_value()) {
    if (reply.error().code() == StatusCode::kNotFound &&
        reply.error().message().find("no quiesce daemon") != std::string::npos) {
      return Status::NotFound("quiesce handle " + std::to_string(id) +
                              " is unknown or already thawed (no daemon running)");
    }
    return reply.error();
  }
  const auto& f = *reply;
  if (f.size() < 4) return Status::Corruption("quiesce daemon: short THAW reply");
  ThawReport r = ParseReport(f, 1);
  r.id = id;
  return r;
}

Result<ThawAllReport> ThawAllAndRecover(const std::string& state_dir) {
  ThawAllReport out;
  auto reply = Call(state_dir, "THAWALL", milliseconds(120000));
  if (reply.has_value()) {
    for (size_t i = 1; i < reply->size(); ++i) {
      auto rec = Split((*reply)[i], kRecord);
      if (rec.size() < 4) continue;
      ThawReport r = ParseReport(rec, 1);
      r.id = static_cast<HandleId>(ToInt(rec[0]));
      out.thawed.push_back(r);
    }
  } else if (reply.error().code() != StatusCode::kNotFound) {
    return reply.error();
  }
  // Journals of processes that died holding freezes (the daemon's own
  // journal is skipped while it lives: it holds the flock).
  STRATA_ASSIGN_OR_RETURN(RecoveryReport rec, RecoverJournals(state_dir));
  out.recovered = std::move(rec.thawed);
  out.not_frozen = std::move(rec.not_frozen);
  out.not_recovered = std::move(rec.failed);
  out.live = std::move(rec.live);
  return out;
}

Result<ServiceStatus> GetServiceStatus(const std::string& state_dir) {
  ServiceStatus st;
  auto reply = Call(state_dir, "STATUS", milliseconds(10000));
  if (reply.has_value()) {
    const auto& f = *reply;
    st.running = true;
    if (f.size() >= 3) {
      st.pid = ToInt(f[1]);
      st.backend = f[2];
    }
    for (size_t i = 3; i < f.size(); ++i) {
      auto rec = Split(f[i], kRecord);
      if (rec.size() < 5) continue;
      ServiceHandle h;
      h.id = static_cast<HandleId>(ToInt(rec[0]));
      h.expired = rec[1] == "1";
      h.frozen_ms = ToInt(rec[2]);
      h.remaining_ms = ToInt(rec[3]);
      h.mount_points = SplitList(rec[4]);
      if (rec.size() >= 7) {
        h.interrupted = rec[5] == "1";
        h.interruption = rec[6];
      }
      if (!h.expired) {
        for (const auto& m : h.mount_points) ++st.counts[m];
      }
      st.handles.push_back(h);
    }
  } else if (reply.error().code() != StatusCode::kNotFound) {
    return reply.error();
  }
  STRATA_ASSIGN_OR_RETURN(auto stale, StaleJournalEntries(state_dir));
  st.damaged_journals = std::move(stale.damaged);
  for (const auto& e : stale.entries) {
    st.stale_frozen.push_back(e.backend == "fifreeze"
                                  ? e.mount_point
                                  : e.mount_point + " (" + e.backend + " " + e.target + ")");
  }
  return st;
}

}  // namespace strata::quiesce
