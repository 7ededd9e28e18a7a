// Coordinator: handles, per-filesystem counts, deadlines and the watchdog.
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <set>

#include "engine/quiesce/hooks.h"
#include "engine/quiesce/process.h"
#include "engine/quiesce/quiesce.h"

namespace strata::quiesce {
namespace {

std::string RealPathOr(const std::string& p) {
  char buf[PATH_MAX];
  if (::realpath(p.c_str(), buf) != nullptr) return buf;
  return p;
}

// The nearest existing ancestor of `p` (a repository may not exist yet).
std::string ExistingAncestor(std::string p) {
  struct stat st;
  while (!p.empty() && ::stat(p.c_str(), &st) != 0) {
    size_t slash = p.find_last_of('/');
    if (slash == std::string::npos) return ".";
    p = slash == 0 ? "/" : p.substr(0, slash);
  }
  return p.empty() ? "/" : p;
}

struct PendingHooks {
  std::vector<std::string> hooks;
  std::chrono::milliseconds timeout{0};
};

}  // namespace

Coordinator::Coordinator(std::unique_ptr<Backend> backend, Options options)
    : backend_(std::move(backend)), options_(std::move(options)) {
  backend_name_ = backend_->Name();
  if (!options_.confine_to.empty()) options_.confine_to = RealPathOr(options_.confine_to);
  watchdog_ = std::thread([this] { WatchdogLoop(); });
}

Coordinator::~Coordinator() {
  (void)ThawAll();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  watchdog_.join();
}

Result<Resolution> Coordinator::Resolve(const std::vector<std::string>& targets) const {
  return ResolveTargets(targets, options_.mountinfo_path, options_.sysfs_root);
}

Result<HandleId> Coordinator::Freeze(const FreezeRequest& request) {
  // Positive and at most a day: a freeze is a window, not a state (and the
  // bound keeps now() + deadline far from overflow).
  if (request.deadline.count() <= 0 || request.deadline > std::chrono::hours(24)) {
    return Status::InvalidArgument("quiesce deadline must be in (0, 24 h], got " +
                                   std::to_string(request.deadline.count()) + " ms");
  }
  STRATA_ASSIGN_OR_RETURN(Resolution res, Resolve(request.targets));

  // Safety: never freeze what we must write to, nor outside confine_to.
  STRATA_ASSIGN_OR_RETURN(auto mounts, ReadMountInfo(options_.mountinfo_path));
  std::map<std::string, std::string> refused;  // fs key -> reason
  if (!request.force) {
    auto root = FilesystemOfPath("/", mounts);
    if (root.has_value()) refused[root->Key()] = "it is the root filesystem";
    for (const std::string& p : options_.protected_paths) {
      auto f = FilesystemOfPath(ExistingAncestor(p), mounts);
      if (!f.has_value()) continue;
      std::string& why = refused[f->Key()];
      why += (why.empty() ? "" : "; ") + ("it holds protected path " + p);
    }
  }
  std::vector<std::string> confines;
  if (!options_.confine_to.empty()) confines.push_back(options_.confine_to);
  if (!request.confine_to.empty()) confines.push_back(RealPathOr(request.confine_to));
  for (const Filesystem& f : res.filesystems) {
    for (const std::string& confine : confines) {
      if (!PathWithin(f.mount_point, confine)) {
        return Status::InvalidArgument("refusing to freeze " + f.mount_point + ": outside " +
                                       confine + " (confinement)");
      }
    }
    auto it = refused.find(f.Key());
    if (it != refused.end()) {
      return Status::InvalidArgument("refusing to freeze " + f.mount_point + " [" + f.Key() +
                                     "]: " + it->second + " (use force to override)");
    }
  }

  std::vector<std::string> hooks;
  if (!request.hook_dir.empty()) {
    STRATA_ASSIGN_OR_RETURN(hooks, ListHooks(request.hook_dir));
    STRATA_RETURN_IF_ERROR(RunFreezeHooks(hooks, request.hook_timeout));
  }

  std::unique_lock<std::mutex> lock(mu_);
  // Freeze in reverse mount order: a filesystem mounted later may live on a
  // loop file of an earlier one, which must still accept its writes.
  std::vector<Filesystem> fresh;
  for (auto it = res.filesystems.rbegin(); it != res.filesystems.rend(); ++it) {
    if (counts_[it->Key()] == 0) fresh.push_back(*it);
  }
  // I/O is blocked from the start of FIFREEZE (writes stop before the
  // filesystem syncs), so the window is measured from here.
  Clock::time_point start = Clock::now();
  Status s = fresh.empty() ? Status::Ok() : backend_->Freeze(fresh);
  if (!s.ok()) {
    for (auto it = counts_.begin(); it != counts_.end();) {
      it = it->second == 0 ? counts_.erase(it) : std::next(it);
    }
    lock.unlock();
    Status h = RunThawHooks(hooks, request.hook_timeout);
    if (!h.ok()) return s.WithContext("(thaw hooks also failed: " + h.message() + ")");
    return s;
  }
  Handle h;
  h.status.id = next_id_++;
  h.status.frozen_at = start;
  h.status.deadline = h.status.frozen_at + request.deadline;
  for (const Filesystem& f : res.filesystems) {
    ++counts_[f.Key()];
    by_key_[f.Key()] = f;
    h.status.mount_points.push_back(f.mount_point);
  }
  h.filesystems = res.filesystems;
  h.hooks = std::move(hooks);
  h.hook_timeout = request.hook_timeout;
  HandleId id = h.status.id;
  handles_.emplace(id, std::move(h));
  lock.unlock();
  cv_.notify_all();
  return id;
}

Status Coordinator::ReleaseLocked(Handle& h, std::vector<std::string>* thawed) {
  std::vector<Filesystem> to_thaw;  // mountinfo order = reverse of freeze
  for (const Filesystem& f : h.filesystems) {
    auto it = counts_.find(f.Key());
    if (it == counts_.end()) continue;
    if (--it->second <= 0) {
      to_thaw.push_back(f);
      counts_.erase(it);
    }
  }
  for (const auto& f : to_thaw) thawed->push_back(f.mount_point);
  if (to_thaw.empty()) return Status::Ok();
  return backend_->Thaw(to_thaw);
}

Result<ThawReport> Coordinator::Thaw(HandleId id) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = handles_.find(id);
  if (it == handles_.end()) {
    return Status::NotFound("quiesce handle " + std::to_string(id) +
                            " is unknown or already thawed");
  }
  Handle h = std::move(it->second);
  handles_.erase(it);
  ThawReport rep;
  rep.id = id;
  rep.expired = h.status.expired;
  Status s;
  if (h.status.expired) {
    rep.frozen_for = h.thawed_at - h.status.frozen_at;
    lock.unlock();
  } else {
    s = ReleaseLocked(h, &rep.thawed);
    rep.frozen_for = Clock::now() - h.status.frozen_at;
    lock.unlock();
    Status hs = RunThawHooks(h.hooks, h.hook_timeout);
    if (s.ok()) s = hs;
  }
  cv_.notify_all();
  if (!s.ok()) return s.WithContext("thaw of handle " + std::to_string(id));
  return rep;
}

