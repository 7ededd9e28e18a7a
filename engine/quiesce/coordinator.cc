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
#include "strata/quiesce.h"
#include "engine/quiesce/journal.h"

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

std::vector<JournalEntry> Entries(const Backend& backend, const std::vector<Filesystem>& fss) {
  std::vector<JournalEntry> out;
  for (const Filesystem& f : fss) {
    out.push_back({backend.Name(), backend.RecoveryTarget(), f.major, f.minor, f.mount_point});
  }
  return out;
}

std::string Joined(const std::vector<std::string>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? " " : "") + v[i];
  return out;
}

}  // namespace

Coordinator::Coordinator(std::unique_ptr<Backend> backend, Options options)
    : backend_(std::move(backend)), options_(std::move(options)) {
  backend_name_ = backend_->Name();
  if (!options_.confine_to.empty()) options_.confine_to = RealPathOr(options_.confine_to);
  if (!options_.journal_dir.empty()) {
    journal_ = std::make_unique<FreezeJournal>(options_.journal_dir);
  }
  if (options_.on_step) backend_->SetStepHook(options_.on_step);
  watchdog_ = std::thread([this] { WatchdogLoop(); });
}

class Coordinator::Activity {
 public:
  explicit Activity(const Coordinator* c) : c_(const_cast<Coordinator*>(c)) {
    std::lock_guard<std::mutex> lock(c_->mu_);
    ++c_->active_;
  }
  ~Activity() {
    {
      std::lock_guard<std::mutex> lock(c_->mu_);
      --c_->active_;
    }
    c_->cv_.notify_all();
  }

 private:
  Coordinator* c_;
};

Coordinator::~Coordinator() {
  (void)ThawAll();
  {
    std::unique_lock<std::mutex> lock(mu_);
    // A thaw on another thread (signal helper, watchdog) must finish with
    // the backend before it goes away.
    cv_.wait(lock, [&] { return active_ == 0; });
    stopping_ = true;
  }
  cv_.notify_all();
  watchdog_.join();
}

bool Coordinator::Busy() const {
  std::lock_guard<std::mutex> lock(mu_);
  return active_ > 0;
}

Result<Resolution> Coordinator::Resolve(const std::vector<std::string>& targets) const {
  return ResolveTargets(targets, options_.mountinfo_path, options_.sysfs_root);
}

