// `strata freeze`, `strata thaw`, `strata status`: the quiesce coordinator
// from the command line (issue 6). Handles live in a small per-host daemon
// (engine/quiesce/service.h) so separate invocations share handles, counts
// and deadlines; `freeze --exec CMD` instead freezes for the duration of CMD
// in this process. See docs/design/quiesce.md.
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "engine/quiesce/qga.h"
#include "strata/quiesce.h"
#include "strata/quiesce_resolve.h"
#include "engine/quiesce/service.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace strata::cli {
namespace {

using namespace strata::quiesce;

constexpr char kFreezeHelp[] = R"(Usage: strata freeze [OPTIONS] TARGET...

Freezes the filesystems that TARGETs resolve to and prints a handle; thaw it
with 'strata thaw HANDLE' before the deadline, or the watchdog thaws it and
the handle reports that the window expired (not quiesced).
A TARGET is a block device (/dev/sdb, sdb, a partition, /dev/mapper/vg-lv,
dm-0) or a path (a mount point or any path on a filesystem). A disk selects
every mounted filesystem on it, its partitions and devices stacked on them.

Options:
  --deadline SECONDS   thaw automatically after this long (default 10)
  --exec CMD           freeze, run CMD with /bin/sh -c, thaw, report; no
                       handle is left behind (exit status 1 if CMD fails);
                       the freeze is journaled in the state directory
  --hooks DIR          run DIR's executables with 'freeze' before and 'thaw'
                       after (QEMU fsfreeze-hook.d convention), counted
                       across handles; DIR and its hooks must be owned by
                       root and not writable by group or others
  --hook-timeout SECONDS  per hook run (default 30)
  --dry-run            print what the targets resolve to; freeze nothing
  --protect PATH       refuse to freeze the filesystem holding PATH
                       (repeatable; the root filesystem is always refused)
  --force              allow the root and protected filesystems
  --confine DIR        refuse any filesystem not mounted at or below DIR
  --qga SOCKET         freeze through a QEMU guest agent socket instead of
                       FIFREEZE (mount points as the agent sees them)
  --state-dir DIR      daemon state (default $STRATA_QUIESCE_DIR or
                       /run/strata/quiesce)
  --json               machine-readable output
)";

constexpr char kThawHelp[] = R"(Usage: strata thaw [--state-dir DIR] [--json] (HANDLE | --all)

Thaws what HANDLE froze (filesystems whose freeze count drops to zero).
Reports whether the window had expired. An unknown or already-thawed handle
is an error (exit 1) and changes nothing.
--all thaws every handle, and after a crash (SIGKILL of the daemon or of
'strata freeze --exec') thaws every filesystem the dead process's freeze
journal names, after checking the mount point still holds the same
filesystem (device number). Exit status 1 if something could not be
recovered.
)";

constexpr char kStatusHelp[] = R"(Usage: strata status [--state-dir DIR] [--json]

Shows the quiesce daemon's handles (mount points, frozen time, time left,
expired) and per-filesystem freeze counts, or filesystems left frozen by a
daemon that was killed (recover with 'strata thaw --all').
)";

std::string Joined(const std::vector<std::string>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? " " : "") + v[i];
  return out.empty() ? "(nothing)" : out;
}

Result<std::chrono::milliseconds> ParseSeconds(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !std::isfinite(v) || v <= 0 || v > 86400) {
    return Status::InvalidArgument(flag + " wants seconds in (0, 86400], got '" + text + "'");
  }
  return std::chrono::milliseconds(static_cast<int64_t>(std::llround(v * 1000)));
}

double Ms(std::chrono::nanoseconds d) { return static_cast<double>(d.count()) / 1e6; }

