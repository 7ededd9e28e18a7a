// Consistent checkpoints: handle-based, counted, deadline-bounded
// filesystem freeze/thaw (issue 6). Public API of strata_quiesce.
//
// A Coordinator owns one Backend (FIFREEZE ioctls, the QEMU guest agent, or a
// fake for tests). Freeze(request) resolves the request's targets (block
// devices, partitions, dm/LVM volumes, mount points) to mounted filesystems,
// runs the request's hook scripts with "freeze", freezes every filesystem
// whose count goes from 0 to 1, and returns a handle. Thaw(handle) undoes
// exactly what that handle did: counts go down, filesystems whose count
// reaches 0 are thawed, then the hooks run with "thaw" in reverse order.
// Every handle has a deadline; a watchdog thread thaws expired handles so a
// crashed or stuck controller never leaves a filesystem frozen, and the
// handle then reports `expired`, i.e. the work done under it is NOT quiesced.
// Hook scripts are counted like filesystems: "freeze" runs on a hook's first
// reference, "thaw" on its last. With Options::journal_dir, every freeze is
// written to a journal (journal.h) before it happens.
//
// See docs/design/quiesce.md for the design, the CLI and crash recovery.
//
// Thread safety: all Coordinator methods may be called from any thread. One
// internal mutex guards the handles and counts; it is never held across a
// backend call, a journal write or a hook run, so a slow filesystem, agent
// or hook never delays the deadline watchdog's bookkeeping or other
// handles' filesystems.
#ifndef STRATA_QUIESCE_H_
#define STRATA_QUIESCE_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "strata/quiesce_resolve.h"
#include "strata/status.h"

namespace strata::quiesce {

class FreezeJournal;  // journal.h (internal)

using Clock = std::chrono::steady_clock;
using HandleId = uint64_t;

inline constexpr std::chrono::milliseconds kDefaultDeadline{10000};

// Freezes and thaws sets of filesystems. Thread safety: the Coordinator may
// call a backend from several threads at once, but never with the same
// filesystem in two calls at the same time.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string Name() const = 0;
  // What crash recovery needs besides Name() to reach the frozen set (the
  // agent's socket for qga); "" when nothing. Written to the journal.
  virtual std::string RecoveryTarget() const { return ""; }
  // Whether Thaw may be given part of what this backend holds frozen. When
  // false (qemu-ga thaws everything), the Coordinator thaws the whole set,
  // freezes the rest again and marks the handles holding the rest as
  // interrupted (not quiesced).
  virtual bool CanThawPart() const { return true; }
  // Freezes every filesystem of `fss` (none of them is frozen by this
  // coordinator yet). On error nothing of `fss` may stay frozen: the backend
  // rolls back what it froze before returning. Backends that can bound their
  // work (qga) return kBusy once `deadline` passes; a FIFREEZE ioctl cannot
  // be interrupted. Errors: kUnsupported (the filesystem cannot be frozen,
  // EOPNOTSUPP), kBusy (frozen by someone else, or deadline), kNotFound (the
  // mount point no longer holds that filesystem), kIoError.
  virtual Status Freeze(const std::vector<Filesystem>& fss, Clock::time_point deadline) = 0;
  // Thaws every filesystem of `fss`; tries all of them and returns the first
  // error.
  virtual Status Thaw(const std::vector<Filesystem>& fss) = 0;

  // Test observation points ("froze-one", "thawed-one"); see
  // Coordinator::Options::on_step. Set before the backend is used.
  void SetStepHook(std::function<void(const char*)> hook) { step_ = std::move(hook); }

 protected:
  void Step(const char* name) const {
    if (step_) step_(name);
  }

 private:
  std::function<void(const char*)> step_;
};

// FIFREEZE/FITHAW ioctls. Freeze opens each mount point, checks that its
// st_dev is the filesystem's device (kNotFound if the mount changed since
// resolution), freezes through that descriptor and keeps it; Thaw uses the
// same descriptor, so a filesystem mounted over the mount point meanwhile is
// never thawed by mistake. EBUSY on freeze (frozen by someone else) is
// kBusy, EOPNOTSUPP is kUnsupported; EINVAL on thaw (not frozen) is
// reported as kInvalidArgument.
std::unique_ptr<Backend> MakeFifreezeBackend();

