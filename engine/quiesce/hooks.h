// Hook scripts compatible with QEMU's fsfreeze-hook convention
// (/etc/qemu/fsfreeze-hook.d): every executable regular file in a directory,
// in name order, run with the single argument "freeze" before the
// filesystems are frozen and "thaw" after they are thawed (in reverse
// order). Backup files (*~, *.bak, *.dpkg-old, ...) are skipped, as QEMU's
// script does. Each run has a timeout.
#ifndef STRATA_ENGINE_QUIESCE_HOOKS_H_
#define STRATA_ENGINE_QUIESCE_HOOKS_H_

#include <chrono>
#include <string>
#include <vector>

#include "strata/status.h"

namespace strata::quiesce {

// The hook executables of `dir`, sorted by name. kNotFound if `dir` does not
// exist. Hooks run with our privileges, so, as sudo and cron do, the
// directory and every hook it would run must be owned by root (or by our
// effective uid) and not writable by group or others; otherwise
// kInvalidArgument naming the path, its owner or mode, and nothing runs.
Result<std::vector<std::string>> ListHooks(const std::string& dir);

// Runs each hook with "freeze". If one fails (non-zero exit, killed, timed
// out), runs "thaw" on the hooks that already succeeded, in reverse order,
// and returns the failure: "hook /dir/10-db freeze: exit status 3".
Status RunFreezeHooks(const std::vector<std::string>& hooks, std::chrono::milliseconds timeout);

// Runs each hook with "thaw" in reverse order; all run, the first error is
// returned.
Status RunThawHooks(const std::vector<std::string>& hooks, std::chrono::milliseconds timeout);

}  // namespace strata::quiesce

#endif  // STRATA_ENGINE_QUIESCE_HOOKS_H_
