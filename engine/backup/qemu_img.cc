#include "engine/backup/qemu_img.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <vector>

extern char** environ;

namespace strata::internal {

namespace {

std::string FindQemuImg() {
  if (const char* e = std::getenv("STRATA_QEMU_IMG"); e && *e) return e;
  const char* path = std::getenv("PATH");
  std::string p = path && *path ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find(':', start);
    if (end == std::string::npos) end = p.size();
    std::string dir = p.substr(start, end - start);
    if (!dir.empty()) {
      std::string cand = dir + "/qemu-img";
      if (::access(cand.c_str(), X_OK) == 0) return cand;
    }
    start = end + 1;
  }
  return "";
}

}  // namespace

Status QemuImgBitmap(const std::string& image, const std::string& action, const std::string& name,
                     uint64_t granularity) {
  const std::string qemu_img = FindQemuImg();
  if (qemu_img.empty()) {
    return Status::Unsupported(image + ": qemu-img is needed to manage qcow2 bitmaps (install qemu-utils)");
  }
  std::vector<std::string> args = {qemu_img, "bitmap", action};
  if (granularity) {
    args.push_back("-g");
    args.push_back(std::to_string(granularity));
  }
  for (const char* a : {"-f", "qcow2"}) args.push_back(a);
  args.push_back(image);
  args.push_back(name);
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return Status::FromErrno(errno, "pipe");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, qemu_img.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(pipefd[1]);
  if (rc != 0) {
    ::close(pipefd[0]);
    return Status::FromErrno(rc, qemu_img);
  }
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(pipefd[0], buf, sizeof buf);
    if (n > 0) {
      if (out.size() < 65536) out.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  ::close(pipefd[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return Status::Ok();
  std::string line = out.substr(0, out.find('\n'));
  if (line.rfind("qemu-img: ", 0) == 0) line = line.substr(10);
  std::string msg = image + ": qemu-img bitmap " + action + " " + name + " failed: " +
                    (line.empty() ? "exit status " + std::to_string(WEXITSTATUS(status)) : line);
  if (out.find("lock") != std::string::npos) return Status::Busy(msg + " (is the image in use by a running VM?)");
  return Status(StatusCode::kIoError, msg);
}

}  // namespace strata::internal