// Records every call and keeps a per-mount "frozen" flag; for tests and
// --backend fake. Freeze fails (without freezing anything) for mount points
// listed in fail_freeze, and when a filesystem is already frozen (kBusy, like
// FIFREEZE's EBUSY).
class FakeBackend : public Backend {
 public:
  struct State {
    std::mutex mu;  // held by Freeze/Thaw; lock it to read while calls run
    std::vector<std::string> log;  // "freeze /a /b", "thaw /b"
    std::map<std::string, bool> frozen;
    std::vector<std::string> fail_freeze;
    bool can_thaw_part = true;  // false: behave like qemu-ga (see Backend)
    std::chrono::milliseconds delay{0};  // each call sleeps this long
  };
  explicit FakeBackend(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::string Name() const override { return "fake"; }
  bool CanThawPart() const override { return state_->can_thaw_part; }
  Status Freeze(const std::vector<Filesystem>& fss, Clock::time_point deadline) override;
  Status Thaw(const std::vector<Filesystem>& fss) override;

 private:
  std::shared_ptr<State> state_;
};

struct FreezeRequest {
  // Block devices (/dev/loop0, loop0, /dev/mapper/vg-lv), partitions, or
  // paths (a mount point or any path on the filesystem).
  std::vector<std::string> targets;
  std::chrono::milliseconds deadline = kDefaultDeadline;
  // Directory of hook executables (QEMU fsfreeze-hook.d convention); empty
  // for none.
  std::string hook_dir;
  std::chrono::milliseconds hook_timeout{30000};
  // Allow the root filesystem and filesystems holding protected paths.
  bool force = false;
  // Like Options::confine_to, for this request only (empty: none).
  std::string confine_to;
};

struct HandleStatus {
  HandleId id = 0;
  std::vector<std::string> mount_points;  // what the request resolved to
  Clock::time_point frozen_at;
  Clock::time_point deadline;
  bool expired = false;  // the watchdog thawed it: not quiesced
  // Some of its filesystems were thawed and frozen again while it held them
  // (a backend that cannot thaw part of its set): not quiesced.
  bool interrupted = false;
  std::string interruption;  // what happened, for the report
};

struct ThawReport {
  HandleId id = 0;
  bool expired = false;                   // window expired before this thaw
  bool interrupted = false;               // see HandleStatus::interrupted
  std::string interruption;
  std::chrono::nanoseconds frozen_for{};  // freeze to thaw (or to expiry)
  std::vector<std::string> thawed;        // mount points whose count hit 0 now
  // Whether the work done under the handle is quiesced.
  bool quiesced() const { return !expired && !interrupted; }
};

class Coordinator {
 public:
  struct Options {
    // The filesystems holding these paths (tracker state, repository) and
    // the root filesystem are refused unless FreezeRequest::force.
    std::vector<std::string> protected_paths;
    // When non-empty, every filesystem to freeze must be mounted at or below
    // this directory, force or not (tests confine themselves to a TempDir).
    std::string confine_to;
    // Sources for target resolution; defaults read the live system.
    std::string mountinfo_path = "/proc/self/mountinfo";
    std::string sysfs_root = "/sys";
    // When non-empty, every freeze is journaled in this directory before it
    // happens (journal.h), so RecoverJournals can thaw it after a crash.
    std::string journal_dir;
    // Test observation points, called on the thread doing the work:
    // "journaled" (freeze intents durable, before the backend freezes),
    // "froze-one" / "thawed-one" (each FIFREEZE / FITHAW), "frozen" (backend
    // freeze done), "thawed" (backend thaw done), "unjournaled" (thaw
    // records durable).
    std::function<void(const char*)> on_step;
  };

  Coordinator(std::unique_ptr<Backend> backend, Options options);
  // Thaws everything still frozen, waits for operations still running on
  // other threads (a signal thaw, a watchdog release), stops the watchdog.
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  const std::string& backend_name() const { return backend_name_; }

  // Resolves the targets without freezing (what --dry-run prints).
  Result<Resolution> Resolve(const std::vector<std::string>& targets) const;

  // Freezes the request's filesystems (counted) and returns a new handle.
  // Order: hooks "freeze" (those not yet held by another handle), journal,
  // filesystem freeze (those not yet frozen). If a hook or filesystem is
  // being frozen or thawed by another call, waits for that first. Errors:
  // kInvalidArgument (no targets, protected or outside confine_to, deadline
  // not in (0, 24 h], an untrusted hook), kNotFound (a target that does not
  // resolve), journal, backend and hook errors. On error nothing changes:
  // hooks that ran "freeze" get "thaw" again.
  Result<HandleId> Freeze(const FreezeRequest& request);

  // Thaws what `id` froze. kNotFound for an unknown or already-thawed handle
  // (and nothing changes). An expired handle thaws nothing more and reports
  // expired = true. A backend thaw error is returned after the handle is
  // released (its counts are dropped either way).
  Result<ThawReport> Thaw(HandleId id);

