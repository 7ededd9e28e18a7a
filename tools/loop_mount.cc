#include "tools/loop_mount.h"

#include <blkid.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace strata::cli {

Result<std::vector<Partition>> ListPartitions(const std::string& file) {
  blkid_probe pr = blkid_new_probe_from_filename(file.c_str());
  if (!pr) return Status::FromErrno(errno ? errno : EIO, file + ": cannot probe");
  blkid_probe_enable_superblocks(pr, 0);
  blkid_probe_enable_partitions(pr, 1);
  std::vector<Partition> out;
  blkid_partlist ls = blkid_probe_get_partitions(pr);
  const int n = ls ? blkid_partlist_numof_partitions(ls) : 0;
  for (int i = 0; i < n; ++i) {
    blkid_partition p = blkid_partlist_get_partition(ls, i);
    if (!p || blkid_partition_is_extended(p)) continue;
    blkid_loff_t start = blkid_partition_get_start(p), size = blkid_partition_get_size(p);
    if (start < 0 || size <= 0) continue;
    // libblkid counts in 512-byte sectors whatever the table's sector size.
    out.push_back({blkid_partition_get_partno(p), static_cast<uint64_t>(start) * 512,
                   static_cast<uint64_t>(size) * 512});
  }
  blkid_free_probe(pr);
  return out;
}

std::string ProbeFsType(const std::string& file, uint64_t offset, uint64_t size) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  blkid_probe pr = blkid_new_probe();
  std::string type;
  if (pr && blkid_probe_set_device(pr, fd, static_cast<blkid_loff_t>(offset), static_cast<blkid_loff_t>(size)) == 0) {
    blkid_probe_enable_superblocks(pr, 1);
    blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE | BLKID_SUBLKS_USAGE);
    blkid_probe_enable_partitions(pr, 0);
    if (blkid_do_safeprobe(pr) == 0) {
      const char* usage = nullptr;
      const char* t = nullptr;
      if (blkid_probe_lookup_value(pr, "USAGE", &usage, nullptr) == 0 && usage &&
          std::strcmp(usage, "filesystem") == 0 && blkid_probe_lookup_value(pr, "TYPE", &t, nullptr) == 0 && t) {
        type = t;
      }
    }
  }
  if (pr) blkid_free_probe(pr);
  ::close(fd);
  return type;
}

Result<LoopDevice> AttachLoop(const std::string& file, const std::string& label, uint64_t offset,
                              uint64_t size) {
  int backing = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (backing < 0) return Status::FromErrno(errno, file);
  int ctl = ::open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (ctl < 0) {
    int e = errno;
    ::close(backing);
    return Status::FromErrno(e, "/dev/loop-control (loop devices need root and the loop driver)");
  }
  Status last;
  // Another process may take the free device between GET_FREE and
  // CONFIGURE (EBUSY): ask again.
  for (int attempt = 0; attempt < 20; ++attempt) {
    int n = ::ioctl(ctl, LOOP_CTL_GET_FREE);
    if (n < 0) {
      last = Status::FromErrno(errno, "LOOP_CTL_GET_FREE");
      break;
    }
    LoopDevice d;
    d.number = n;
    d.path = "/dev/loop" + std::to_string(n);
    d.fd = ::open(d.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (d.fd < 0) {
      last = Status::FromErrno(errno, d.path);
      continue;
    }
    loop_config c = {};
    c.fd = static_cast<uint32_t>(backing);
    c.info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
    c.info.lo_offset = offset;
    c.info.lo_sizelimit = size;
    std::strncpy(reinterpret_cast<char*>(c.info.lo_file_name), label.c_str(), LO_NAME_SIZE - 1);
    if (::ioctl(d.fd, LOOP_CONFIGURE, &c) == 0) {
      ::close(ctl);
      ::close(backing);
      return d;
    }
    int e = errno;
    last = Status::FromErrno(e, d.path + ": LOOP_CONFIGURE");
    ::close(d.fd);
    if (e != EBUSY) break;
  }
  ::close(ctl);
  ::close(backing);
  return last;
}

Status MountReadOnly(const std::string& device, const std::string& dir, const std::string& fstype) {
  const unsigned long flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
  // The device is read-only: a file system with a dirty journal would try
  // to replay it and fail, so replay is skipped (the view is the backup's
  // bytes as they are, like a crash-consistent snapshot).
  std::string opts;
  if (fstype == "ext3" || fstype == "ext4") opts = "noload";
  if (fstype == "xfs") opts = "norecovery";
  if (fstype == "btrfs") opts = "rescue=nologreplay";
  if (::mount(device.c_str(), dir.c_str(), fstype.c_str(), flags, opts.empty() ? nullptr : opts.c_str()) == 0) {
    return Status::Ok();
  }
  int e = errno;
  if (!opts.empty() && ::mount(device.c_str(), dir.c_str(), fstype.c_str(), flags, nullptr) == 0) {
    return Status::Ok();
  }
  return Status::FromErrno(e, "mount " + device + " (" + fstype + ") on " + dir);
}

namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && isdigit(s[i + 1]) && isdigit(s[i + 2]) &&
        isdigit(s[i + 3])) {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace

Result<std::vector<MountInfo>> ReadMountInfo() {
  std::ifstream in("/proc/self/mountinfo");
  if (!in) return Status::FromErrno(errno, "/proc/self/mountinfo");
  std::vector<MountInfo> out;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ss(line);
    std::vector<std::string> f;
    std::string w;
    while (ss >> w) f.push_back(w);
    // id parent maj:min root target options [optional fields...] - fstype source superopts
    auto dash = std::find(f.begin(), f.end(), "-");
    if (f.size() < 5 || dash == f.end() || dash + 2 >= f.end()) continue;
    out.push_back({Unescape(f[4]), *(dash + 1), Unescape(*(dash + 2))});
  }
  return out;
}

std::vector<std::string> LoopsBackedBy(const std::string& path) {
  std::vector<std::string> out;
  DIR* d = ::opendir("/sys/block");
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.rfind("loop", 0) != 0) continue;
    std::ifstream in("/sys/block/" + n + "/loop/backing_file");
    std::string b;
    if (in && std::getline(in, b) && b == path) out.push_back("/dev/" + n);
  }
  ::closedir(d);
  return out;
}

}  // namespace strata::cli