Result<HandleId> Coordinator::Freeze(const FreezeRequest& request) {
  Activity activity(this);
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
  }

  // 1. Hooks, counted: "freeze" runs for those no other handle holds.
  std::vector<std::string> fresh_hooks;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] {
      for (const auto& h : hooks) {
        auto it = hook_refs_.find(h);
        if (it != hook_refs_.end() && it->second.busy) return false;
      }
      return true;
    });
    for (const auto& h : hooks) {
      Ref& r = hook_refs_[h];
      if (r.count++ == 0) {
        r.busy = true;
        fresh_hooks.push_back(h);
      }
    }
  }
  Status s = RunFreezeHooks(fresh_hooks, request.hook_timeout);  // rolls back itself
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& h : fresh_hooks) {
      Ref& r = hook_refs_[h];
      r.busy = false;
      r.frozen = s.ok();
    }
  }
  cv_.notify_all();
  if (!s.ok()) {
    Status r = Release({}, hooks, request.hook_timeout, nullptr);
    if (!r.ok()) return s.WithContext("(thaw hooks also failed: " + r.message() + ")");
    return s;
  }

  // 2. Filesystems, counted: the backend freezes those not frozen yet, in
  // reverse mount order (a filesystem mounted later may live on a loop file
  // of an earlier one, which must still accept its writes).
  std::vector<Filesystem> fresh;
  // A backend that thaws all or nothing must see no other call in flight:
  // a thaw elsewhere would thaw what this call freezes (see Release).
  std::unique_lock<std::mutex> exclusive;
  if (!backend_->CanThawPart()) exclusive = std::unique_lock<std::mutex>(backend_mu_);
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] {
      for (const auto& f : res.filesystems) {
        auto it = fs_refs_.find(f.Key());
        if (it != fs_refs_.end() && it->second.busy) return false;
      }
      return true;
    });
    for (auto it = res.filesystems.rbegin(); it != res.filesystems.rend(); ++it) {
      by_key_[it->Key()] = *it;
      Ref& r = fs_refs_[it->Key()];
      ++r.count;  // held from now on: another handle's thaw cannot drop it to 0
      if (!r.frozen) {
        r.busy = true;
        fresh.push_back(*it);
      }
    }
  }
  // I/O is blocked from the start of FIFREEZE (writes stop before the
  // filesystem syncs), so the window is measured from here, just before the
  // journal write and the backend freeze; the backend must be done by the
  // handle's deadline.
  Clock::time_point start = Clock::now();
  Clock::time_point deadline = start + request.deadline;
  s = FreezeFilesystems(fresh, deadline);
  HandleId id = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const Filesystem& f : fresh) {
      Ref& r = fs_refs_[f.Key()];
      r.busy = false;
      r.frozen = s.ok();
    }
    if (s.ok()) {
      Handle h;
      h.status.id = id = next_id_++;
      h.status.frozen_at = start;
      h.status.deadline = deadline;
      for (const Filesystem& f : res.filesystems) h.status.mount_points.push_back(f.mount_point);
      h.filesystems = res.filesystems;
      h.hooks = hooks;
      h.hook_timeout = request.hook_timeout;
      handles_.emplace(id, std::move(h));
    }
  }
  cv_.notify_all();  // waiters on busy flags, and the watchdog (new deadline)
  if (exclusive.owns_lock()) exclusive.unlock();
  if (!s.ok()) {
    Status r = Release(res.filesystems, hooks, request.hook_timeout, nullptr);
    if (!r.ok()) return s.WithContext("(release also failed: " + r.message() + ")");
    return s;
  }
  return id;
}

void Coordinator::Step(const char* name) const {
  if (options_.on_step) options_.on_step(name);
}

Status Coordinator::FreezeFilesystems(const std::vector<Filesystem>& fss,
                                      Clock::time_point deadline) {
  if (fss.empty()) return Status::Ok();
  if (journal_) {
    // Durable before the freeze: a crash from here on leaves a record.
    Status j = journal_->Intend(Entries(*backend_, fss));
    if (!j.ok()) return j.WithContext("freeze journal");
    Step("journaled");
  }
  Status s = backend_->Freeze(fss, deadline);
  if (!s.ok()) {
    // The backend rolled back: nothing of `fss` is frozen.
    if (journal_) (void)journal_->Thawed(Entries(*backend_, fss));
    return s;
  }
  Step("frozen");
  return Status::Ok();
}

Status Coordinator::ThawFilesystems(const std::vector<Filesystem>& fss) {
  if (fss.empty()) return Status::Ok();
  Status s = backend_->Thaw(fss);
  Step("thawed");
  // A failed thaw (other than "not frozen") stays in the journal, so that
  // recovery tries again.
  if (journal_ && (s.ok() || s.code() == StatusCode::kInvalidArgument)) {
    Status j = journal_->Thawed(Entries(*backend_, fss));
    if (!j.ok() && s.ok()) s = j.WithContext("thawed, but the freeze journal");
    Step("unjournaled");
  }
  return s;
}

