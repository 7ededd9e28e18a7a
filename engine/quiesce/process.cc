#include "engine/quiesce/process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <thread>

namespace strata::quiesce::internal {
namespace {

void CloseRange(unsigned first, unsigned last) {
  if (first > last) return;
  if (::close_range(first, last, 0) == 0) return;
  // Kernels before 5.9: close one by one up to the descriptor limit.
  struct rlimit rl;
  unsigned limit = 65536;
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
      rl.rlim_cur < limit) {
    limit = static_cast<unsigned>(rl.rlim_cur);
  }
  for (unsigned fd = first; fd <= last && fd < limit; ++fd) ::close(static_cast<int>(fd));
}

}  // namespace

void CloseDescriptorsExcept(const int* keep, int n_keep) {
  // Insertion sort of a small copy: no allocation after fork.
  int sorted[16];
  int n = 0;
  for (int i = 0; i < n_keep && n < 16; ++i) {
    if (keep[i] < 3) continue;
    int j = n++;
    while (j > 0 && sorted[j - 1] > keep[i]) {
      sorted[j] = sorted[j - 1];
      --j;
    }
    sorted[j] = keep[i];
  }
  unsigned next = 3;
  for (int i = 0; i < n; ++i) {
    unsigned k = static_cast<unsigned>(sorted[i]);
    if (k > next) CloseRange(next, k - 1);
    if (k + 1 > next) next = k + 1;
  }
  CloseRange(next, UINT_MAX);
}

Result<int> RunProcess(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  if (argv.empty()) return Status::InvalidArgument("empty command");
  // Build argv and open /dev/null before fork: no allocation in the child.
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0) return Status::FromErrno(errno, "/dev/null");
  pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    ::close(devnull);
    return Status::FromErrno(err, "fork for " + argv[0]);
  }
  if (pid == 0) {
    // Our own process group, so a timeout can kill everything the command
    // started. The parent sets it too (whichever runs first wins the race).
    ::setpgid(0, 0);
    ::dup2(devnull, 0);
    ::dup2(2, 1);
    CloseDescriptorsExcept(nullptr, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGPIPE, SIG_DFL);
    ::execv(cargv[0], cargv.data());
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // EACCES once the child has exec'd: it set it itself
  ::close(devnull);
  auto end = std::chrono::steady_clock::now() + timeout;
  std::chrono::milliseconds sleep{1};
  for (;;) {
    int wstatus = 0;
    pid_t r = ::waitpid(pid, &wstatus, WNOHANG);
    if (r == pid) {
      if (WIFEXITED(wstatus)) return WEXITSTATUS(wstatus);
      return 128 + WTERMSIG(wstatus);
    }
    if (r < 0 && errno != EINTR) return Status::FromErrno(errno, "waitpid for " + argv[0]);
    if (std::chrono::steady_clock::now() >= end) {
      // The leader is not reaped yet, so its pid (the group id) cannot have
      // been reused: the group is still ours.
      ::kill(-pid, SIGKILL);
      while (::waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
      }
      return Status::Busy(argv[0] + ": timed out after " + std::to_string(timeout.count()) +
                          " ms (its process group was killed)");
    }
    std::this_thread::sleep_for(sleep);
    if (sleep < std::chrono::milliseconds(20)) sleep *= 2;
  }
}

}  // namespace strata::quiesce::internal
