#include "engine/quiesce/hooks.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>

#include "engine/quiesce/process.h"

namespace strata::quiesce {
namespace {

// The suffixes QEMU's scripts/qemu-guest-agent/fsfreeze-hook ignores.
bool IgnoredName(const std::string& name) {
  static const char* kSuffixes[] = {
      "~",          ".bak",      ".orig",        ".rpmnew",     ".rpmorig",
      ".rpmsave",   ".sample",   ".dpkg-old",    ".dpkg-new",   ".dpkg-tmp",
      ".dpkg-dist", ".dpkg-bak", ".dpkg-backup", ".dpkg-remove"};
  if (name.empty() || name[0] == '.') return true;
  for (const char* s : kSuffixes) {
    std::string suf(s);
    if (name.size() >= suf.size() && name.compare(name.size() - suf.size(), suf.size(), suf) == 0)
      return true;
  }
  return false;
}

Status RunOne(const std::string& hook, const char* arg, std::chrono::milliseconds timeout) {
  auto r = internal::RunProcess({hook, arg}, timeout);
  if (!r.has_value()) return r.error().WithContext(std::string("hook ") + arg);
  if (*r != 0) {
    return Status(StatusCode::kIoError,
                  "hook " + hook + " " + arg + ": " +
                      (*r > 128 ? "killed by signal " + std::to_string(*r - 128)
                                : "exit status " + std::to_string(*r)));
  }
  return Status::Ok();
}

std::string Octal(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

// Hooks run with our privileges (root, to freeze), so like sudo and cron we
// run only what root (or the user we run as) owns and nobody else can
// change: the directory and each hook must be owned by uid 0 or our euid
// and not writable by group or others.
Status CheckTrusted(const std::string& path, const char* what, const struct stat& st) {
  uid_t me = ::geteuid();
  if (st.st_uid != 0 && st.st_uid != me) {
    return Status::InvalidArgument(std::string(what) + " " + path + ": owned by uid " +
                                   std::to_string(st.st_uid) + ", not root" +
                                   (me != 0 ? " or uid " + std::to_string(me) : std::string()) +
                                   "; refusing to run hooks from it");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return Status::InvalidArgument(
        std::string(what) + " " + path + ": writable by " +
        ((st.st_mode & S_IWOTH) != 0 ? "others" : "group") + " (mode " + Octal(st.st_mode) +
        "); refusing to run hooks from it (chmod go-w)");
  }
  return Status::Ok();
}

}  // namespace

Result<std::vector<std::string>> ListHooks(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return Status::NotFound(dir + ": hook directory not found");
  struct stat dst;
  if (::stat(dir.c_str(), &dst) != 0) return Status::FromErrno(errno, dir);
  STRATA_RETURN_IF_ERROR(CheckTrusted(dir, "hook directory", dst));
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    if (IgnoredName(name)) continue;
    struct stat st;
    if (::stat(e.path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (::access(e.path().c_str(), X_OK) != 0) continue;
    STRATA_RETURN_IF_ERROR(CheckTrusted(e.path().string(), "hook", st));
    out.push_back(e.path().string());
  }
  if (ec) return Status::FromErrno(ec.value(), dir);
  std::sort(out.begin(), out.end());
  return out;
}

Status RunFreezeHooks(const std::vector<std::string>& hooks, std::chrono::milliseconds timeout) {
  for (size_t i = 0; i < hooks.size(); ++i) {
    Status s = RunOne(hooks[i], "freeze", timeout);
    if (!s.ok()) {
      std::vector<std::string> done(hooks.begin(), hooks.begin() + static_cast<long>(i));
      Status rollback = RunThawHooks(done, timeout);
      if (!rollback.ok())
        return s.WithContext("(rollback also failed: " + rollback.message() + ")");
      return s;
    }
  }
  return Status::Ok();
}

Status RunThawHooks(const std::vector<std::string>& hooks, std::chrono::milliseconds timeout) {
  Status first;
  for (auto it = hooks.rbegin(); it != hooks.rend(); ++it) {
    Status s = RunOne(*it, "thaw", timeout);
    if (!s.ok() && first.ok()) first = s;
  }
  return first;
}

}  // namespace strata::quiesce
