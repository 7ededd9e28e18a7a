// Subcommands of the `strata` CLI register themselves here, so each area
// (tracker, quiesce, backup) keeps its commands in its own tools/cmd_*.cc.
#ifndef STRATA_TOOLS_COMMANDS_H_
#define STRATA_TOOLS_COMMANDS_H_

#include <functional>
#include <map>
#include <string>

namespace strata::cli {

// argv[0] is the subcommand name itself ("tracker", "checkpoint", ...).
using CommandFn = std::function<int(int argc, char** argv)>;

struct CommandInfo {
  CommandFn run;
  std::string summary;  // one line for `strata --help`
};

std::map<std::string, CommandInfo>& CommandTable();

// Static registration: `static cli::Registrar reg("tracker", "…", &TrackerMain);`
struct Registrar {
  Registrar(const std::string& name, const std::string& summary, CommandFn fn) {
    CommandTable()[name] = {std::move(fn), summary};
  }
};

}  // namespace strata::cli

#endif  // STRATA_TOOLS_COMMANDS_H_
