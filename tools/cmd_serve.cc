// `strata serve`: one backup point over NBD, through nbdkit and the strata
// plugin (plugins/nbdkit), read-only; optionally writable through nbdkit's
// cow filter (writes kept in a temporary file) or a qcow2 overlay whose
// backing file is the export (docs/design/serve.md).
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "strata/units.h"
#include "formats/qcow2/qcow2_format.h"
#include "strata/point.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/serve_util.h"

namespace strata::cli {
namespace {

constexpr char kTool[] = "strata serve";

const char kHelp[] =
    "Usage: strata serve --repo REPO [--backup ID|latest] [--disk NAME]\n"
    "                    (--socket PATH | --port N [--bind ADDR])\n"
    "                    [--daemon --pid-file FILE] [--cow | --overlay FILE.qcow2]\n"
    "                    [--tls-psk FILE] [--cache SIZE] [--threads N] [--json]\n\n"
    "Serves one backup point over NBD with nbdkit and the strata plugin, read-only,\n"
    "and prints its NBD URI on stdout once the server accepts connections. Reads go\n"
    "through the backup chain with every checksum verified; ranges that read as\n"
    "zeros are reported as holes (qemu-img map, nbdcopy and QEMU skip them).\n"
    "The repository's shared lock is held only while the point is opened: backups\n"
    "and merges of the repository can run while it is served, which keeps showing\n"
    "exactly the backup it opened.\n\n"
    "Options:\n"
    "  --socket PATH      a Unix socket (URI nbd+unix:///?socket=PATH)\n"
    "  --port N           TCP port N on --bind ADDR (default 127.0.0.1; all\n"
    "                     interfaces only when asked, e.g. --bind 0.0.0.0)\n"
    "  --daemon           return once the server is ready; nbdkit keeps running in\n"
    "                     the background and writes its pid to --pid-file FILE\n"
    "                     (stop it with: kill $(cat FILE)). Without --daemon the\n"
    "                     server runs until SIGINT/SIGTERM.\n"
    "  --cow              writable export: writes go to a temporary file of nbdkit's\n"
    "                     cow filter and are discarded when the server stops\n"
    "  --overlay FILE     a qcow2 overlay whose backing file is the export: point a VM\n"
    "                     at FILE to boot from the backup; its writes stay in FILE.\n"
    "                     Created if absent; an existing FILE must be backed by this\n"
    "                     export's URI. The export itself stays read-only.\n"
    "  --tls-psk FILE     require TLS with pre-shared keys (nbdkit --tls-psk; lines\n"
    "                     USER:HEXKEY as psktool writes them); the URI names the first user\n"
    "  --cache SIZE       decompressed frames kept in memory (default 256M; 0: none)\n"
    "  --threads N        nbdkit worker threads per connection (default nbdkit's 16)\n"
    "  --lock-wait SECS   wait for a writer holding the repository (default 0)\n"
    "  --nbdkit PATH      the nbdkit binary (default: nbdkit on PATH)\n"
    "  --plugin PATH      nbdkit-strata-plugin.so (default: beside strata's build,\n"
    "                     $STRATA_NBDKIT_PLUGIN, or nbdkit's plugin directory)\n"
    "  --json             print {\"uri\", \"backup\", \"pid\", ...} instead of the URI";

bool IsLoopback(const std::string& addr) {
  return addr.rfind("127.", 0) == 0 || addr == "::1" || addr == "localhost";
}

// The first user name of a PSK file ("user:hexkey" lines).
Result<std::string> PskUser(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::FromErrno(errno, path);
  std::string line;
  while (std::getline(in, line)) {
    size_t c = line.find(':');
    if (c != std::string::npos && c > 0) return line.substr(0, c);
  }
  return Status::InvalidArgument(path + ": no USER:HEXKEY line (make one with psktool -u USER -p " + path + ")");
}

// Percent-encodes what a URI query value or user name must not hold raw.
std::string UriEscape(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (isalnum(c) || std::strchr("/-._~:", c)) {
      out += static_cast<char>(c);
    } else {
      char b[4];
      std::snprintf(b, sizeof b, "%%%02X", c);
      out += b;
    }
  }
  return out;
}

// Whether nobody listens on Unix socket `path` (connect is refused).
bool StaleSocket(const std::string& path) {
  sockaddr_un sun = {};
  sun.sun_family = AF_UNIX;
  if (path.size() >= sizeof sun.sun_path) return false;
  std::memcpy(sun.sun_path, path.c_str(), path.size());
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun);
  int err = errno;
  ::close(fd);
  return rc != 0 && err == ECONNREFUSED;
}

