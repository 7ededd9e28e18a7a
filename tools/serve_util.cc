#include "tools/serve_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <climits>
#include <cstdlib>
#include <cstring>

namespace strata::cli {

std::string AbsolutePath(const std::string& path) {
  if (!path.empty() && path[0] == '/') return path;
  char cwd[PATH_MAX];
  if (!::getcwd(cwd, sizeof cwd)) return path;
  return std::string(cwd) + "/" + path;
}

Result<std::string> FindPlugin(const std::optional<std::string>& explicit_path) {
  auto usable = [](const std::string& p) { return ::access(p.c_str(), R_OK) == 0; };
  if (explicit_path) {
    std::string p = AbsolutePath(*explicit_path);
    if (!usable(p)) return Status::FromErrno(errno, p);
    return p;
  }
  std::vector<std::string> tried;
  if (const char* env = std::getenv("STRATA_NBDKIT_PLUGIN"); env && *env) tried.push_back(AbsolutePath(env));
  char exe[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = 0;
    std::string dir(exe);
    dir = dir.substr(0, dir.rfind('/'));
    tried.push_back(dir + "/../plugins/nbdkit/nbdkit-strata-plugin.so");
    tried.push_back(dir + "/../lib/strata/nbdkit-strata-plugin.so");
#ifdef STRATA_INSTALL_LIBDIR
    tried.push_back(dir + "/../" STRATA_INSTALL_LIBDIR "/strata/nbdkit-strata-plugin.so");
#endif
  }
#ifdef STRATA_NBDKIT_PLUGINDIR
  tried.push_back(std::string(STRATA_NBDKIT_PLUGINDIR) + "/nbdkit-strata-plugin.so");
#endif
  for (const std::string& p : tried) {
    if (usable(p)) return p;
  }
  std::string where;
  for (const std::string& p : tried) where += (where.empty() ? "" : ", ") + p;
  return Status::NotFound("nbdkit-strata-plugin.so not found (looked at " + where +
                          "); build the nbdkit-strata-plugin target or pass --plugin PATH");
}

Result<pid_t> Spawn(const std::vector<std::string>& argv) {
  std::vector<char*> c;
  for (const std::string& s : argv) c.push_back(const_cast<char*>(s.c_str()));
  c.push_back(nullptr);
  // A pipe closed on exec tells the parent whether exec worked.
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return Status::FromErrno(errno, "pipe");
  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    ::close(p[0]);
    ::close(p[1]);
    return Status::FromErrno(e, "fork");
  }
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    // Every descriptor but 0-2 and the status pipe goes (the pipe closes on exec).
    for (int fd = 3; fd < 1024; ++fd) {
      if (fd != p[1]) ::close(fd);
    }
    ::execvp(c[0], c.data());
    int e = errno;
    ssize_t w = ::write(p[1], &e, sizeof e);
    (void)w;
    ::_exit(127);
  }
  ::close(p[1]);
  int e = 0;
  ssize_t r;
  do {
    r = ::read(p[0], &e, sizeof e);
  } while (r < 0 && errno == EINTR);
  ::close(p[0]);
  if (r == static_cast<ssize_t>(sizeof e)) {
    ::waitpid(pid, nullptr, 0);
    return Status::FromErrno(e, "cannot run " + argv[0]);
  }
  return pid;
}

Result<int> RunAndWait(const std::vector<std::string>& argv) {
  STRATA_ASSIGN_OR_RETURN(pid_t pid, Spawn(argv));
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0) {
    if (errno != EINTR) return Status::FromErrno(errno, "waitpid " + argv[0]);
  }
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  return 128 + WTERMSIG(st);
}

std::string DescribeWait(int st) {
  if (WIFEXITED(st)) return "exit " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st)) return std::string("signal ") + std::to_string(WTERMSIG(st));
  return "status " + std::to_string(st);
}

std::optional<pid_t> ReadPidFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  char buf[32] = {};
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 1 || buf[n - 1] != '\n') return std::nullopt;  // not written whole yet
  char* end = nullptr;
  long v = std::strtol(buf, &end, 10);
  if (end == buf || *end != '\n' || v <= 0) return std::nullopt;
  return static_cast<pid_t>(v);
}

}  // namespace strata::cli

namespace strata::cli {

bool ProcessAlive(pid_t pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return errno == EPERM;
  // /proc/PID/stat: "pid (comm) S ..."; comm may hold spaces and parentheses.
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return true;
  char buf[512];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return true;
  buf[n] = 0;
  const char* close = std::strrchr(buf, ')');
  return !(close && close[1] == ' ' && (close[2] == 'Z' || close[2] == 'X'));
}

}  // namespace strata::cli
