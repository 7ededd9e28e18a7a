// Hands live-VM command lines (tools/live_cli.h) to the helper executable
// strata-live, and mount/umount to strata-mount. libvirt and libnbd bring
// about fifty shared libraries that a cold start of every other command would
// otherwise load (~100 ms measured with a cold page cache,
// docs/design/backup.md); strata-mount keeps libfuse3 out as well.
#include <limits.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "tools/cli_util.h"
#include "tools/live_cli.h"

#ifndef STRATA_LIVE_HELPER_REL
#define STRATA_LIVE_HELPER_REL "libexec/strata"
#endif
#ifndef STRATA_LIVE_HELPER_DIR
#define STRATA_LIVE_HELPER_DIR "/usr/local/libexec/strata"
#endif

namespace strata::cli {

namespace {

bool Executable(const std::string& p) { return ::access(p.c_str(), X_OK) == 0; }

}  // namespace

bool IsLiveBackup(int argc, char** argv) {
  return !Args::Peek(argc, argv, 1, {"--nbd", "--qmp", "--libvirt"}).empty();
}

bool IsLiveRestore(int argc, char** argv) { return !Args::Peek(argc, argv, 1, {"--nbd", "--format"}).empty(); }

std::string HelperPath(const char* name, const char* env_var) {
  if (const char* env = std::getenv(env_var); env && *env) return env;
  // Beside this executable (a build tree, or a copy of both), then where
  // `cmake --install --prefix P` puts it relative to P/bin (relocatable),
  // then the configured libexec directory.
  char self[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n > 0) {
    std::string dir(self, static_cast<size_t>(n));
    dir.resize(dir.rfind('/') + 1);
    if (Executable(dir + name)) return dir + name;
    const std::string rel = dir + "../" STRATA_LIVE_HELPER_REL "/" + name;
    if (Executable(rel)) return rel;
  }
  return std::string(STRATA_LIVE_HELPER_DIR) + "/" + name;
}

int ExecHelper(const char* name, const char* env_var, const char* command, int argc, char** argv) {
  const std::string helper = HelperPath(name, env_var);
  std::vector<char*> args;
  args.push_back(const_cast<char*>(helper.c_str()));
  args.push_back(const_cast<char*>(command));
  for (int i = 1; i < argc; ++i) args.push_back(argv[i]);
  args.push_back(nullptr);
  ::execv(helper.c_str(), args.data());
  const std::string tool = std::string("strata ") + command;
  std::fprintf(stderr, "%s: cannot run the helper %s: %s (install %s beside strata, or set %s)\n",
               tool.c_str(), helper.c_str(), std::strerror(errno), name, env_var);
  return 1;
}

std::string LiveHelperPath() { return HelperPath("strata-live", "STRATA_LIVE_HELPER"); }

int ExecLive(const char* command, int argc, char** argv) {
  return ExecHelper("strata-live", "STRATA_LIVE_HELPER", command, argc, argv);
}

}  // namespace strata::cli
