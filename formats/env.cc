#include "strata/env.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "strata/id128.h"

namespace strata {

std::string DirName(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Status Env::WriteFileAtomic(const std::string& path, std::span<const uint8_t> data) {
  const std::string tmp = path + ".tmp." + Id128ToHex(RandomId128()).substr(0, 12);
  Status s;
  {
    auto f = Open(tmp, OpenMode::kCreateExclusive);
    if (!f) return f.error();
    s = (*f)->Write(0, data);
    if (s.ok()) s = (*f)->Sync();
  }
  if (s.ok()) s = Rename(tmp, path);
  if (!s.ok()) {
    (void)Remove(tmp);
    return s;
  }
  // The new contents are in place from here on, whatever SyncDir says: the
  // caller reports the error but must not undo what the name now holds.
  return SyncDirOf(path);
}

Result<std::vector<uint8_t>> Env::ReadWholeFile(const std::string& path) {
  STRATA_ASSIGN_OR_RETURN(auto f, Open(path, OpenMode::kReadOnly));
  STRATA_ASSIGN_OR_RETURN(uint64_t size, f->Size());
  if (size > (uint64_t{1} << 34)) return Status::InvalidArgument(path + ": too large to load");
  std::vector<uint8_t> buf(size);
  STRATA_RETURN_IF_ERROR(f->ReadFull(0, buf));
  return buf;
}

Status Env::SyncDirOf(const std::string& path) { return SyncDir(DirName(path)); }

// ---------------------------------------------------------------------------
// POSIX

namespace {

class PosixLock : public FileLock {
 public:
  explicit PosixLock(int fd) : fd_(fd) {}
  ~PosixLock() override { ::close(fd_); }  // closing releases an OFD lock

 private:
  int fd_;
};

class PosixEnv : public Env {
 public:
  Result<std::unique_ptr<File>> Open(const std::string& path, OpenMode mode, bool direct) override {
    return OpenPosixFile(path, mode, direct, 0600);
  }
  Status Rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) return Status::FromErrno(errno, to + ": rename from " + from);
    return Status::Ok();
  }
  Status Remove(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return Status::FromErrno(errno, path + ": remove");
    return Status::Ok();
  }
  Status MakeDir(const std::string& path) override {
    if (::mkdir(path.c_str(), 0700) != 0) {
      if (errno == EEXIST) return Status::AlreadyExists(path + ": already exists");
      return Status::FromErrno(errno, path);
    }
    return Status::Ok();
  }
  Status RemoveDir(const std::string& path) override {
    if (::rmdir(path.c_str()) != 0) return Status::FromErrno(errno, path + ": remove");
    return Status::Ok();
  }
  Result<std::vector<std::string>> ListDir(const std::string& dir) override {
    DIR* d = ::opendir(dir.c_str());
    if (!d) return Status::FromErrno(errno, dir);
    std::vector<std::string> out;
    while (dirent* e = ::readdir(d)) {
      if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
      out.emplace_back(e->d_name);
    }
    ::closedir(d);
    return out;
  }
  Status SyncDir(const std::string& dir) override {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Status::FromErrno(errno, dir);
    int rc = ::fsync(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0) return Status::FromErrno(err, dir + ": fsync");
    return Status::Ok();
  }
  bool Exists(const std::string& path) override {
    struct stat st;
    return ::lstat(path.c_str(), &st) == 0;
  }
  Result<std::unique_ptr<FileLock>> Lock(const std::string& path, LockMode mode,
                                         std::chrono::milliseconds wait) override {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 && mode == LockMode::kShared && (errno == EACCES || errno == EROFS || errno == EPERM)) {
      fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);  // read-only media: shared locks still work
    }
    if (fd < 0) return Status::FromErrno(errno, path);
    struct flock fl {};
    fl.l_type = mode == LockMode::kShared ? F_RDLCK : F_WRLCK;
    fl.l_whence = SEEK_SET;
    const auto deadline = std::chrono::steady_clock::now() + wait;
    for (;;) {
      if (::fcntl(fd, F_OFD_SETLK, &fl) == 0) return std::unique_ptr<FileLock>(new PosixLock(fd));
      int err = errno;
      if (err != EAGAIN && err != EACCES && err != EINTR) {
        ::close(fd);
        return Status::FromErrno(err, path + ": lock");
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        ::close(fd);
        return Status::Busy(path + ": in use by another process");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
};

}  // namespace

Env* Env::Default() {
  static PosixEnv* env = new PosixEnv;
  return env;
}

// ---------------------------------------------------------------------------
// FaultEnv

namespace {
struct Inode {
  std::vector<uint8_t> data, durable;
};
}  // namespace

struct FaultEnv::State {
  std::mutex mu;
  std::map<std::string, std::shared_ptr<Inode>> files, durable_files;
  std::set<std::string> dirs{"/"}, durable_dirs{"/"};
  std::map<std::string, int> locks;  // -1 exclusive, n > 0 shared holders
  uint64_t calls = 0, cut_after = 0;
  uint64_t generation = 0;  // grows at every power cut: older handles are dead
  bool cut = false;

