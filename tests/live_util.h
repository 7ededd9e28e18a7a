// Helpers for the live backup tests (label "live"): processes the test
// starts and stops by pid, QMP connections, reference copies of disks.
#ifndef STRATA_TESTS_LIVE_UTIL_H_
#define STRATA_TESTS_LIVE_UTIL_H_

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "engine/live/live.h"
#include "engine/live/qmp.h"
#include "tests/test_util.h"

namespace strata::testing {

// A child process started by the test, stopped (SIGKILL) by pid when the
// object goes, unless it already ended.
class Child {
 public:
  Child() = default;
  // argv[0] is searched on PATH; output goes to `log`.
  static Child Start(const std::vector<std::string>& argv, const std::string& log) {
    Child c;
    pid_t pid = ::fork();
    if (pid == 0) {
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      int null = ::open("/dev/null", O_RDONLY);
      if (null >= 0) ::dup2(null, 0);
      std::vector<char*> a;
      for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
      a.push_back(nullptr);
      ::execvp(a[0], a.data());
      ::_exit(127);
    }
    c.pid_ = pid;
    return c;
  }
  Child(Child&& o) noexcept : pid_(o.pid_) { o.pid_ = -1; }
  Child& operator=(Child&& o) noexcept {
    Stop();
    pid_ = o.pid_;
    o.pid_ = -1;
    return *this;
  }
  ~Child() { Stop(); }
  pid_t pid() const { return pid_; }
  bool Alive() {
    if (pid_ <= 0) return false;
    int st = 0;
    pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      status_ = st;
      pid_ = -1;
      return false;
    }
    return true;
  }
  void Kill(int sig) {
    if (pid_ > 0) ::kill(pid_, sig);
  }
  // Waits for the process; returns its wait status.
  int Wait() {
    if (pid_ <= 0) return status_;
    int st = 0;
    while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    status_ = st;
    return st;
  }
  void Stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      Wait();
    }
  }

 private:
  pid_t pid_ = -1;
  int status_ = 0;
};

inline bool WaitForPath(const std::string& p, std::chrono::milliseconds max = std::chrono::seconds(20)) {
  auto end = std::chrono::steady_clock::now() + max;
  struct stat st;
  while (std::chrono::steady_clock::now() < end) {
    if (::stat(p.c_str(), &st) == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

inline std::unique_ptr<live::QmpClient> ConnectQmp(const std::string& sock) {
  for (int i = 0; i < 200; ++i) {
    auto c = live::QmpClient::Connect(sock, std::chrono::seconds(30));
    if (c) return std::move(*c);
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  ADD_FAILURE() << "cannot connect to QMP at " << sock;
  return nullptr;
}

// The bitmaps of `node` as QEMU reports them.
inline live::Json Bitmaps(live::QmpClient& q, const std::string& node) {
  auto r = q.Execute("query-named-block-nodes", live::Json{{"flat", true}});
  if (!r) return live::Json::array();
  for (const auto& b : *r) {
    if (b.value("node-name", "") == node && b.contains("dirty-bitmaps")) return b["dirty-bitmaps"];
  }
  return live::Json::array();
}

// Nothing strata made may stay in QEMU after a run ends (or a killed run's
// successor ran): no block job, no export, no scratch node, no export
// bitmap; every bitmap idle and recording.
inline void ExpectNoLeftovers(live::QmpClient& q, const std::string& node) {
  auto jobs = q.Execute("query-block-jobs");
  ASSERT_TRUE(jobs.has_value());
  EXPECT_TRUE(jobs->empty()) << jobs->dump();
  auto ex = q.Execute("query-block-exports");
  ASSERT_TRUE(ex.has_value());
  for (const auto& e : *ex) EXPECT_EQ(e.value("id", "").rfind("strata-", 0), std::string::npos) << e.dump();
  auto nodes = q.Execute("query-named-block-nodes", live::Json{{"flat", true}});
  ASSERT_TRUE(nodes.has_value());
  for (const auto& n : *nodes) EXPECT_NE(n.value("node-name", "").rfind("strata-s-", 0), 0u) << n.value("node-name", "");
  for (const auto& b : Bitmaps(q, node)) {
    EXPECT_FALSE(b.value("busy", false)) << b.dump();
    EXPECT_TRUE(b.value("recording", false)) << b.dump();
    EXPECT_NE(b.value("name", "").rfind("strata-e-", 0), 0u) << b.dump();
  }
}

inline bool SameFiles(const std::string& a, const std::string& b) {
  return RunCommand("cmp -s " + ShellQuote(a) + " " + ShellQuote(b)).exit_code == 0;
}

}  // namespace strata::testing

#endif  // STRATA_TESTS_LIVE_UTIL_H_
