#include "tools/quiesce_window.h"

#include <cstdlib>

#include "engine/quiesce/service.h"

namespace strata::cli {

const std::set<std::string> kQuiesceValueFlags = {"--quiesce", "--exec",    "--deadline", "--hooks",
                                                  "--protect", "--confine", "--state-dir"};
const std::set<std::string> kQuiesceBoolFlags = {"--force-freeze"};

Result<FreezeWindow> ParseFreezeWindow(const Args& args) {
  FreezeWindow w;
  w.enabled = args.Has("--quiesce");
  for (const char* f : {"--exec", "--deadline", "--hooks", "--protect", "--confine", "--force-freeze", "--state-dir"}) {
    if (args.Has(f) && !w.enabled) return Status::InvalidArgument(std::string(f) + " needs --quiesce");
  }
  if (!w.enabled) return w;
  w.request.targets = args.All("--quiesce");
  w.request.exec_command = args.Get("--exec").value_or("");
  w.request.hook_dir = args.Get("--hooks").value_or("");
  w.request.force = args.Has("--force-freeze");
  w.request.confine_to = args.Get("--confine").value_or("");
  w.protected_paths = args.All("--protect");
  w.state_dir = args.Get("--state-dir").value_or(quiesce::DefaultStateDir());
  if (auto d = args.Get("--deadline")) {
    char* end = nullptr;
    double secs = std::strtod(d->c_str(), &end);
    if (end == d->c_str() || *end || !(secs > 0 && secs <= 3600)) {
      return Status::InvalidArgument("--deadline must be a number of seconds in (0, 3600]");
    }
    w.request.deadline = std::chrono::milliseconds(static_cast<int64_t>(secs * 1000));
  }
  return w;
}

Result<quiesce::QuiescedResult> RunInFreezeWindow(const FreezeWindow& window,
                                                  const std::function<Status()>& inside) {
  // The freeze is journaled before it happens, so `strata thaw --all`
  // finds and thaws it if this process is killed inside the window.
  STRATA_RETURN_IF_ERROR(
      quiesce::PrepareStateDir(window.state_dir).WithContext("freeze journal (choose --state-dir)"));
  quiesce::Coordinator::Options qo;
  qo.protected_paths = window.protected_paths;
  qo.protected_paths.push_back(window.state_dir);
  qo.confine_to = window.request.confine_to;
  qo.journal_dir = window.state_dir;
  quiesce::Coordinator coord(quiesce::MakeFifreezeBackend(), qo);
  (void)quiesce::InstallSignalThaw(&coord);
  auto q = quiesce::RunQuiesced(coord, window.request, inside);
  (void)quiesce::InstallSignalThaw(nullptr);
  return q;
}

}  // namespace strata::cli