  // Counts one mutating call; false (EIO) once the power is gone.
  bool Tick() {
    if (cut) return false;
    ++calls;
    if (cut_after != 0 && calls >= cut_after) {
      cut = true;
      return false;
    }
    return true;
  }
  static Status Dead(const std::string& path) { return Status::FromErrno(EIO, path + " (power cut)"); }
};

namespace {

class FaultEnvFile : public File {
 public:
  FaultEnvFile(std::shared_ptr<FaultEnv::State> st, std::shared_ptr<Inode> node, std::string name, bool writable)
      : st_(std::move(st)), node_(std::move(node)), name_(std::move(name)), writable_(writable),
        generation_(st_->generation) {}
  const std::string& name() const override { return name_; }
  Result<uint64_t> Size() override {
    std::lock_guard<std::mutex> l(st_->mu);
    if (Dead()) return FaultEnv::State::Dead(name_);
    return node_->data.size();
  }
  Result<size_t> Read(uint64_t offset, std::span<uint8_t> buf) override {
    std::lock_guard<std::mutex> l(st_->mu);
    if (Dead()) return FaultEnv::State::Dead(name_);
    if (offset >= node_->data.size()) return size_t{0};
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), node_->data.size() - offset));
    std::memcpy(buf.data(), node_->data.data() + offset, n);
    return n;
  }
  Status Write(uint64_t offset, std::span<const uint8_t> data) override {
    std::lock_guard<std::mutex> l(st_->mu);
    if (!writable_) return Status::FromErrno(EBADF, name_ + ": write");
    if (Dead() || !st_->Tick()) return FaultEnv::State::Dead(name_);
    if (data.empty()) return Status::Ok();
    if (node_->data.size() < offset + data.size()) node_->data.resize(offset + data.size());
    std::memcpy(node_->data.data() + offset, data.data(), data.size());
    return Status::Ok();
  }
  Status Sync() override {
    std::lock_guard<std::mutex> l(st_->mu);
    if (Dead() || !st_->Tick()) return FaultEnv::State::Dead(name_);
    node_->durable = node_->data;
    return Status::Ok();
  }
  Status Truncate(uint64_t size) override {
    std::lock_guard<std::mutex> l(st_->mu);
    if (!writable_) return Status::FromErrno(EBADF, name_ + ": truncate");
    if (Dead() || !st_->Tick()) return FaultEnv::State::Dead(name_);
    node_->data.resize(size);
    return Status::Ok();
  }

 private:
  std::shared_ptr<FaultEnv::State> st_;
  std::shared_ptr<Inode> node_;
  std::string name_;
  bool writable_;
  uint64_t generation_;
  bool Dead() const { return st_->cut || generation_ != st_->generation; }
};

class FaultLock : public FileLock {
 public:
  FaultLock(std::shared_ptr<FaultEnv::State> st, std::string path)
      : st_(std::move(st)), path_(std::move(path)), generation_(st_->generation) {}
  ~FaultLock() override {
    std::lock_guard<std::mutex> l(st_->mu);
    if (generation_ != st_->generation) return;  // a power cut released it
    auto it = st_->locks.find(path_);
    if (it == st_->locks.end()) return;
    if (it->second <= 1) st_->locks.erase(it);
    else --it->second;
  }

