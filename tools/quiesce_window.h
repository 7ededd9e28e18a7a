// The freeze-window flags shared by `strata checkpoint` and `strata backup`
// (--quiesce TARGET... --exec --deadline --hooks --protect --confine
// --force-freeze --state-dir) and running a step inside that window, with
// the freeze journaled in the state directory (docs/design/quiesce.md).
#ifndef STRATA_TOOLS_QUIESCE_WINDOW_H_
#define STRATA_TOOLS_QUIESCE_WINDOW_H_

#include <functional>
#include <set>
#include <string>
#include <vector>

#include "strata/quiesce.h"
#include "tools/cli_util.h"

namespace strata::cli {

extern const std::set<std::string> kQuiesceValueFlags;
extern const std::set<std::string> kQuiesceBoolFlags;

struct FreezeWindow {
  bool enabled = false;  // --quiesce given
  quiesce::QuiesceRequest request;
  std::vector<std::string> protected_paths;  // never frozen (e.g. where state is written)
  std::string state_dir;                     // where the freeze is journaled (--state-dir)
};

// kInvalidArgument (a usage error) for a window flag without --quiesce or a
// bad --deadline.
Result<FreezeWindow> ParseFreezeWindow(const Args& args);

// Runs `inside` between freeze and thaw (FIFREEZE and hook scripts; a
// signal thaws first). A refusal or a failed freeze is an error; an expired
// deadline is not (quiesced is false).
Result<quiesce::QuiescedResult> RunInFreezeWindow(const FreezeWindow& window,
                                                  const std::function<Status()>& inside);

}  // namespace strata::cli

#endif  // STRATA_TOOLS_QUIESCE_WINDOW_H_
