// Internal: running hook scripts and --exec commands with a timeout.
#ifndef STRATA_ENGINE_QUIESCE_PROCESS_H_
#define STRATA_ENGINE_QUIESCE_PROCESS_H_

#include <chrono>
#include <string>
#include <vector>

#include "extents/status.h"

namespace strata::quiesce::internal {

// Runs argv[0] (a path, not searched on PATH) with argv, stdin from
// /dev/null and stdout sent to our stderr (so a CLI's --json stdout stays
// clean). Returns the exit code; 128+N when killed by signal N. After
// `timeout` the child is killed (SIGKILL) and kBusy "timed out" returned.
Result<int> RunProcess(const std::vector<std::string>& argv, std::chrono::milliseconds timeout);

}  // namespace strata::quiesce::internal

#endif  // STRATA_ENGINE_QUIESCE_PROCESS_H_
