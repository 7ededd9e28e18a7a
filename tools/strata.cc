// strata: the command-line front end. Subcommands live in tools/cmd_*.cc and
// register themselves in CommandTable(); CLI11 parses the global options and
// hands the rest of the command line to the subcommand.
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

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
      "Usage: strata COMMAND [OPTIONS]\n"
      "       strata -h|--help | -V|--version\n\n"
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
  namespace cli = strata::cli;
  CLI::App app("Dirty-block tracking and incremental backup of virtual disks.", "strata");
  app.set_help_flag();  // PrintHelp() lists the registered commands
  app.prefix_command();  // the first positional and everything after it is the command's
  CLI::Option* help = app.add_flag("-h,--help");
  CLI::Option* version = app.add_flag("-V,--version");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return cli::Usage("strata", e.what());
  }
  std::vector<std::string> rest = app.remaining();
  if (!rest.empty() && rest[0] == "--") rest.erase(rest.begin());
  if (version->count()) {
    std::printf("strata %s\n", STRATA_VERSION_STRING);
    return cli::kExitOk;
  }
  if (help->count() || (!rest.empty() && rest[0] == "help")) {
    PrintHelp();
    return cli::kExitOk;
  }
  if (rest.empty()) {
    PrintHelp();
    return cli::kExitUsage;
  }
  auto& table = cli::CommandTable();
  auto it = table.find(rest[0]);
  if (it == table.end()) {
    std::vector<std::string> names;
    for (const auto& [name, info] : table) names.push_back(name);
    std::string near = cli::ClosestMatch(rest[0], names);
    return cli::Usage("strata", (rest[0][0] == '-' ? "unknown option '" : "unknown command '") + rest[0] + "'" +
                                    (near.empty() ? "" : " (did you mean '" + near + "'?)"));
  }
  std::vector<char*> sub;
  for (std::string& s : rest) sub.push_back(s.data());
  sub.push_back(nullptr);
  return it->second.run(static_cast<int>(rest.size()), sub.data());
}