Status Coordinator::Release(const std::vector<Filesystem>& fss,
                            const std::vector<std::string>& hooks,
                            std::chrono::milliseconds hook_timeout,
                            std::vector<std::string>* thawed) {
  // 1. Filesystems whose count reaches zero are thawed. A backend that
  // cannot thaw part of its set thaws everything it holds; the rest is then
  // frozen again and its holders are told their window had a gap.
  std::vector<Filesystem> to_thaw, refreeze;
  Clock::time_point refreeze_deadline = Clock::time_point::max();
  // All-or-nothing backends: no other filesystem call may be in flight, so
  // that "the rest" below is everything the backend holds (every busy flag
  // on a filesystem is set and cleared under backend_mu_ for them).
  std::unique_lock<std::mutex> exclusive;
  if (!backend_->CanThawPart()) exclusive = std::unique_lock<std::mutex>(backend_mu_);
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] {
      for (const auto& f : fss) {
        auto it = fs_refs_.find(f.Key());
        if (it != fs_refs_.end() && it->second.busy) return false;
      }
      return true;
    });
    for (const Filesystem& f : fss) {  // mount order: thaw parents first
      auto it = fs_refs_.find(f.Key());
      if (it == fs_refs_.end()) continue;
      if (--it->second.count > 0) continue;
      if (it->second.frozen) {
        it->second.busy = true;
        to_thaw.push_back(f);
      } else {
        fs_refs_.erase(it);
      }
    }
    if (!to_thaw.empty() && !backend_->CanThawPart()) {
      for (auto& [key, r] : fs_refs_) {
        if (r.count > 0 && r.frozen && !r.busy) {
          r.busy = true;
          refreeze.push_back(by_key_.at(key));
        }
      }
      for (const auto& [id, h] : handles_) {
        if (h.status.expired) continue;
        for (const Filesystem& f : h.filesystems) {
          for (const Filesystem& g : refreeze) {
            if (f.Key() == g.Key()) refreeze_deadline = std::min(refreeze_deadline, h.status.deadline);
          }
        }
      }
    }
  }
  Status s;
  if (!to_thaw.empty()) {
    std::vector<Filesystem> all = to_thaw;
    all.insert(all.end(), refreeze.begin(), refreeze.end());
    s = ThawFilesystems(all);
    if (thawed != nullptr) {
      for (const Filesystem& f : to_thaw) thawed->push_back(f.mount_point);
    }
    Status rs;
    std::vector<std::string> gap;
    if (!refreeze.empty()) {
      for (const Filesystem& f : refreeze) gap.push_back(f.mount_point);
      if (refreeze_deadline == Clock::time_point::max()) {
        refreeze_deadline = Clock::now() + kDefaultDeadline;
      }
      rs = FreezeFilesystems(std::vector<Filesystem>(refreeze.rbegin(), refreeze.rend()),
                             refreeze_deadline);
      if (!rs.ok()) {
        std::fprintf(stderr, "strata quiesce: could not freeze %s again: %s\n",
                     Joined(gap).c_str(), rs.ToString().c_str());
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const Filesystem& f : to_thaw) {
        auto it = fs_refs_.find(f.Key());
        if (it != fs_refs_.end() && it->second.count == 0) fs_refs_.erase(it);
      }
      for (const Filesystem& f : refreeze) {
        Ref& r = fs_refs_[f.Key()];
        r.busy = false;
        r.frozen = rs.ok();
      }
      if (!refreeze.empty()) {
        std::string why = backend_name_ + " thawed " + Joined(gap) +
                          (rs.ok() ? " and froze it again"
                                   : " and could not freeze it again (" + rs.message() + ")") +
                          " while another handle was thawed (it cannot thaw part of its set)";
        for (auto& [id, h] : handles_) {
          if (h.status.expired) continue;
          for (const Filesystem& f : h.filesystems) {
            bool hit = false;
            for (const Filesystem& g : refreeze) hit = hit || f.Key() == g.Key();
            if (hit && !h.status.interrupted) {
              h.status.interrupted = true;
              h.status.interruption = why;
            }
          }
        }
      }
    }
    cv_.notify_all();
  }
  if (exclusive.owns_lock()) exclusive.unlock();

  // 2. Hooks whose count reaches zero run "thaw", after the filesystems.
  std::vector<std::string> thaw_hooks;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] {
      for (const auto& h : hooks) {
        auto it = hook_refs_.find(h);
        if (it != hook_refs_.end() && it->second.busy) return false;
      }
      return true;
    });
    for (const auto& h : hooks) {
      auto it = hook_refs_.find(h);
      if (it == hook_refs_.end() || --it->second.count > 0) continue;
      if (it->second.frozen) {
        it->second.busy = true;
        thaw_hooks.push_back(h);
      } else {
        hook_refs_.erase(it);  // its "freeze" failed and was rolled back
      }
    }
  }
  Status hs = RunThawHooks(thaw_hooks, hook_timeout);  // reverse name order
  if (!thaw_hooks.empty()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& h : thaw_hooks) {
        auto it = hook_refs_.find(h);
        if (it != hook_refs_.end() && it->second.count == 0) hook_refs_.erase(it);
      }
    }
    cv_.notify_all();
  }
  return s.ok() ? hs : s;
}