std::vector<ThawReport> Coordinator::ThawAll() {
  std::vector<HandleId> ids;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, h] : handles_) ids.push_back(id);
  }
  std::vector<ThawReport> out;
  // Newest first, so nested handles unwind like a stack.
  for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
    auto r = Thaw(*it);
    if (r.has_value()) out.push_back(*r);
  }
  return out;
}

std::vector<HandleStatus> Coordinator::Handles() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<HandleStatus> out;
  for (const auto& [id, h] : handles_) out.push_back(h.status);
  return out;
}

std::map<std::string, int> Coordinator::Counts() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, int> out;
  for (const auto& [key, n] : counts_) {
    if (n > 0) out[by_key_.at(key).mount_point] = n;
  }
  return out;
}

bool Coordinator::Quiesced(HandleId id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = handles_.find(id);
  return it != handles_.end() && !it->second.status.expired;
}

void Coordinator::WatchdogLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    Clock::time_point next = Clock::time_point::max();
    for (const auto& [id, h] : handles_) {
      if (!h.status.expired) next = std::min(next, h.status.deadline);
    }
    if (next == Clock::time_point::max()) {
      cv_.wait(lock);
      continue;
    }
    if (Clock::now() < next) {
      cv_.wait_until(lock, next);
      continue;  // re-scan: handles may have changed
    }
    std::vector<PendingHooks> pending;
    Clock::time_point now = Clock::now();
    for (auto& [id, h] : handles_) {
      if (h.status.expired || h.status.deadline > now) continue;
      std::vector<std::string> thawed;
      Status s = ReleaseLocked(h, &thawed);
      if (!s.ok()) {
        std::fprintf(stderr, "strata quiesce watchdog: handle %llu: %s\n",
                     static_cast<unsigned long long>(id), s.ToString().c_str());
      }
      h.status.expired = true;
      h.thawed_at = now;
      pending.push_back({h.hooks, h.hook_timeout});
    }
    lock.unlock();
    for (const auto& p : pending) {
      Status s = RunThawHooks(p.hooks, p.timeout);
      if (!s.ok()) std::fprintf(stderr, "strata quiesce watchdog: %s\n", s.ToString().c_str());
    }
    lock.lock();
  }
}

