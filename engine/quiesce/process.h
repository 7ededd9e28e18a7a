// Internal: running hook scripts and --exec commands with a timeout.
#ifndef STRATA_ENGINE_QUIESCE_PROCESS_H_
#define STRATA_ENGINE_QUIESCE_PROCESS_H_

#include <chrono>
#include <string>
#include <vector>

#include "strata/status.h"

namespace strata::quiesce::internal {

// Runs argv[0] (a path, not searched on PATH) with argv in a new process
// group of its own, stdin from /dev/null and stdout sent to our stderr (so a
// CLI's --json stdout stays clean). The child inherits no descriptor but
// 0, 1 and 2 (close_range), default SIGINT/SIGTERM/SIGPIPE handling and an
// empty signal mask. Returns the exit code; 128+N when killed by signal N.
// After `timeout` the whole process group is killed (SIGKILL), so children
// the command started die with it, and kBusy "timed out" is returned. A
// command that exits in time may leave background children running (a
// freeze hook may start a lock holder that its thaw run stops, as QEMU's
// example hooks do).
Result<int> RunProcess(const std::vector<std::string>& argv, std::chrono::milliseconds timeout);

// Closes every descriptor >= 3 that is not in `keep` (close_range, with a
// loop as fallback). For a freshly forked child: async-signal-safe, no
// allocation.
void CloseDescriptorsExcept(const int* keep, int n_keep);

}  // namespace strata::quiesce::internal

#endif  // STRATA_ENGINE_QUIESCE_PROCESS_H_