Result<ThawReport> Coordinator::Thaw(HandleId id) {
  Activity activity(this);
  std::unique_lock<std::mutex> lock(mu_);
  auto it = handles_.find(id);
  if (it == handles_.end()) {
    return Status::NotFound("quiesce handle " + std::to_string(id) +
                            " is unknown or already thawed");
  }
  Handle h = std::move(it->second);
  handles_.erase(it);
  lock.unlock();
  cv_.notify_all();
  ThawReport rep;
  rep.id = id;
  rep.expired = h.status.expired;
  rep.interrupted = h.status.interrupted;
  rep.interruption = h.status.interruption;
  if (h.status.expired) {  // the watchdog released it
    rep.frozen_for = h.thawed_at - h.status.frozen_at;
    return rep;
  }
  Status s = Release(h.filesystems, h.hooks, h.hook_timeout, &rep.thawed);
  rep.frozen_for = Clock::now() - h.status.frozen_at;
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
  for (const auto& [key, r] : fs_refs_) {
    if (r.count > 0) out[by_key_.at(key).mount_point] = r.count;
  }
  return out;
}

bool Coordinator::Quiesced(HandleId id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = handles_.find(id);
  return it != handles_.end() && !it->second.status.expired && !it->second.status.interrupted;
}

void Coordinator::WatchdogLoop() {
  struct Job {
    HandleId id;
    std::vector<Filesystem> filesystems;
    std::vector<std::string> hooks;
    std::chrono::milliseconds hook_timeout;
  };
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
    // Mark expired under the lock (Quiesced() is false from here on), then
    // release outside it: the thaw never waits for this mutex.
    std::vector<Job> jobs;
    ++active_;  // the releases below run outside the lock
    Clock::time_point now = Clock::now();
    for (auto& [id, h] : handles_) {
      if (h.status.expired || h.status.deadline > now) continue;
      h.status.expired = true;
      h.thawed_at = now;
      jobs.push_back({id, h.filesystems, h.hooks, h.hook_timeout});
    }
    lock.unlock();
    for (const Job& j : jobs) {
      Status s = Release(j.filesystems, j.hooks, j.hook_timeout, nullptr);
      if (!s.ok()) {
        std::fprintf(stderr, "strata quiesce watchdog: handle %llu: %s\n",
                     static_cast<unsigned long long>(j.id), s.ToString().c_str());
      }
    }
    lock.lock();
    --active_;
    cv_.notify_all();
  }
}

// ---- signals --------------------------------------------------------------

namespace {
std::atomic<Coordinator*> g_signal_coordinator{nullptr};
// Held while the helper thread thaws, so uninstalling waits for it.
std::mutex g_signal_mu;
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
    {
      std::lock_guard<std::mutex> lock(g_signal_mu);
      if (Coordinator* c = g_signal_coordinator.load()) (void)c->ThawAll();
    }
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
  {
    std::lock_guard<std::mutex> lock(g_signal_mu);
    g_signal_coordinator.store(coordinator);
  }
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
  out.quiesced = rep->quiesced();
  if (rep->expired) {
    out.not_quiesced_reason = "the freeze deadline (" + std::to_string(request.deadline.count()) +
                              " ms) expired inside the window";
  } else if (rep->interrupted) {
    out.not_quiesced_reason = rep->interruption;
  }
  out.frozen_for = rep->frozen_for;
  return out;
}

}  // namespace strata::quiesce