// The qcow2 header's backing file name of `path`.
Result<std::string> Qcow2Backing(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, path);
  struct stat st;
  std::vector<uint8_t> head(2 << 20);
  ssize_t n = ::fstat(fd, &st) == 0 ? ::pread(fd, head.data(), head.size(), 0) : -1;
  int err = errno;
  ::close(fd);
  if (n < 0) return Status::FromErrno(err, path);
  head.resize(static_cast<size_t>(n));
  STRATA_ASSIGN_OR_RETURN(qcow2::Header h, qcow2::ParseHeader(head, static_cast<uint64_t>(st.st_size), path));
  return h.backing_file;
}

// A stop signal for the foreground server: remembered, and passed on to
// nbdkit once it runs (kill is async-signal-safe).
volatile sig_atomic_t g_stop_signal = 0;
volatile sig_atomic_t g_child = 0;  // nbdkit's pid once started
void OnStopSignal(int sig) {
  g_stop_signal = sig;
  if (g_child > 0) ::kill(g_child, SIGTERM);
}

int ServeMain(int argc, char** argv) {
  auto a = Args::Parse(argc, argv, 1,
                       {"--repo", "--backup", "--disk", "--socket", "--port", "--bind", "--pid-file",
                        "--overlay", "--tls-psk", "--cache", "--threads", "--lock-wait", "--nbdkit",
                        "--plugin"},
                       {"--help", "--daemon", "--cow", "--json"});
  if (!a) return Usage(kTool, a.error().message());
  if (a->Has("--help")) {
    std::puts(kHelp);
    return kExitOk;
  }
  if (!a->Has("--repo")) return Usage(kTool, "--repo REPO is required");
  if (!a->positional().empty()) return Usage(kTool, "unexpected argument '" + a->positional()[0] + "'");
  if (a->Has("--socket") == a->Has("--port")) return Usage(kTool, "give exactly one of --socket PATH or --port N");
  if (a->Has("--bind") && !a->Has("--port")) return Usage(kTool, "--bind needs --port");
  if (a->Has("--daemon") != a->Has("--pid-file")) return Usage(kTool, "--daemon and --pid-file FILE go together");
  if (a->Has("--cow") && a->Has("--overlay")) return Usage(kTool, "--cow and --overlay exclude each other");
  if (a->Has("--overlay") && a->Has("--tls-psk")) {
    return Usage(kTool, "--overlay cannot be combined with --tls-psk (qemu-img would need TLS credentials)");
  }
  uint64_t cache = 256ull << 20;
  if (auto v = a->Get("--cache")) {
    auto n = ParseSize(*v);
    if (!n) return Usage(kTool, "--cache: " + n.error().message());
    cache = *n;
  }
  uint64_t port = 0, threads = 0;
  if (Status st = GetNumber(*a, "--port", 1, 65535, &port); !st.ok()) return Usage(kTool, st.message());
  if (Status st = GetNumber(*a, "--threads", 1, 1024, &threads); !st.ok()) return Usage(kTool, st.message());
  auto wait = LockWait(*a);
  if (!wait) return Usage(kTool, wait.error().message());
  // The plugin takes whole seconds: a fraction is rounded up.
  const uint64_t lock_wait = (static_cast<uint64_t>(wait->count()) + 999) / 1000;

  const std::string repo = AbsolutePath(*a->Get("--repo"));
  // Open the point once here: a wrong repository or backup fails with
  // strata's own message, and "latest" becomes an id, so the server, the
  // printed URI and a later backup cannot disagree about which one is served.
  strata_point_params pp;
  strata_point_params_init(&pp);
  std::string backup_arg = a->Get("--backup").value_or("latest"), disk_arg = a->Get("--disk").value_or("");
  pp.backup = backup_arg.c_str();
  pp.disk = a->Has("--disk") ? disk_arg.c_str() : nullptr;
  pp.cache_bytes = 0;
  pp.lock_wait_ms = static_cast<uint32_t>(wait->count());
  strata_point* point = nullptr;
  if (int rc = strata_point_open(repo.c_str(), &pp, &point); rc != STRATA_OK) {
    return Fail(kTool, Status(static_cast<StatusCode>(rc), strata_last_error()), true);
  }
  const std::string id = strata_point_id(point), disk_name = strata_point_disk_name(point);
  const uint64_t size = strata_point_size(point);
  strata_point_close(point);

  auto plugin = FindPlugin(a->Get("--plugin"));
  if (!plugin) return Fail(kTool, plugin.error());
  const std::string nbdkit = a->Get("--nbdkit").value_or("nbdkit");

  // Where and how clients connect.
  std::string uri, socket_path, bind = a->Get("--bind").value_or("127.0.0.1");
  std::optional<std::string> psk_user;
  std::string psk;
  if (auto p = a->Get("--tls-psk")) {
    psk = AbsolutePath(*p);
    auto u = PskUser(psk);
    if (!u) return Fail(kTool, u.error());
    psk_user = *u;
  }
  const std::string scheme = psk_user ? "nbds" : "nbd";
  const std::string user = psk_user ? UriEscape(*psk_user) + "@" : "";
  if (a->Has("--socket")) {
    socket_path = AbsolutePath(*a->Get("--socket"));
    // nbdkit leaves its socket behind when it is killed; a socket nobody
    // listens on is removed, anything else is refused.
    struct stat st;
    if (::lstat(socket_path.c_str(), &st) == 0 && !(S_ISSOCK(st.st_mode) && StaleSocket(socket_path))) {
      return Fail(kTool, Status::AlreadyExists(socket_path + ": exists" +
                                               (S_ISSOCK(st.st_mode) ? " and a server listens on it" : "") +
                                               "; choose another --socket"));
    }
    ::unlink(socket_path.c_str());
    uri = scheme + "+unix://" + user + "/?socket=" + UriEscape(socket_path);
    if (psk_user) uri += "&tls-psk-file=" + UriEscape(psk);
  } else {
    std::string host = bind.find(':') != std::string::npos ? "[" + bind + "]" : bind;
    if (bind == "0.0.0.0" || bind == "::") {
      char name[HOST_NAME_MAX + 1] = {};
      ::gethostname(name, sizeof name - 1);
      host = name;
      std::fprintf(stderr, "%s: note: listening on every interface (--bind %s)%s\n", kTool, bind.c_str(),
                   psk_user ? "" : ", without TLS: anyone who can reach the port can read the disk");
    } else if (!IsLoopback(bind) && !psk_user) {
      std::fprintf(stderr, "%s: note: --bind %s is not loopback and there is no --tls-psk\n", kTool,
                   bind.c_str());
    }
    uri = scheme + "://" + user + host + ":" + std::to_string(port) + "/";
    if (psk_user) uri += "?tls-psk-file=" + UriEscape(psk);
  }

  // The pid file tells us when nbdkit listens (it is written after the
  // sockets are bound): the daemon's is the user's, the foreground's ours.
  std::string pid_file, temp_dir;
  if (a->Has("--daemon")) {
    pid_file = AbsolutePath(*a->Get("--pid-file"));
    if (auto pid = ReadPidFile(pid_file); pid && ProcessAlive(*pid)) {
      return Fail(kTool, Status::AlreadyExists(pid_file + ": names running process " + std::to_string(*pid) +
                                               "; stop it or choose another --pid-file"));
    }
    ::unlink(pid_file.c_str());
  } else {
    char tmpl[] = "/tmp/strata-serve.XXXXXX";
    if (!::mkdtemp(tmpl)) return Fail(kTool, Status::FromErrno(errno, "mkdtemp /tmp/strata-serve.XXXXXX"));
    temp_dir = tmpl;
    pid_file = temp_dir + "/nbdkit.pid";
  }
  auto cleanup_temp = [&] {
    if (!temp_dir.empty()) {
      ::unlink(pid_file.c_str());
      ::rmdir(temp_dir.c_str());
    }
  };

  std::vector<std::string> args = {nbdkit};
  if (!a->Has("--daemon")) args.insert(args.end(), {"--foreground", "--exit-with-parent"});
  args.insert(args.end(), {"--pidfile", pid_file});
  if (a->Has("--cow")) {
    args.push_back("--filter=cow");
  } else {
    args.push_back("--readonly");
  }
  if (!socket_path.empty()) {
    args.insert(args.end(), {"--unix", socket_path});
  } else {
    args.insert(args.end(), {"--port", std::to_string(port), "--ipaddr", bind});
  }
  if (threads) args.insert(args.end(), {"--threads", std::to_string(threads)});
  if (psk_user) args.insert(args.end(), {"--tls=require", "--tls-psk=" + psk});
  args.insert(args.end(), {*plugin, "repo=" + repo, "backup=" + id, "cache=" + std::to_string(cache),
                           "lock-wait=" + std::to_string(lock_wait)});

  // Signals that stop a foreground server are caught from here on, so one
  // arriving while nbdkit starts is not lost; nbdkit starts with the default
  // handlers (Spawn resets them).
  struct sigaction sa = {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  if (!a->Has("--daemon")) {
    for (int s : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(s, &sa, nullptr);
  }
  auto child = Spawn(args);
  if (!child) {
    cleanup_temp();
    return Fail(kTool, child.error());
  }
  if (!a->Has("--daemon")) g_child = *child;
  // Wait until the pid file names a live process (nbdkit is listening), or
  // nbdkit exits (its own message is already on stderr).
  pid_t server = -1;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  bool launcher_done = false;
  while (true) {
    if (auto pid = ReadPidFile(pid_file); pid && ProcessAlive(*pid)) {
      server = *pid;
      break;
    }
    if (!launcher_done) {
      int st = 0;
      pid_t w = ::waitpid(*child, &st, WNOHANG);
      if (w == *child) {
        launcher_done = true;
        // A daemonising nbdkit exits 0 once it has forked; anything else
        // is a failure to start.
        if (!a->Has("--daemon") || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
          cleanup_temp();
          return Fail(kTool, Status(StatusCode::kIoError, "nbdkit did not start (" + DescribeWait(st) +
                                                              "; its message is above)"));
        }
      }
    }
    if (g_stop_signal || std::chrono::steady_clock::now() > deadline) {
      ::kill(*child, SIGTERM);
      ::waitpid(*child, nullptr, 0);
      cleanup_temp();
      return Fail(kTool, Status(StatusCode::kCancelled, g_stop_signal ? "stopped before nbdkit was ready"
                                                                      : "nbdkit was not ready after 60 s"));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }

  std::string overlay;
  if (auto o = a->Get("--overlay")) {
    overlay = AbsolutePath(*o);
    Status st;
    struct stat ost;
    if (::stat(overlay.c_str(), &ost) == 0) {
      auto backing = Qcow2Backing(overlay);
      if (!backing) {
        st = backing.error();
      } else if (*backing != uri) {
        st = Status::AlreadyExists(overlay + ": exists and is backed by '" + *backing + "', not by " + uri);
      }
    } else {
      auto rc = RunAndWait({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", uri, overlay});
      if (!rc) {
        st = rc.error();
      } else if (*rc != 0) {
        st = Status(StatusCode::kIoError, overlay + ": qemu-img create failed (exit " + std::to_string(*rc) + ")");
      } else {
        ::chmod(overlay.c_str(), 0600);  // it will hold the VM's writes
      }
    }
    if (!st.ok()) {
      ::kill(server, SIGTERM);
      if (!launcher_done) ::waitpid(*child, nullptr, 0);
      cleanup_temp();
      return Fail(kTool, st);
    }
  }

  if (a->Has("--json")) {
    Json j = {{"uri", uri}, {"backup", id}, {"disk", disk_name}, {"size", size}, {"pid", static_cast<int>(server)}};
    if (!overlay.empty()) j["overlay"] = overlay;
    j["writable"] = a->Has("--cow");
    PrintJson(j);
  } else {
    std::printf("%s\n", uri.c_str());
    std::fprintf(stderr, "%s: backup %s of %s (%s) %s, nbdkit pid %d%s\n", kTool, id.c_str(), disk_name.c_str(),
                 FormatBytes(size).c_str(),
                 a->Has("--cow") ? "writable (writes are discarded when the server stops)" : "read-only",
                 static_cast<int>(server), a->Has("--daemon") ? "" : "; Ctrl-C stops it");
    if (!overlay.empty()) {
      std::fprintf(stderr, "%s: overlay %s: a VM may use it as its disk; writes stay in it\n", kTool,
                   overlay.c_str());
    }
  }
  std::fflush(stdout);
  if (a->Has("--daemon")) {
    // nbdkit 1.32 sets PR_SET_PDEATHSIG (SIGTERM) even without
    // --exit-with-parent, before it forks into the background. Were we to
    // exit while its first process is still exiting, that process would
    // get SIGTERM and write to the quit pipe it shares with the daemon,
    // whose own quit flag stays unset: the daemon would then spin in its
    // accept loop, taking no connection and a whole core. So we return only
    // once the first process is gone (it exits right after the fork).
    if (!launcher_done) {
      while (::waitpid(*child, nullptr, 0) < 0 && errno == EINTR) {
      }
    }
    return kExitOk;
  }

  // Foreground: wait for nbdkit to exit (a stop signal is passed on by
  // the handler).
  int st = 0;
  while (::waitpid(*child, &st, 0) < 0 && errno == EINTR) {
  }
  const bool forwarded = g_stop_signal != 0;
  cleanup_temp();
  if (!socket_path.empty()) {
    struct stat sst;
    if (::lstat(socket_path.c_str(), &sst) == 0 && S_ISSOCK(sst.st_mode)) ::unlink(socket_path.c_str());
  }
  if (forwarded || (WIFEXITED(st) && WEXITSTATUS(st) == 0)) return kExitOk;
  return Fail(kTool, Status(StatusCode::kIoError, "nbdkit stopped: " + DescribeWait(st)));
}

Registrar reg("serve", "serve a backup point over NBD (nbdkit), read-only or with an overlay", &ServeMain);

}  // namespace
}  // namespace strata::cli
