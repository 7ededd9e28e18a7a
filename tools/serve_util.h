// Helpers for `strata serve` and `strata mount`: finding nbdkit's strata
// plugin, starting processes and reading pid files.
#ifndef STRATA_TOOLS_SERVE_UTIL_H_
#define STRATA_TOOLS_SERVE_UTIL_H_

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "strata/status.h"

namespace strata::cli {

// `path` made absolute against the working directory (not resolved further).
std::string AbsolutePath(const std::string& path);

// nbdkit-strata-plugin.so: `explicit_path` when given, else
// $STRATA_NBDKIT_PLUGIN, else beside this strata binary's build
// (../plugins/nbdkit/) or install (../lib/strata/), else nbdkit's plugin
// directory. kNotFound naming where it looked.
Result<std::string> FindPlugin(const std::optional<std::string>& explicit_path);

// Starts argv[0] (searched on PATH) with argv; stdin /dev/null, stdout and
// stderr inherited, no other descriptor. kNotFound when it cannot be run.
Result<pid_t> Spawn(const std::vector<std::string>& argv);
// Spawn and wait: the exit code (128+N when killed by signal N).
Result<int> RunAndWait(const std::vector<std::string>& argv);
// "exit 1", "signal 9".
std::string DescribeWait(int wait_status);

// Whether process `pid` exists and is not a zombie.
bool ProcessAlive(pid_t pid);

// The pid in a pid file (one decimal number and a newline); nullopt when
// the file is absent or not complete yet.
std::optional<pid_t> ReadPidFile(const std::string& path);

}  // namespace strata::cli

#endif  // STRATA_TOOLS_SERVE_UTIL_H_