// ---- signals --------------------------------------------------------------

namespace {
std::atomic<Coordinator*> g_signal_coordinator{nullptr};
int g_signal_pipe[2] = {-1, -1};

void OnSignal(int sig) {
  unsigned char b = static_cast<unsigned char>(sig);
  int saved = errno;
  if (g_signal_pipe[1] >= 0) (void)!::write(g_signal_pipe[1], &b, 1);
  errno = saved;
}

void SignalThread() {
  for (;;) {
    unsigned char b;
    ssize_t n = ::read(g_signal_pipe[0], &b, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n != 1) return;
    if (Coordinator* c = g_signal_coordinator.load()) (void)c->ThawAll();
    ::signal(b, SIG_DFL);
    ::raise(b);
  }
}
}  // namespace

Status InstallSignalThaw(Coordinator* coordinator) {
  static std::once_flag once;
  static Status init_status;
  std::call_once(once, [] {
    if (::pipe2(g_signal_pipe, O_CLOEXEC) != 0) {
      init_status = Status::FromErrno(errno, "pipe for signal thaw");
      return;
    }
    std::thread(SignalThread).detach();
  });
  STRATA_RETURN_IF_ERROR(init_status);
  g_signal_coordinator.store(coordinator);
  struct sigaction sa = {};
  sa.sa_handler = coordinator != nullptr ? OnSignal : SIG_DFL;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM}) {
    if (::sigaction(sig, &sa, nullptr) != 0) return Status::FromErrno(errno, "sigaction");
  }
  return Status::Ok();
}

// ---- RunQuiesced ------------------------------------------------------------

Result<QuiescedResult> RunQuiesced(Coordinator& coordinator, const QuiesceRequest& request,
                                   const std::function<Status()>& inside) {
  FreezeRequest fr;
  fr.targets = request.targets;
  fr.deadline = request.deadline;
  fr.hook_dir = request.hook_dir;
  fr.force = request.force;
  fr.confine_to = request.confine_to;
  STRATA_ASSIGN_OR_RETURN(HandleId id, coordinator.Freeze(fr));
  QuiescedResult out;
  for (const auto& h : coordinator.Handles()) {
    if (h.id == id) out.mount_points = h.mount_points;
  }
  Status work = inside ? inside() : Status::Ok();
  if (work.ok() && !request.exec_command.empty()) {
    auto rc = internal::RunProcess({"/bin/sh", "-c", request.exec_command},
                                   request.exec_timeout.count() > 0
                                       ? request.exec_timeout
                                       : request.deadline + std::chrono::minutes(5));
    if (!rc.has_value()) {
      work = rc.error().WithContext("--exec");
    } else {
      out.exec_exit_code = *rc;
      if (*rc != 0) {
        work = Status(StatusCode::kIoError, "--exec '" + request.exec_command +
                                                "' exited with status " + std::to_string(*rc));
      }
    }
  }
  auto rep = coordinator.Thaw(id);
  if (!work.ok()) return work;
  if (!rep.has_value()) return rep.error();
  out.quiesced = !rep->expired;
  out.frozen_for = rep->frozen_for;
  return out;
}

}  // namespace strata::quiesce
