#include "tools/quiesce_window.h"

#include <cstdlib>

namespace strata::cli {

const std::set<std::string> kQuiesceValueFlags = {"--quiesce", "--exec",    "--deadline",
                                                  "--hooks",   "--protect", "--confine"};
const std::set<std::string> kQuiesceBoolFlags = {"--force-freeze"};

Result<FreezeWindow> ParseFreezeWindow(const Args& args) {
  FreezeWindow w;
  w.enabled = args.Has("--quiesce");
  for (const char* f : {"--exec", "--deadline", "--hooks", "--protect", "--confine", "--force-freeze"}) {
    if (args.Has(f) && !w.enabled) return Status::InvalidArgument(std::string(f) + " needs --quiesce");
  }
  if (!w.enabled) return w;
  w.request.targets = args.All("--quiesce");
  w.request.exec_command = args.Get("--exec").value_or("");
  w.request.hook_dir = args.Get("--hooks").value_or("");
  w.request.force = args.Has("--force-freeze");
  w.request.confine_to = args.Get("--confine").value_or("");
  w.protected_paths = args.All("--protect");
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
  quiesce::Coordinator::Options qo;
  qo.protected_paths = window.protected_paths;
  qo.confine_to = window.request.confine_to;
  quiesce::Coordinator coord(quiesce::MakeFifreezeBackend(), qo);
  (void)quiesce::InstallSignalThaw(&coord);
  auto q = quiesce::RunQuiesced(coord, window.request, inside);
  (void)quiesce::InstallSignalThaw(nullptr);
  return q;
}

}  // namespace strata::cli
