#include "strata/quiesce_resolve.h"

#include <fcntl.h>
#include <libmount/libmount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <filesystem>
#include <cstdio>
#include <iterator>
#include <map>
#include <memory>
#include <set>

namespace strata::quiesce {
namespace {

namespace fs = std::filesystem;

bool ParseU32(std::string_view s, uint32_t* out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

bool ParseDev(std::string_view s, uint32_t* major, uint32_t* minor) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.remove_suffix(1);
  size_t colon = s.find(':');
  if (colon == std::string_view::npos) return false;
  return ParseU32(s.substr(0, colon), major) && ParseU32(s.substr(colon + 1), minor);
}

Result<std::string> ReadSmallFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, path);
  std::string s;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = errno;
      ::close(fd);
      if (n < 0) return Status::FromErrno(err, path);
      return s;
    }
    s.append(buf, static_cast<size_t>(n));
    if (s.size() > (1u << 20)) {
      ::close(fd);
      return Status::Corruption(path + ": larger than 1 MiB");
    }
  }
}

std::string DevKey(uint32_t major, uint32_t minor) {
  return std::to_string(major) + ":" + std::to_string(minor);
}

// Filesystems by device key, in mountinfo order; prefers a mount whose root
// is "/" (bind mounts of subdirectories are the same superblock).
std::vector<Filesystem> Filesystems(const std::vector<MountEntry>& mounts) {
  std::vector<Filesystem> out;
  std::vector<bool> is_root_mount;
  std::map<std::string, size_t> index;
  for (const MountEntry& m : mounts) {
    std::string key = DevKey(m.major, m.minor);
    Filesystem f{m.mount_point, m.fs_type, m.source, m.major, m.minor};
    auto it = index.find(key);
    if (it == index.end()) {
      index[key] = out.size();
      out.push_back(f);
      is_root_mount.push_back(m.root == "/");
    } else if (!is_root_mount[it->second] && m.root == "/") {
      out[it->second] = f;  // prefer the whole filesystem over a subdir bind
      is_root_mount[it->second] = true;
    }
  }
  return out;
}

class Sysfs {
 public:
  explicit Sysfs(std::string root) : root_(std::move(root)) {}
  std::string BlockDir(const std::string& name) const { return root_ + "/class/block/" + name; }
  bool Exists(const std::string& name) const {
    std::error_code ec;
    return !name.empty() && name.find('/') == std::string::npos &&
           fs::exists(BlockDir(name) + "/dev", ec);
  }
  // Name of the block device with this dev_t, from /sys/dev/block/MAJ:MIN.
  std::string NameOf(uint32_t major, uint32_t minor) const {
    std::error_code ec;
    fs::path link = root_ + "/dev/block/" + DevKey(major, minor);
    fs::path target = fs::read_symlink(link, ec);
    if (!ec) return target.filename().string();
    // Fallback: scan class/block.
    for (const auto& e : fs::directory_iterator(root_ + "/class/block", ec)) {
      std::string name = e.path().filename().string();
      uint32_t ma, mi;
      if (Dev(name, &ma, &mi) && ma == major && mi == minor) return name;
    }
    return "";
  }
  bool Dev(const std::string& name, uint32_t* major, uint32_t* minor) const {
    auto text = ReadSmallFile(BlockDir(name) + "/dev");
    return text.has_value() && ParseDev(*text, major, minor);
  }
  // Entries of class/block/NAME/SUB (holders or slaves).
  std::vector<std::string> List(const std::string& name, const std::string& sub) const {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(BlockDir(name) + "/" + sub, ec)) {
      out.push_back(e.path().filename().string());
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  std::vector<std::string> Partitions(const std::string& name) const {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(BlockDir(name), ec)) {
      std::error_code ec2;
      if (fs::exists(e.path() / "partition", ec2)) out.push_back(e.path().filename().string());
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  // `name`, its partitions and everything stacked above them.
  std::vector<std::string> Closure(const std::string& name) const {
    std::vector<std::string> order;
    std::set<std::string> seen;
    std::vector<std::string> todo{name};
    while (!todo.empty() && order.size() < 4096) {  // bound against cycles
      std::string n = todo.back();
      todo.pop_back();
      if (!seen.insert(n).second) continue;
      order.push_back(n);
      for (auto& p : Partitions(n)) todo.push_back(p);
      for (auto& h : List(n, "holders")) todo.push_back(h);
    }
    return order;
  }
  // Leaf disks under `name` via slaves (for display).
  void Leaves(const std::string& name, std::vector<std::string>* out, int depth = 0) const {
    auto slaves = List(name, "slaves");
    if (slaves.empty() || depth > 16) {
      out->push_back(name);
      return;
    }
    for (auto& s : slaves) Leaves(s, out, depth + 1);
  }

 private:
  std::string root_;
};

std::string Join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += sep;
    out += v[i];
  }
  return out;
}

}  // namespace