 private:
  std::shared_ptr<FaultEnv::State> st_;
  std::string path_;
  uint64_t generation_;
};

}  // namespace

FaultEnv::FaultEnv() : state_(std::make_shared<State>()) {}
FaultEnv::~FaultEnv() = default;

Result<std::unique_ptr<File>> FaultEnv::Open(const std::string& path, OpenMode mode, bool) {
  std::lock_guard<std::mutex> l(state_->mu);
  State& s = *state_;
  if (s.cut) return State::Dead(path);
  if (s.dirs.count(path)) return Status::InvalidArgument(path + ": is a directory");
  auto it = s.files.find(path);
  if (it == s.files.end()) {
    if (mode == OpenMode::kReadOnly || mode == OpenMode::kReadWrite) return Status::FromErrno(ENOENT, path);
    if (!s.dirs.count(DirName(path))) return Status::FromErrno(ENOENT, path);
    if (!s.Tick()) return State::Dead(path);
    it = s.files.emplace(path, std::make_shared<Inode>()).first;
  } else if (mode == OpenMode::kCreateExclusive) {
    return Status::AlreadyExists(path + ": already exists");
  }
  return std::unique_ptr<File>(new FaultEnvFile(state_, it->second, path, mode != OpenMode::kReadOnly));
}

Status FaultEnv::Rename(const std::string& from, const std::string& to) {
  std::lock_guard<std::mutex> l(state_->mu);
  State& s = *state_;
  if (!s.Tick()) return State::Dead(to);
  auto it = s.files.find(from);
  if (it == s.files.end()) return Status::FromErrno(ENOENT, to + ": rename from " + from);
  if (!s.dirs.count(DirName(to))) return Status::FromErrno(ENOENT, to + ": rename from " + from);
  s.files[to] = it->second;
  s.files.erase(from);
  return Status::Ok();
}

Status FaultEnv::Remove(const std::string& path) {
  std::lock_guard<std::mutex> l(state_->mu);
  State& s = *state_;
  if (!s.Tick()) return State::Dead(path);
  if (s.files.erase(path) == 0) return Status::FromErrno(ENOENT, path + ": remove");
  return Status::Ok();
}

Status FaultEnv::MakeDir(const std::string& path) {
  std::lock_guard<std::mutex> l(state_->mu);
  State& s = *state_;
  if (s.cut) return State::Dead(path);
  if (s.dirs.count(path) || s.files.count(path)) return Status::AlreadyExists(path + ": already exists");
  if (!s.dirs.count(DirName(path))) return Status::FromErrno(ENOENT, path);
  if (!s.Tick()) return State::Dead(path);
  s.dirs.insert(path);
  return Status::Ok();
}

Status FaultEnv::RemoveDir(const std::string& path) {
  std::lock_guard<std::mutex> l(state_->mu);
  State& s = *state_;
  if (!s.Tick()) return State::Dead(path);
  for (auto& [name, node] : s.files) {
    if (DirName(name) == path) return Status::FromErrno(ENOTEMPTY, path + ": remove");
  }
  if (s.dirs.erase(path) == 0) return Status::FromErrno(ENOENT, path + ": remove");
  return Status::Ok();
}

Result<std::vector<std::string>> FaultEnv::ListDir(const std::string& dir) {
  std::lock_guard<std::mutex> l(state_->mu);
  State& s = *state_;
  if (s.cut) return State::Dead(dir);
  if (!s.dirs.count(dir)) return Status::FromErrno(ENOENT, dir);
  std::vector<std::string> out;
  const std::string prefix = dir == "/" ? "/" : dir + "/";
  for (auto& [name, node] : s.files) {
    if (DirName(name) == dir) out.push_back(name.substr(prefix.size()));
  }
  for (const std::string& d : s.dirs) {
    if (d != dir && DirName(d) == dir) out.push_back(d.substr(prefix.size()));
  }
  return out;
}