int FreezeMain(int argc, char** argv) {
  const char* tool = "strata freeze";
  auto args = Args::Parse(argc, argv, 1,
                          {"--deadline", "--exec", "--hooks", "--hook-timeout", "--protect",
                           "--confine", "--qga", "--state-dir"},
                          {"--dry-run", "--force", "--json", "--help"});
  if (!args.has_value()) return Usage(tool, args.error().message());
  if (args->Has("--help")) {
    std::fputs(kFreezeHelp, stdout);
    return kExitOk;
  }
  const auto& pos = args->positional();
  if (pos.empty()) return Usage(tool, "no TARGET given");
  bool json = args->Has("--json");

  if (args->Has("--dry-run")) {
    auto res = ResolveTargets(pos, "/proc/self/mountinfo", "/sys");
    if (!res.has_value()) return Fail(tool, res.error());
    if (!json) {
      std::fputs(res->ToString().c_str(), stdout);
      return kExitOk;
    }
    Json targets = Json::array(), filesystems = Json::array();
    for (const auto& t : res->targets) {
      targets.push_back(
          {{"target", t.target}, {"kind", t.kind}, {"devices", t.devices}, {"mount_points", t.mount_points}});
    }
    for (const auto& f : res->filesystems) {
      filesystems.push_back({{"mount_point", f.mount_point},
                             {"fs_type", f.fs_type},
                             {"source", f.source},
                             {"dev", f.Key()},
                             {"disks", f.disks}});
    }
    PrintJson(Json{{"targets", targets}, {"filesystems", filesystems}});
    return kExitOk;
  }

  FreezeRequest req;
  req.targets = pos;
  req.force = args->Has("--force");
  req.hook_dir = args->Get("--hooks").value_or("");
  req.confine_to = args->Get("--confine").value_or("");
  if (auto d = args->Get("--deadline")) {
    auto v = ParseSeconds("--deadline", *d);
    if (!v.has_value()) return Usage(tool, v.error().message());
    req.deadline = *v;
  }
  if (auto d = args->Get("--hook-timeout")) {
    auto v = ParseSeconds("--hook-timeout", *d);
    if (!v.has_value()) return Usage(tool, v.error().message());
    req.hook_timeout = *v;
  }
  std::string qga = args->Get("--qga").value_or("");

  if (auto cmd = args->Get("--exec")) {
    // The freeze is journaled in the state directory, so that `strata thaw
    // --all` can thaw it if this process is killed inside the window.
    std::string state_dir = args->Get("--state-dir").value_or(DefaultStateDir());
    Status dir = PrepareStateDir(state_dir);
    if (!dir.ok()) return Fail(tool, dir.WithContext("freeze journal (choose --state-dir)"));
    Coordinator::Options o;
    o.protected_paths = args->All("--protect");
    o.protected_paths.push_back(state_dir);
    o.journal_dir = state_dir;
    std::unique_ptr<Backend> backend =
        qga.empty() ? MakeFifreezeBackend() : MakeQgaBackend(qga, std::chrono::seconds(20));
    Coordinator c(std::move(backend), o);
    Status sig = InstallSignalThaw(&c);
    if (!sig.ok()) return Fail(tool, sig);
    QuiesceRequest q;
    q.targets = req.targets;
    q.hook_dir = req.hook_dir;
    q.deadline = req.deadline;
    q.exec_command = *cmd;
    q.force = req.force;
    q.confine_to = req.confine_to;
    auto r = RunQuiesced(c, q, nullptr);
    (void)InstallSignalThaw(nullptr);
    if (!r.has_value()) return Fail(tool, r.error());
    if (json) {
      PrintJson(Json{{"quiesced", r->quiesced},
                     {"frozen_ms", Ms(r->frozen_for)},
                     {"mount_points", r->mount_points},
                     {"exec_exit_code", r->exec_exit_code},
                     {"not_quiesced_reason", r->not_quiesced_reason}});
    } else {
      std::printf("froze %s for %.3f ms: %s\n", Joined(r->mount_points).c_str(), Ms(r->frozen_for),
                  r->quiesced ? "quiesced" : ("NOT quiesced: " + r->not_quiesced_reason).c_str());
    }
    return kExitOk;
  }

  ServiceConfig cfg;
  cfg.state_dir = args->Get("--state-dir").value_or("");
  cfg.protected_paths = args->All("--protect");
  if (!qga.empty()) {
    cfg.backend = "qga";
    cfg.qga_socket = qga;
  }
  auto h = ServiceFreeze(cfg, req);
  if (!h.has_value()) return Fail(tool, h.error());
  if (json) {
    PrintJson(Json{{"handle", h->first},
                   {"mount_points", h->second},
                   {"deadline_ms", static_cast<long long>(req.deadline.count())}});
  } else {
    std::printf("handle %" PRIu64 ": froze %s (deadline %.3f s)\n", h->first,
                Joined(h->second).c_str(), static_cast<double>(req.deadline.count()) / 1000);
  }
  return kExitOk;
}

Json ReportJson(const ThawReport& r) {
  return Json{{"handle", r.id},         {"expired", r.expired},           {"interrupted", r.interrupted},
              {"quiesced", r.quiesced()}, {"frozen_ms", Ms(r.frozen_for)}, {"thawed", r.thawed},
              {"interruption", r.interruption}};
}

void PrintReport(const ThawReport& r) {
  std::string what = r.expired       ? "window EXPIRED (not quiesced), watchdog had thawed"
                     : r.interrupted ? "thawed; NOT quiesced: " + r.interruption
                                     : "thawed";
  std::printf("handle %" PRIu64 ": %s after %.3f ms; thawed %s\n", r.id, what.c_str(), Ms(r.frozen_for),
              Joined(r.thawed).c_str());
}