  // Thaws every handle; returns the reports of the handles thawed.
  std::vector<ThawReport> ThawAll();

  // Live handles (including expired ones not yet collected by Thaw).
  std::vector<HandleStatus> Handles() const;
  // Mount point -> freeze count, only entries with count > 0.
  std::map<std::string, int> Counts() const;
  // Whether `id` is live, its window has not expired and it was not
  // interrupted.
  bool Quiesced(HandleId id) const;
  // Whether a Freeze, Thaw or watchdog release is running right now (a
  // handle being thawed is no longer listed by Handles() but its thaw may
  // still be in progress).
  bool Busy() const;

 private:
  struct Handle {
    HandleStatus status;
    std::vector<Filesystem> filesystems;
    std::vector<std::string> hooks;  // referenced, sorted by path
    std::chrono::milliseconds hook_timeout{0};
    Clock::time_point thawed_at;
  };
  // A filesystem or a hook, counted across handles.
  struct Ref {
    int count = 0;        // handles holding it, plus a Freeze creating one
    bool busy = false;    // a freeze or thaw of it runs outside mu_
    bool frozen = false;  // filesystems: frozen; hooks: "freeze" ran
  };
  // Drops one reference to each of `fss` and `hooks`; thaws the filesystems
  // whose count reaches zero, then runs "thaw" for the hooks whose count
  // reaches zero. Called without mu_. `thawed` gets the mount points thawed.
  Status Release(const std::vector<Filesystem>& fss, const std::vector<std::string>& hooks,
                 std::chrono::milliseconds hook_timeout, std::vector<std::string>* thawed);
  // Journal, backend freeze, steps. Called without mu_.
  Status FreezeFilesystems(const std::vector<Filesystem>& fss, Clock::time_point deadline);
  Status ThawFilesystems(const std::vector<Filesystem>& fss);
  void Step(const char* name) const;
  void WatchdogLoop();
  // Counts a running operation (active_) for Busy() and the destructor.
  class Activity;

  std::unique_ptr<Backend> backend_;
  std::string backend_name_;
  Options options_;
  std::unique_ptr<FreezeJournal> journal_;  // when options_.journal_dir is set
  mutable std::mutex mu_;
  std::condition_variable cv_;
  // Held across reservation and backend call when !backend_->CanThawPart().
  std::mutex backend_mu_;
  bool stopping_ = false;
  int active_ = 0;  // operations running outside mu_ (see Activity)
  HandleId next_id_ = 1;
  std::map<HandleId, Handle> handles_;
  std::map<std::string, Ref> fs_refs_;    // by Filesystem::Key()
  std::map<std::string, Ref> hook_refs_;  // by hook path
  std::map<std::string, Filesystem> by_key_;
  std::thread watchdog_;
};

// Installs SIGINT/SIGTERM handlers that thaw everything `coordinator` holds,
// then re-raise the signal with the default action. One coordinator at a
// time; pass nullptr to uninstall (restores the default action; waits for a
// thaw the helper thread is running). The handler itself only write()s to a
// pipe (async-signal-safe); a helper thread started on first use does the
// thawing. The coordinator must outlive its installation: uninstall before
// destroying it.
Status InstallSignalThaw(Coordinator* coordinator);

// RunQuiesced: one consistent-checkpoint window.
struct QuiesceRequest {
  std::vector<std::string> targets;
  std::string hook_dir;
  std::chrono::milliseconds deadline = kDefaultDeadline;
  // Run with /bin/sh -c inside the window after `inside` (e.g. a storage
  // snapshot); non-zero exit fails the whole call. Empty: none.
  std::string exec_command;
  // After this long the exec command's process group is killed and the call
  // fails; zero means deadline + 5 minutes.
  std::chrono::milliseconds exec_timeout{0};
  bool force = false;
  std::string confine_to;  // see FreezeRequest::confine_to
};

struct QuiescedResult {
  // Frozen for all of inside()+exec: no expiry and no interruption.
  bool quiesced = false;
  std::string not_quiesced_reason;  // when !quiesced: expiry or interruption
  std::chrono::nanoseconds frozen_for{};
  std::vector<std::string> mount_points;
  int exec_exit_code = 0;
};

// hooks freeze -> fs freeze -> inside() -> exec_command -> fs thaw -> hooks
// thaw. Returns inside()'s or the exec's error after thawing; an expired
// deadline is not an error: quiesced is false.
Result<QuiescedResult> RunQuiesced(Coordinator& coordinator, const QuiesceRequest& request,
                                   const std::function<Status()>& inside);

}  // namespace strata::quiesce

#endif  // STRATA_QUIESCE_H_
