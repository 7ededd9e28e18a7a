// `strata mount` and `strata umount`: a backup point as a read-only file
// DIR/disk.raw through FUSE (no nbd kernel module needed), and with
// --partitions each partition's file system mounted read-only at DIR/pN
// through a loop device over that file (docs/design/serve.md).
#define FUSE_USE_VERSION 35
#include <fuse.h>

#include <fcntl.h>
#include <linux/loop.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <climits>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "strata/units.h"
#include "strata/point.h"
#include "tools/cli_util.h"
#include "tools/loop_mount.h"
#include "tools/mount_cli.h"
#include "tools/serve_util.h"

namespace strata::cli {
namespace {

constexpr char kDisk[] = "disk.raw";
constexpr char kState[] = ".strata-mount";

// What the FUSE threads serve. `point` is thread-safe; the rest changes
// only under `mu` (partition directories appear while the mount is live).
struct MountFs {
  strata_point* point = nullptr;
  std::string id, dir;
  uint64_t size = 0;
  timespec time = {};
  uid_t uid = 0;
  gid_t gid = 0;
  std::mutex mu;
  std::vector<std::string> subdirs;  // "p1", ... (mount points of partitions)
  std::string state;                 // the JSON of DIR/.strata-mount
};

// A partition's file system mounted at DIR/name from a loop device.
struct Mounted {
  std::string name, fstype, device;
};

MountFs* Fs() { return static_cast<MountFs*>(fuse_get_context()->private_data); }

void* FsInit(fuse_conn_info*, fuse_config* cfg) {
  // The bytes never change: the kernel may keep them in its page cache.
  cfg->kernel_cache = 1;
  cfg->attr_timeout = 1;
  cfg->entry_timeout = 1;
  return Fs();
}

int FsGetattr(const char* path, struct stat* st, fuse_file_info*) {
  MountFs* fs = Fs();
  std::memset(st, 0, sizeof *st);
  st->st_uid = fs->uid;
  st->st_gid = fs->gid;
  st->st_atim = st->st_mtim = st->st_ctim = fs->time;
  std::lock_guard<std::mutex> l(fs->mu);
  if (std::strcmp(path, "/") == 0) {
    st->st_mode = S_IFDIR | 0555;
    st->st_nlink = 2 + fs->subdirs.size();
    return 0;
  }
  if (std::strcmp(path + 1, kDisk) == 0) {
    st->st_mode = S_IFREG | 0444;
    st->st_nlink = 1;
    st->st_size = static_cast<off_t>(fs->size);
    st->st_blksize = 4096;
    st->st_blocks = static_cast<blkcnt_t>((fs->size + 511) / 512);
    return 0;
  }
  if (std::strcmp(path + 1, kState) == 0) {
    st->st_mode = S_IFREG | 0444;
    st->st_nlink = 1;
    st->st_size = static_cast<off_t>(fs->state.size());
    return 0;
  }
  if (std::find(fs->subdirs.begin(), fs->subdirs.end(), path + 1) != fs->subdirs.end()) {
    st->st_mode = S_IFDIR | 0555;
    st->st_nlink = 2;
    return 0;
  }
  return -ENOENT;
}

int FsReaddir(const char* path, void* buf, fuse_fill_dir_t fill, off_t, fuse_file_info*, fuse_readdir_flags) {
  MountFs* fs = Fs();
  std::lock_guard<std::mutex> l(fs->mu);
  if (std::strcmp(path, "/") != 0) {
    if (std::find(fs->subdirs.begin(), fs->subdirs.end(), path + 1) == fs->subdirs.end()) return -ENOENT;
    fill(buf, ".", nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
    fill(buf, "..", nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
    return 0;
  }
  for (const char* n : {".", "..", kDisk, kState}) fill(buf, n, nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  for (const std::string& d : fs->subdirs) fill(buf, d.c_str(), nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  return 0;
}

int FsOpen(const char* path, fuse_file_info* fi) {
  if (std::strcmp(path + 1, kDisk) != 0 && std::strcmp(path + 1, kState) != 0) {
    struct stat st;
    return FsGetattr(path, &st, fi) == 0 ? -EISDIR : -ENOENT;
  }
  if ((fi->flags & O_ACCMODE) != O_RDONLY) return -EROFS;
  fi->keep_cache = 1;
  return 0;
}

int FsRead(const char* path, char* buf, size_t size, off_t off, fuse_file_info*) {
  MountFs* fs = Fs();
  if (off < 0) return -EINVAL;
  if (std::strcmp(path + 1, kState) == 0) {
    std::lock_guard<std::mutex> l(fs->mu);
    if (static_cast<size_t>(off) >= fs->state.size()) return 0;
    size_t n = std::min(size, fs->state.size() - static_cast<size_t>(off));
    std::memcpy(buf, fs->state.data() + off, n);
    return static_cast<int>(n);
  }
  uint64_t o = static_cast<uint64_t>(off);
  if (o >= fs->size) return 0;
  size_t n = static_cast<size_t>(std::min<uint64_t>(size, fs->size - o));
  if (strata_point_read(fs->point, o, buf, n) != STRATA_OK) {
    // The reader sees EIO; the reason (e.g. the archive and range that
    // failed its checksum) goes to syslog, as the daemon has no terminal.
    syslog(LOG_ERR, "strata mount %s: %s", fs->dir.c_str(), strata_last_error());
    return -EIO;
  }
  return static_cast<int>(n);
}

// SEEK_DATA / SEEK_HOLE from the backup's map, so cp --sparse, qemu-img
// and the like skip what reads as zeros.
struct SeekWalk {
  int whence;
  uint64_t found;
  bool hit = false;
};

off_t FsLseek(const char* path, off_t off, int whence, fuse_file_info*) {
  MountFs* fs = Fs();
  if (std::strcmp(path + 1, kDisk) != 0) return -EINVAL;
  if (whence != SEEK_DATA && whence != SEEK_HOLE) return -EINVAL;
  if (off < 0 || static_cast<uint64_t>(off) >= fs->size) return -ENXIO;
  SeekWalk w{whence, fs->size};
  strata_point_map(
      fs->point, static_cast<uint64_t>(off), fs->size - static_cast<uint64_t>(off),
      [](void* opaque, uint64_t o, uint64_t, int zero) -> int {
        auto* w = static_cast<SeekWalk*>(opaque);
        if ((w->whence == SEEK_DATA) == (zero == 0)) {
          w->found = o;
          w->hit = true;
          return 1;
        }
        return 0;
      },
      &w);
  if (whence == SEEK_DATA && !w.hit) return -ENXIO;
  return static_cast<off_t>(std::max<uint64_t>(w.found, static_cast<uint64_t>(off)));
}

int FsStatfs(const char*, struct statvfs* st) {
  MountFs* fs = Fs();
  std::memset(st, 0, sizeof *st);
  st->f_bsize = st->f_frsize = 4096;
  st->f_blocks = (fs->size + 4095) / 4096;
  st->f_namemax = 255;
  st->f_flag = ST_RDONLY;
  return 0;
}

std::string StateJson(MountFs& fs, const std::vector<Mounted>& parts) {
  Json partitions = Json::array();
  for (const Mounted& p : parts) {
    partitions.push_back({{"dir", fs.dir + "/" + p.name}, {"fstype", p.fstype}, {"device", p.device}});
  }
  Json j = {{"pid", static_cast<int>(::getpid())},
            {"backup", fs.id},
            {"dir", fs.dir},
            {"size", fs.size},
            {"partitions", partitions}};
  return FormatJson(j) + "\n";
}

// ---- undoing a mount (strata umount, and the daemon on SIGTERM) ----

// Unmounts what `strata mount` made at `dir` (absolute, resolved): the
// partitions mounted from loop devices over dir/disk.raw, then dir itself.
// Refuses when dir is no strata mount or holds mounts strata did not make.
Status UnmountStrata(const std::string& dir, std::vector<std::string>* notes) {
  STRATA_ASSIGN_OR_RETURN(auto mounts, ReadMountInfo());
  auto self = std::find_if(mounts.begin(), mounts.end(), [&](const MountInfo& m) { return m.target == dir; });
  bool ours = false;
  for (const MountInfo& m : mounts) {
    if (m.target == dir) ours = m.fstype == "fuse.strata";  // the last mount on dir is the visible one
  }
  if (self == mounts.end() || !ours) return Status::NotFound(dir + ": not a strata mount");
  const std::vector<std::string> loops = LoopsBackedBy(dir + "/" + kDisk);
  auto from_our_loop = [&](const std::string& source) {
    for (const std::string& l : loops) {
      if (source == l) return true;
    }
    return false;
  };
  std::vector<std::string> below;
  for (const MountInfo& m : mounts) {
    if (m.target.rfind(dir + "/", 0) != 0) continue;
    if (!from_our_loop(m.source)) {
      return Status::Busy(dir + ": " + m.target + " is mounted from " + m.source +
                          ", which strata did not mount; unmount it first");
    }
    below.push_back(m.target);
  }
  std::sort(below.begin(), below.end(), [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  for (const std::string& t : below) {
    if (::umount2(t.c_str(), 0) != 0 && errno != EINVAL) {
      return Status::FromErrno(errno, "umount " + t + " (a process may still use it)");
    }
    notes->push_back("unmounted " + t);
  }
  // The loop devices detach themselves (auto-clear) once nothing holds
  // them; wait for that, so dir/disk.raw is no longer open.
  for (const std::string& l : loops) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    bool cleared = false;
    while (std::chrono::steady_clock::now() < deadline) {
      auto still = LoopsBackedBy(dir + "/" + kDisk);
      if (std::find(still.begin(), still.end(), l) == still.end()) {
        cleared = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!cleared) {
      int fd = ::open(l.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd >= 0) {
        ::ioctl(fd, LOOP_CLR_FD, 0);
        ::close(fd);
      }
    }
    notes->push_back("detached " + l);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (true) {
    int rc;
    int err = 0;
    if (::geteuid() == 0) {
      rc = ::umount2(dir.c_str(), 0);
      err = errno;
    } else {
      auto r = RunAndWait({"fusermount3", "-u", "-q", dir});
      rc = r && *r == 0 ? 0 : -1;
      err = EBUSY;
    }
    if (rc == 0) break;
    if (err != EBUSY || std::chrono::steady_clock::now() > deadline) {
      return Status::FromErrno(err, "umount " + dir + " (a process may still use it)");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  notes->push_back("unmounted " + dir);
  return Status::Ok();
}

// ---- the daemon ----

// What the mount process reports, one line each: "error: MESSAGE",
// "note: MESSAGE", "json: DOCUMENT", a human line, and "ok" once everything
// is mounted. Present() shows a line as `strata mount` prints it (human lines
// or the JSON document on stdout, notes and errors on stderr) and returns
// true for "ok".
bool Present(const std::string& line, bool json) {
  const char* tool = "strata mount";
  if (line == "ok") return true;
  if (line.rfind("error: ", 0) == 0) {
    (void)Fail(tool, Status(StatusCode::kIoError, line.substr(7)));
  } else if (line.rfind("note: ", 0) == 0) {
    std::fprintf(stderr, "%s: %s\n", tool, line.c_str());
  } else if (line.rfind("json: ", 0) == 0) {
    if (json) std::printf("%s\n", line.substr(6).c_str());
  } else if (!json) {
    std::printf("%s\n", line.c_str());
  }
  std::fflush(stdout);
  return false;
}

struct Reporter {
  int fd;     // the pipe to the waiting parent; -1: in the foreground, shown here
  bool json;  // --json
  void Line(const std::string& s) const {
    if (fd < 0) {
      (void)Present(s, json);
      return;
    }
    std::string l = s + "\n";
    ssize_t w = ::write(fd, l.data(), l.size());
    (void)w;
  }
};

bool StillMounted(const std::string& dir) {
  auto mounts = ReadMountInfo();
  if (!mounts) return false;
  return std::any_of(mounts->begin(), mounts->end(),
                     [&](const MountInfo& m) { return m.target == dir && m.fstype == "fuse.strata"; });
}

// Mounts each partition's file system (a disk without a partition table:
// its whole-disk file system as p0) through a read-only loop device over
// its range of DIR/disk.raw. Partitions without a mountable file system are
// reported and skipped. Returns the loop devices and what was mounted.
Status MountPartitions(MountFs& fs, const Reporter& out, std::vector<Mounted>* mounted) {
  const std::string file = fs.dir + "/" + kDisk;
  STRATA_ASSIGN_OR_RETURN(std::vector<Partition> parts, ListPartitions(file));
  if (parts.empty()) parts.push_back({0, 0, 0});
  for (const Partition& p : parts) {
    const std::string name = "p" + std::to_string(p.number);
    const std::string what = p.number ? "partition " + std::to_string(p.number) : "the disk";
    std::string type = ProbeFsType(file, p.offset, p.size);
    if (type.empty()) {
      out.Line("note: " + what + " holds no file system strata can mount");
      continue;
    }
    auto loop = AttachLoop(file, "strata:" + fs.id + ":" + name, p.offset, p.size);
    if (!loop) return loop.error();
    {
      std::lock_guard<std::mutex> l(fs.mu);
      fs.subdirs.push_back(name);
    }
    Status st = MountReadOnly(loop->path, fs.dir + "/" + name, type);
    // The mount holds the device now; with auto-clear it goes when the
    // file system is unmounted (or now, if the mount failed).
    ::close(loop->fd);
    if (!st.ok()) {
      out.Line("note: " + what + ": " + st.message());
      std::lock_guard<std::mutex> l(fs.mu);
      fs.subdirs.pop_back();
      continue;
    }
    mounted->push_back({name, type, loop->path});
  }
  if (mounted->empty()) out.Line("note: no file system was mounted");
  return Status::Ok();
}

int RunDaemon(MountFs& fs, bool partitions, const Reporter& out, bool foreground) {
  // Stop signals are taken by a sigwait below, never by the FUSE threads:
  // stopping unmounts in order while the file keeps being served.
  sigset_t stop;
  sigemptyset(&stop);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGUSR1}) sigaddset(&stop, s);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  fuse_operations ops = {};
  ops.init = FsInit;
  ops.getattr = FsGetattr;
  ops.readdir = FsReaddir;
  ops.open = FsOpen;
  ops.read = FsRead;
  ops.lseek = FsLseek;
  ops.statfs = FsStatfs;
  std::string opts = "ro,default_permissions,fsname=strata:" + fs.id + ",subtype=strata";
  const char* argv[] = {"strata", "-o", opts.c_str()};
  fuse_args args = FUSE_ARGS_INIT(3, const_cast<char**>(argv));
  fuse* f = fuse_new(&args, &ops, sizeof ops, &fs);
  if (!f) {
    out.Line("error: " + fs.dir + ": cannot start FUSE (is /dev/fuse there, and fuse3 installed?)");
    return kExitFailure;
  }
  if (fuse_mount(f, fs.dir.c_str()) != 0) {
    fuse_destroy(f);
    out.Line("error: " + fs.dir + ": FUSE mount failed (see above)");
    return kExitFailure;
  }
  {
    std::lock_guard<std::mutex> l(fs.mu);
    fs.state = StateJson(fs, {});
  }
  const pthread_t main_thread = pthread_self();
  std::thread loop([&] {
    fuse_loop_config cfg = {};
    cfg.clone_fd = 0;
    cfg.max_idle_threads = 10;
    fuse_loop_mt(f, &cfg);
    pthread_kill(main_thread, SIGUSR1);  // the mount is gone
  });

  std::vector<Mounted> mounted;
  Status setup;
  if (partitions) setup = MountPartitions(fs, out, &mounted);
  {
    std::lock_guard<std::mutex> l(fs.mu);
    fs.state = StateJson(fs, mounted);
  }
  std::vector<std::string> notes;
  if (!setup.ok()) {
    out.Line("error: " + setup.message());
    Status u = UnmountStrata(fs.dir, &notes);
    if (!u.ok()) {
      fuse_exit(f);
      fuse_unmount(f);
    }
    loop.join();
    fuse_destroy(f);
    return kExitFailure;
  }
  out.Line("mounted backup " + fs.id + " at " + fs.dir + ": " + fs.dir + "/" + kDisk + " (" +
           FormatBytes(fs.size) + ", read-only)");
  for (const Mounted& m : mounted) out.Line(fs.dir + "/" + m.name + ": " + m.fstype + " (" + m.device + ", read-only)");
  {
    std::lock_guard<std::mutex> l(fs.mu);
    std::string doc = fs.state;  // DIR/.strata-mount: pid, backup, dir, size, partitions
    while (!doc.empty() && doc.back() == '\n') doc.pop_back();
    out.Line("json: " + doc);
  }
  out.Line("ok");
  if (!foreground) {
    // Let the parent return: nothing of its stdout or stderr stays open.
    int devnull = ::open("/dev/null", O_RDWR);
    for (int fd = 0; fd <= 2; ++fd) ::dup2(devnull, fd);
    if (devnull > 2) ::close(devnull);
    ::close(out.fd);
  }

  // Until the mount goes: DIR unmounted by `strata umount` (the loop ends,
  // SIGUSR1), or a stop signal, which unmounts everything in order first.
  while (true) {
    int sig = 0;
    if (sigwait(&stop, &sig) != 0) continue;
    if (sig == SIGUSR1) break;
    notes.clear();
    Status u = UnmountStrata(fs.dir, &notes);
    if (!u.ok()) {
      syslog(LOG_ERR, "strata mount %s: stopping: %s", fs.dir.c_str(), u.message().c_str());
      if (foreground) std::fprintf(stderr, "strata mount: %s\n", u.message().c_str());
    }
  }
  loop.join();
  if (StillMounted(fs.dir)) fuse_unmount(f);
  fuse_destroy(f);
  return kExitOk;
}

}  // namespace

int MountMain(int argc, char** argv) {
  const char* tool = "strata mount";
  auto a = Args::Parse(argc, argv, 1, {"--repo", "--backup", "--disk", "--cache", "--lock-wait"},
                       {"--help", "--partitions", "--foreground", "--json"});
  if (!a) return Usage(tool, a.error().message());
  if (a->Has("--help")) {
    std::puts(
        "Usage: strata mount --repo REPO [--backup ID|latest] [--disk NAME] [--partitions]\n"
        "                    [--cache SIZE] [--foreground] DIR\n\n"
        "Presents a backup point as the read-only file DIR/disk.raw (FUSE: no nbd kernel\n"
        "module needed). Reads go through the backup chain with every checksum verified;\n"
        "SEEK_HOLE/SEEK_DATA skip what reads as zeros. With --partitions (root), the\n"
        "partition table is read (libblkid: GPT, MBR) and each partition's file system\n"
        "is mounted read-only (nosuid, nodev, noexec, journal not replayed) at DIR/pN\n"
        "through a read-only loop device over its range of DIR/disk.raw; a disk without\n"
        "a partition table has its file system at DIR/p0. DIR/.strata-mount describes\n"
        "the mount (JSON). Runs in the\n"
        "background once everything is mounted; 'strata umount DIR' undoes it all.\n\n"
        "Options:\n"
        "  --cache SIZE     decompressed frames kept in memory (default 256M; 0: none)\n"
        "  --foreground     stay in the foreground (SIGINT/SIGTERM unmount)\n"
        "  --lock-wait SECS wait for a writer holding the repository (default 0)\n"
        "  --json           print DIR/.strata-mount's document (pid, backup, dir, size,\n"
        "                   partitions) instead of the lines above");
    return kExitOk;
  }
  if (!a->Has("--repo") || a->positional().size() != 1) return Usage(tool, "expected --repo REPO DIR");
  char real[PATH_MAX];
  if (!::realpath(a->positional()[0].c_str(), real)) return Fail(tool, Status::FromErrno(errno, a->positional()[0]));
  const std::string dir = real;
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Fail(tool, Status::InvalidArgument(dir + ": not a directory"));
  }
  if (a->Has("--partitions") && ::geteuid() != 0) {
    return Fail(tool, Status::InvalidArgument("--partitions needs root (loop devices and mounts)"));
  }
  if (StillMounted(dir)) return Fail(tool, Status::AlreadyExists(dir + ": a strata mount is already there"));
  uint64_t cache = 256ull << 20;
  if (auto v = a->Get("--cache")) {
    auto n = ParseSize(*v);
    if (!n) return Usage(tool, "--cache: " + n.error().message());
    cache = *n;
  }
  auto lock_wait = LockWait(*a);
  if (!lock_wait) return Usage(tool, lock_wait.error().message());
  const bool json = a->Has("--json");

  MountFs fs;
  strata_point_params pp;
  strata_point_params_init(&pp);
  std::string backup = a->Get("--backup").value_or("latest"), disk = a->Get("--disk").value_or("");
  pp.backup = backup.c_str();
  pp.disk = a->Has("--disk") ? disk.c_str() : nullptr;
  pp.cache_bytes = cache;
  pp.lock_wait_ms = static_cast<uint32_t>(lock_wait->count());
  if (int rc = strata_point_open(a->Get("--repo")->c_str(), &pp, &fs.point); rc != STRATA_OK) {
    return Fail(tool, Status(static_cast<StatusCode>(rc), strata_last_error()), true);
  }
  fs.id = strata_point_id(fs.point);
  fs.dir = dir;
  fs.size = strata_point_size(fs.point);
  fs.uid = ::getuid();
  fs.gid = ::getgid();
  ::clock_gettime(CLOCK_REALTIME, &fs.time);
  openlog("strata", LOG_PID, LOG_DAEMON);

  if (a->Has("--foreground")) {
    Reporter out{-1, json};
    int rc = RunDaemon(fs, a->Has("--partitions"), out, true);
    strata_point_close(fs.point);
    return rc;
  }
  // The daemon reports through a pipe; this process prints what it says
  // and exits with its verdict once everything is mounted (or failed).
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return Fail(tool, Status::FromErrno(errno, "pipe"));
  pid_t pid = ::fork();
  if (pid < 0) return Fail(tool, Status::FromErrno(errno, "fork"));
  if (pid == 0) {
    ::close(p[0]);
    ::setsid();
    Reporter out{p[1], json};
    int rc = RunDaemon(fs, a->Has("--partitions"), out, false);
    strata_point_close(fs.point);
    ::_exit(rc);
  }
  ::close(p[1]);
  strata_point_close(fs.point);
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(p[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) text.append(buf, static_cast<size_t>(n));
  }
  ::close(p[0]);
  bool ok = false;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t e = text.find('\n', pos);
    std::string line = text.substr(pos, e == std::string::npos ? std::string::npos : e - pos);
    pos = e == std::string::npos ? text.size() : e + 1;
    if (Present(line, json)) ok = true;
  }
  if (!ok) {
    if (text.find("error: ") == std::string::npos) {
      return Fail(tool, Status(StatusCode::kIoError, "the mount process ended without reporting (see syslog)"));
    }
    return kExitFailure;
  }
  return kExitOk;
}

int UmountMain(int argc, char** argv) {
  const char* tool = "strata umount";
  auto a = Args::Parse(argc, argv, 1, {}, {"--help", "--json"});
  if (!a) return Usage(tool, a.error().message());
  if (a->Has("--help")) {
    std::puts(
        "Usage: strata umount [--json] DIR\n\n"
        "Undoes 'strata mount': unmounts the partitions it mounted under DIR, waits for\n"
        "their loop device to detach, unmounts DIR and waits for the mount process to\n"
        "exit. Mounts strata did not make are never touched: DIR must be a strata mount\n"
        "and hold no other mount. --json prints {\"unmounted\": DIR, \"notes\": [...]}.");
    return kExitOk;
  }
  if (a->positional().size() != 1) return Usage(tool, "expected DIR");
  char real[PATH_MAX];
  if (!::realpath(a->positional()[0].c_str(), real)) {
    // A mount whose process died answers ENOTCONN: use the path as given.
    if (errno != ENOTCONN) return Fail(tool, Status::FromErrno(errno, a->positional()[0]));
    std::snprintf(real, sizeof real, "%s", AbsolutePath(a->positional()[0]).c_str());
  }
  const std::string dir = real;
  // The mount process's pid, to wait for it (absent if it died).
  pid_t daemon = -1;
  if (std::ifstream f(dir + "/" + kState); f) {
    Json state = Json::parse(f, nullptr, /*allow_exceptions=*/false);
    if (state.is_object() && state.contains("pid") && state["pid"].is_number_integer()) {
      daemon = state["pid"].get<pid_t>();
    }
  }
  std::vector<std::string> notes;
  Status st = UnmountStrata(dir, &notes);
  if (!a->Has("--json")) {
    for (const std::string& n : notes) std::printf("%s\n", n.c_str());
  }
  if (!st.ok()) return Fail(tool, st);
  if (daemon > 0) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (ProcessAlive(daemon) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (ProcessAlive(daemon)) {
      return Fail(tool, Status::Busy("the mount process " + std::to_string(daemon) + " has not exited after 10 s"));
    }
  }
  if (a->Has("--json")) PrintJson(Json{{"unmounted", dir}, {"notes", notes}});
  return kExitOk;
}

}  // namespace strata::cli