Status FaultEnv::SyncDir(const std::string& dir) {
  std::lock_guard<std::mutex> l(state_->mu);
  State& s = *state_;
  if (!s.Tick()) return State::Dead(dir);
  if (!s.dirs.count(dir)) return Status::FromErrno(ENOENT, dir);
  // The durable names of `dir` become its current names.
  for (auto it = s.durable_files.begin(); it != s.durable_files.end();) {
    it = DirName(it->first) == dir ? s.durable_files.erase(it) : std::next(it);
  }
  for (auto& [name, node] : s.files) {
    if (DirName(name) == dir) s.durable_files[name] = node;
  }
  for (auto it = s.durable_dirs.begin(); it != s.durable_dirs.end();) {
    it = (*it != dir && DirName(*it) == dir) ? s.durable_dirs.erase(it) : std::next(it);
  }
  for (const std::string& d : s.dirs) {
    if (d != dir && DirName(d) == dir) s.durable_dirs.insert(d);
  }
  return Status::Ok();
}

bool FaultEnv::Exists(const std::string& path) {
  std::lock_guard<std::mutex> l(state_->mu);
  return state_->files.count(path) || state_->dirs.count(path);
}

Result<std::unique_ptr<FileLock>> FaultEnv::Lock(const std::string& path, LockMode mode,
                                                 std::chrono::milliseconds wait) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    {
      std::lock_guard<std::mutex> l(state_->mu);
      State& s = *state_;
      if (s.cut) return State::Dead(path);
      int& holders = s.locks[path];
      if (mode == LockMode::kExclusive ? holders == 0 : holders >= 0) {
        holders = mode == LockMode::kExclusive ? -1 : holders + 1;
        return std::unique_ptr<FileLock>(new FaultLock(state_, path));
      }
    }
    if (std::chrono::steady_clock::now() >= deadline) return Status::Busy(path + ": in use by another process");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void FaultEnv::CutAfter(uint64_t n) {
  std::lock_guard<std::mutex> l(state_->mu);
  state_->cut_after = n == 0 ? 0 : state_->calls + n;
}

uint64_t FaultEnv::MutatingCalls() const {
  std::lock_guard<std::mutex> l(state_->mu);
  return state_->calls;
}

bool FaultEnv::cut() const {
  std::lock_guard<std::mutex> l(state_->mu);
  return state_->cut;
}

void FaultEnv::PowerCut(CutMode mode) {
  std::lock_guard<std::mutex> l(state_->mu);
  State& s = *state_;
  if (mode != CutMode::kKeepNames) {
    s.files = s.durable_files;
    s.dirs = s.durable_dirs;
  }
  // Every inode still named: its unsynced bytes are lost (or kept).
  std::set<Inode*> seen;
  for (auto& [name, node] : s.files) {
    if (!seen.insert(node.get()).second) continue;
    if (mode == CutMode::kKeepBytes) node->durable = node->data;
    else node->data = node->durable;
  }
  // A directory whose name survived but whose parent did not is gone too.
  for (bool changed = true; changed;) {
    changed = false;
    for (auto it = s.dirs.begin(); it != s.dirs.end();) {
      if (*it != "/" && !s.dirs.count(DirName(*it))) {
        it = s.dirs.erase(it);
        changed = true;
      } else {
        ++it;
      }
    }
  }
  for (auto it = s.files.begin(); it != s.files.end();) {
    it = s.dirs.count(DirName(it->first)) ? std::next(it) : s.files.erase(it);
  }
  s.durable_files = s.files;
  s.durable_dirs = s.dirs;
  s.locks.clear();  // the process holding them is gone
  ++s.generation;
  s.cut = false;
  s.cut_after = 0;
}

Result<std::vector<uint8_t>> FaultEnv::Contents(const std::string& path) {
  std::lock_guard<std::mutex> l(state_->mu);
  auto it = state_->files.find(path);
  if (it == state_->files.end()) return Status::FromErrno(ENOENT, path);
  return it->second->data;
}

}  // namespace strata
