// strata: the command-line front end. Subcommands live in tools/cmd_*.cc and
// register themselves in CommandTable().
#include <cstdio>
#include <cstring>
#include <string>

#include "tools/cli_util.h"
#include "tools/commands.h"

namespace strata::cli {

std::map<std::string, CommandInfo>& CommandTable() {
  static auto* table = new std::map<std::string, CommandInfo>();
  return *table;
}

}  // namespace strata::cli

namespace {

void PrintHelp() {
  std::printf(
      "Usage: strata COMMAND [OPTIONS]\n\n"
      "Dirty-block tracking and incremental backup of virtual disks.\n\nCommands:\n");
  for (const auto& [name, info] : strata::cli::CommandTable()) {
    std::printf("  %-12s %s\n", name.c_str(), info.summary.c_str());
  }
  std::printf(
      "\nRun 'strata COMMAND --help' for a command's options.\n"
      "Exit status: 0 success, 1 failure, 2 usage error.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    PrintHelp();
    return argc < 2 ? strata::cli::kExitUsage : strata::cli::kExitOk;
  }
  if (!std::strcmp(argv[1], "--version") || !std::strcmp(argv[1], "-V")) {
    std::printf("strata %s\n", STRATA_VERSION_STRING);
    return 0;
  }
  auto& table = strata::cli::CommandTable();
  auto it = table.find(argv[1]);
  if (it == table.end()) {
    return strata::cli::Usage("strata", std::string("unknown command '") + argv[1] + "'");
  }
  return it->second.run(argc - 1, argv + 1);
}