int ThawMain(int argc, char** argv) {
  const char* tool = "strata thaw";
  auto args = Args::Parse(argc, argv, 1, {"--state-dir"}, {"--all", "--json", "--help"});
  if (!args.has_value()) return Usage(tool, args.error().message());
  if (args->Has("--help")) {
    std::fputs(kThawHelp, stdout);
    return kExitOk;
  }
  std::string dir = args->Get("--state-dir").value_or(DefaultStateDir());
  bool json = args->Has("--json");
  if (args->Has("--all")) {
    if (!args->positional().empty()) return Usage(tool, "--all takes no HANDLE");
    auto r = ThawAllAndRecover(dir);
    if (!r.has_value()) return Fail(tool, r.error());
    if (json) {
      Json handles = Json::array();
      for (const auto& t : r->thawed) handles.push_back(ReportJson(t));
      PrintJson(Json{{"handles", handles},
                     {"recovered", r->recovered},
                     {"not_frozen", r->not_frozen},
                     {"not_recovered", r->not_recovered},
                     {"live_journals", r->live}});
    } else {
      for (const auto& t : r->thawed) PrintReport(t);
      if (!r->recovered.empty()) {
        std::printf("recovered after a daemon crash: thawed %s\n", Joined(r->recovered).c_str());
      }
      if (!r->not_frozen.empty()) {
        std::printf("journaled by a killed process but not frozen: %s\n",
                    Joined(r->not_frozen).c_str());
      }
      for (const auto& n : r->not_recovered) std::printf("NOT recovered: %s\n", n.c_str());
      for (const auto& l : r->live) std::printf("left to its running owner: %s\n", l.c_str());
      if (r->thawed.empty() && r->recovered.empty() && r->not_frozen.empty() &&
          r->not_recovered.empty()) {
        std::printf("nothing was frozen\n");
      }
    }
    // Something may still be frozen: say so with the exit status too.
    return r->not_recovered.empty() ? kExitOk : kExitFailure;
  }
  if (args->positional().size() != 1) return Usage(tool, "give one HANDLE or --all");
  const std::string& text = args->positional()[0];
  auto id = ParseNumber("HANDLE", text, 1, UINT64_MAX);
  if (!id) return Usage(tool, "bad handle '" + text + "': a handle is the positive number 'strata freeze' printed");
  auto r = ServiceThaw(dir, *id);
  if (!r.has_value()) return Fail(tool, r.error());
  if (json) PrintJson(ReportJson(*r));
  else PrintReport(*r);
  return kExitOk;
}

int StatusMain(int argc, char** argv) {
  const char* tool = "strata status";
  auto args = Args::Parse(argc, argv, 1, {"--state-dir"}, {"--json", "--help"});
  if (!args.has_value()) return Usage(tool, args.error().message());
  if (args->Has("--help")) {
    std::fputs(kStatusHelp, stdout);
    return kExitOk;
  }
  if (!args->positional().empty()) return Usage(tool, "unexpected argument");
  std::string dir = args->Get("--state-dir").value_or(DefaultStateDir());
  auto st = GetServiceStatus(dir);
  if (!st.has_value()) return Fail(tool, st.error());
  if (args->Has("--json")) {
    Json handles = Json::array();
    for (const auto& h : st->handles) {
      handles.push_back({{"handle", h.id},
                         {"expired", h.expired},
                         {"interrupted", h.interrupted},
                         {"frozen_ms", static_cast<long long>(h.frozen_ms)},
                         {"remaining_ms", static_cast<long long>(h.remaining_ms)},
                         {"mount_points", h.mount_points}});
    }
    Json counts = Json::object();
    for (const auto& [m, n] : st->counts) counts[m] = n;
    PrintJson(Json{{"running", st->running},
                   {"pid", static_cast<long long>(st->pid)},
                   {"backend", st->backend},
                   {"handles", handles},
                   {"counts", counts},
                   {"stale_frozen", st->stale_frozen},
                   {"damaged_journals", st->damaged_journals}});
    return kExitOk;
  }
  if (!st->stale_frozen.empty()) {
    std::printf("LEFT FROZEN by a killed process: %s\nrun 'strata thaw --all' to thaw them\n",
                Joined(st->stale_frozen).c_str());
  }
  for (const auto& d : st->damaged_journals) {
    std::printf("DAMAGED freeze journal: %s; what it names may still be frozen\n", d.c_str());
  }
  if (!st->damaged_journals.empty()) {
    std::printf("check those filesystems ('strata thaw --all' keeps damaged journals)\n");
  }
  if (!st->running) {
    std::printf("no quiesce daemon running (%s)\n", dir.c_str());
    return kExitOk;
  }
  std::printf("quiesce daemon pid %lld, backend %s\n", static_cast<long long>(st->pid),
              st->backend.c_str());
  for (const auto& h : st->handles) {
    std::printf("handle %" PRIu64 ": %s, frozen %lld ms, %s\n", h.id,
                Joined(h.mount_points).c_str(), static_cast<long long>(h.frozen_ms),
                h.expired       ? "EXPIRED (thawed by the watchdog)"
                : h.interrupted ? ("NOT quiesced: " + h.interruption).c_str()
                                : ("deadline in " + std::to_string(h.remaining_ms) + " ms").c_str());
  }
  for (const auto& [m, n] : st->counts) std::printf("frozen %s (count %d)\n", m.c_str(), n);
  return kExitOk;
}

Registrar freeze_reg("freeze", "freeze filesystems (handle, counts, deadline, --exec, --dry-run)",
                     &FreezeMain);
Registrar thaw_reg("thaw", "thaw a freeze handle, or --all (also recovers after a crash)",
                   &ThawMain);
Registrar status_reg("status", "show frozen filesystems, handles and deadlines", &StatusMain);

}  // namespace
}  // namespace strata::cli