namespace {

// libmount reports a line it cannot parse through this callback; we stop at
// the first one.
int OnParseError(libmnt_table* tb, const char* /*filename*/, int line) {
  int* first = static_cast<int*>(mnt_table_get_userdata(tb));
  if (*first == 0) *first = line;
  return -1;
}

struct TableDeleter {
  void operator()(libmnt_table* t) const { mnt_unref_table(t); }
};
struct IterDeleter {
  void operator()(libmnt_iter* i) const { mnt_free_iter(i); }
};

// Parses mountinfo from `f` (or, when null, the file `name`) with libmount.
Result<std::vector<MountEntry>> ParseWithLibmount(FILE* f, const std::string& name) {
  std::unique_ptr<libmnt_table, TableDeleter> tb(mnt_new_table());
  if (!tb) return Status::FromErrno(ENOMEM, name + ": libmount table");
  int bad_line = 0;
  mnt_table_set_userdata(tb.get(), &bad_line);
  mnt_table_set_parser_errcb(tb.get(), OnParseError);
  int rc = f != nullptr ? mnt_table_parse_stream(tb.get(), f, name.c_str())
                        : mnt_table_parse_file(tb.get(), name.c_str());
  if (bad_line != 0) {
    return Status::Corruption(name + ": line " + std::to_string(bad_line) +
                              ": not a mountinfo line (libmount cannot parse it)");
  }
  if (rc != 0) return Status::FromErrno(rc < 0 ? -rc : EIO, name + ": libmount");
  std::vector<MountEntry> out;
  std::unique_ptr<libmnt_iter, IterDeleter> it(mnt_new_iter(MNT_ITER_FORWARD));
  if (!it) return Status::FromErrno(ENOMEM, name + ": libmount iterator");
  libmnt_fs* fs = nullptr;
  while (mnt_table_next_fs(tb.get(), it.get(), &fs) == 0) {
    auto str = [](const char* s) { return std::string(s != nullptr ? s : ""); };
    MountEntry m;
    m.mount_id = static_cast<uint32_t>(mnt_fs_get_id(fs));
    dev_t dev = mnt_fs_get_devno(fs);
    m.major = major(dev);
    m.minor = minor(dev);
    m.root = str(mnt_fs_get_root(fs));
    m.mount_point = str(mnt_fs_get_target(fs));
    m.fs_type = str(mnt_fs_get_fstype(fs));
    m.source = str(mnt_fs_get_source(fs));
    if (m.mount_point.empty() || m.mount_point[0] != '/') {
      return Status::Corruption(name + ": mount id " + std::to_string(m.mount_id) +
                                ": mount point '" + m.mount_point + "' is not absolute");
    }
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace

Result<std::vector<MountEntry>> ParseMountInfo(std::string_view text, const std::string& name) {
  if (text.empty()) return std::vector<MountEntry>{};
  // fmemopen reads our buffer in place; libmount parses it like a file.
  FILE* f = ::fmemopen(const_cast<char*>(text.data()), text.size(), "r");
  if (f == nullptr) return Status::FromErrno(errno, name + ": fmemopen");
  auto r = ParseWithLibmount(f, name);
  std::fclose(f);
  return r;
}

Result<std::vector<MountEntry>> ReadMountInfo(const std::string& path) {
  // libmount opens the file itself (close-on-exec).
  if (::access(path.c_str(), R_OK) != 0) return Status::FromErrno(errno, path);
  return ParseWithLibmount(nullptr, path);
}

bool PathWithin(const std::string& path, const std::string& dir) {
  if (dir.empty() || path.empty()) return false;
  std::string d = dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  if (d == "/") return path[0] == '/';
  if (path.compare(0, d.size(), d) != 0) return false;
  return path.size() == d.size() || path[d.size()] == '/';
}

Result<Filesystem> FilesystemOfPath(const std::string& path,
                                    const std::vector<MountEntry>& mounts) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Status::FromErrno(errno, path);
  uint32_t ma = major(st.st_dev), mi = minor(st.st_dev);
  for (const Filesystem& f : Filesystems(mounts)) {
    if (f.major == ma && f.minor == mi) return f;
  }
  return Status::NotFound(path + ": no mounted filesystem with device " + DevKey(ma, mi) +
                          " in mountinfo");
}

Result<Resolution> ResolveTargets(const std::vector<std::string>& targets,
                                  const std::string& mountinfo_path,
                                  const std::string& sysfs_root) {
  if (targets.empty()) return Status::InvalidArgument("no quiesce targets given");
  STRATA_ASSIGN_OR_RETURN(auto mounts, ReadMountInfo(mountinfo_path));
  std::vector<Filesystem> all = Filesystems(mounts);
  Sysfs sysfs(sysfs_root);
  Resolution res;
  std::set<std::string> chosen;
  for (const std::string& t : targets) {
    ResolvedTarget rt;
    rt.target = t;
    std::string dev_name;
    struct stat st;
    bool exists = ::stat(t.c_str(), &st) == 0;
    if (exists && S_ISBLK(st.st_mode)) {
      dev_name = sysfs.NameOf(major(st.st_rdev), minor(st.st_rdev));
      if (dev_name.empty()) {
        return Status::NotFound(t + ": block device " +
                                DevKey(major(st.st_rdev), minor(st.st_rdev)) + " not found under " +
                                sysfs_root + "/dev/block");
      }
    } else if (!exists && sysfs.Exists(t)) {
      dev_name = t;  // a bare kernel name: "loop0", "dm-1", "sda2"
    } else if (!exists) {
      return Status::NotFound(t + ": no such file, mount point or block device");
    }
    std::set<std::string> keys;
    if (!dev_name.empty()) {
      rt.kind = "block device";
      rt.devices = sysfs.Closure(dev_name);
      for (const auto& n : rt.devices) {
        uint32_t ma, mi;
        if (sysfs.Dev(n, &ma, &mi)) keys.insert(DevKey(ma, mi));
      }
    } else {
      rt.kind = "path";
      keys.insert(DevKey(major(st.st_dev), minor(st.st_dev)));
    }
    for (const Filesystem& f : all) {
      if (!keys.count(f.Key())) continue;
      rt.mount_points.push_back(f.mount_point);
      if (chosen.insert(f.Key()).second) res.filesystems.push_back(f);
    }
    if (rt.mount_points.empty()) {
      return Status::NotFound(t + ": no mounted filesystem uses " +
                              (dev_name.empty() ? "this path" : Join(rt.devices, ",")) + " (per " +
                              mountinfo_path + ")");
    }
    res.targets.push_back(std::move(rt));
  }
  // Keep mountinfo order for the union (freeze parents before children).
  std::vector<Filesystem> ordered;
  for (const Filesystem& f : all) {
    for (const Filesystem& g : res.filesystems) {
      if (g.Key() == f.Key()) ordered.push_back(g);
    }
  }
  res.filesystems = std::move(ordered);
  // Annotate each chosen filesystem with the disks under it (slaves).
  for (Filesystem& f : res.filesystems) {
    if (f.major == 0) continue;  // no block device (tmpfs, overlay, ...)
    std::string n = sysfs.NameOf(f.major, f.minor);
    if (!n.empty()) sysfs.Leaves(n, &f.disks);
  }
  return res;
}

std::string Resolution::ToString() const {
  std::string out;
  for (const ResolvedTarget& t : targets) {
    out += t.target + " (" + t.kind;
    if (!t.devices.empty()) out += " " + Join(t.devices, " ");
    out += ") -> " + Join(t.mount_points, " ") + "\n";
  }
  for (const Filesystem& f : filesystems) {
    out += "would freeze " + f.mount_point + " [" + f.fs_type + " " + f.source + " " + f.Key();
    if (!f.disks.empty()) out += " on " + Join(f.disks, " ");
    out += "]\n";
  }
  return out;
}

}  // namespace strata::quiesce
