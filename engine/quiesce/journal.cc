// The freeze journal; see journal.h and docs/formats/quiesce-journal.md.
#include "engine/quiesce/journal.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cinttypes>
#include <cstdio>

#include "engine/quiesce/qga.h"
#include "strata/quiesce_resolve.h"
#include "strata/checksum.h"

namespace strata::quiesce {
namespace {

constexpr std::string_view kMagic = "strata-quiesce-journal";
constexpr int kVersion = 1;
constexpr std::string_view kPrefix = "journal-";

// §2 of the format: bytes below 0x21, 0x7f and '\' as \ooo; "" as "-", and a
// field that is just "-" as \055.
std::string EscapeField(std::string_view s) {
  if (s.empty()) return "-";
  if (s == "-") return "\\055";
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x21 || c == 0x7f || c == '\\') {
      char buf[5];
      std::snprintf(buf, sizeof buf, "\\%03o", c);
      out += buf;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

bool UnescapeField(std::string_view s, std::string* out) {
  out->clear();
  if (s == "-") return true;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\') {
      out->push_back(s[i]);
      continue;
    }
    if (i + 3 >= s.size()) return false;  // needs three octal digits
    int v = 0;
    for (int k = 1; k <= 3; ++k) {
      char c = s[i + static_cast<size_t>(k)];
      if (c < '0' || c > '7') return false;
      v = v * 8 + (c - '0');
    }
    if (v > 255) return false;
    out->push_back(static_cast<char>(v));
    i += 3;
  }
  return true;
}

std::string Hex16(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

std::string Line(const std::string& body) {
  return Hex16(Xxh3_64(body.data(), body.size())) + " " + body + "\n";
}

std::vector<std::string_view> Fields(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i <= s.size()) {
    size_t j = s.find(' ', i);
    if (j == std::string_view::npos) j = s.size();
    out.push_back(s.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

bool ParseU32(std::string_view s, uint32_t* v) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *v);
  return ec == std::errc() && p == s.data() + s.size();
}

std::string DevKey(uint32_t major, uint32_t minor) {
  return std::to_string(major) + ":" + std::to_string(minor);
}

Status WriteAllFd(int fd, const std::string& bytes, const std::string& path) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + off, bytes.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, path + ": write");
    off += static_cast<size_t>(n);
  }
  if (::fdatasync(fd) != 0) return Status::FromErrno(errno, path + ": fdatasync");
  return Status::Ok();
}

Result<std::string> ReadAllFd(int fd, const std::string& path) {
  std::string s;
  char buf[8192];
  for (off_t off = 0;;) {
    ssize_t n = ::pread(fd, buf, sizeof buf, off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, path + ": read");
    if (n == 0) return s;
    s.append(buf, static_cast<size_t>(n));
    off += n;
    if (s.size() > (16u << 20)) return Status::Corruption(path + ": larger than 16 MiB");
  }
}

Status SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, dir);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return Status::FromErrno(err, dir + ": fsync");
  return Status::Ok();
}

std::vector<std::string> JournalFiles(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    std::string_view name = e->d_name;
    if (name.substr(0, kPrefix.size()) == kPrefix) out.push_back(dir + "/" + std::string(name));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// FITHAW through `path` if it is on device major:minor. Sets *was_frozen.
Status ThawIfSameDevice(const std::string& path, uint32_t maj, uint32_t min, bool* was_frozen) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, path + ": open");
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return Status::FromErrno(err, path + ": fstat");
  }
  if (major(st.st_dev) != maj || minor(st.st_dev) != min) {
    ::close(fd);
    return Status::NotFound(path + " now holds device " + DevKey(major(st.st_dev), minor(st.st_dev)) +
                            ", not the journaled " + DevKey(maj, min));
  }
  int rc;
  do {
    rc = ::ioctl(fd, FITHAW, 0);
  } while (rc < 0 && errno == EINTR);
  int err = errno;
  ::close(fd);
  if (rc == 0) {
    *was_frozen = true;
    return Status::Ok();
  }
  if (err == EINVAL) {  // not frozen
    *was_frozen = false;
    return Status::Ok();
  }
  return Status::FromErrno(err, path + ": FITHAW");
}

}  // namespace

std::string JournalEntry::Key() const {
  return backend + " " + target + " " + DevKey(major, minor);
}

std::string EncodeJournalHeader(int64_t pid) {
  return Line("H " + std::string(kMagic) + " " + std::to_string(kVersion) + " " +
              std::to_string(pid));
}

std::string EncodeJournalRecord(char kind, const JournalEntry& e) {
  return Line(std::string(1, kind) + " " + EscapeField(e.backend) + " " + DevKey(e.major, e.minor) +
              " " + EscapeField(e.mount_point) + " " + EscapeField(e.target));
}

Result<JournalContents> ParseJournal(std::string_view text, const std::string& name) {
  JournalContents out;
  size_t pos = 0;
  int line_no = 0;
  bool have_header = false;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) {
      out.torn_tail = true;  // an append cut short: its freeze never started
      break;
    }
    std::string_view line = text.substr(pos, nl - pos);
    size_t line_start = pos;
    pos = nl + 1;
    ++line_no;
    auto bad = [&](const std::string& what) {
      return name + ": line " + std::to_string(line_no) + ": " + what;
    };
    std::string problem;
    std::string_view body;
    uint64_t sum = 0;
    // Exactly 16 lowercase hex digits: "A" for "a" must not pass.
    bool hex = line.size() >= 18 && line[16] == ' ';
    for (size_t i = 0; hex && i < 16; ++i) {
      hex = (line[i] >= '0' && line[i] <= '9') || (line[i] >= 'a' && line[i] <= 'f');
    }
    if (!hex || std::from_chars(line.data(), line.data() + 16, sum, 16).ptr != line.data() + 16) {
      problem = "no checksum";
    } else {
      body = line.substr(17);
      if (Xxh3_64(body.data(), body.size()) != sum) problem = "checksum mismatch";
    }
    if (!have_header) {
      auto f = Fields(body);
      if (!problem.empty() || f.size() != 4 || f[0] != "H" || f[1] != kMagic) {
        return Status::Corruption(name + ": byte " + std::to_string(line_start) +
                                  ": not a strata quiesce journal header" +
                                  (problem.empty() ? "" : " (" + problem + ")"));
      }
      if (f[2] != std::to_string(kVersion)) {
        return Status::Unsupported(name + ": journal version " + std::string(f[2]) +
                                   " (this strata reads version " + std::to_string(kVersion) +
                                   ")");
      }
      std::from_chars(f[3].data(), f[3].data() + f[3].size(), out.pid);
      have_header = true;
      continue;
    }
    if (!problem.empty()) {
      out.bad_lines.push_back(bad(problem));
      continue;
    }
    auto f = Fields(body);
    JournalEntry e;
    size_t colon = f.size() == 5 ? f[2].find(':') : std::string_view::npos;
    if (f.size() != 5 || (f[0] != "F" && f[0] != "T") || colon == std::string_view::npos ||
        !ParseU32(f[2].substr(0, colon), &e.major) ||
        !ParseU32(f[2].substr(colon + 1), &e.minor) || !UnescapeField(f[1], &e.backend) ||
        !UnescapeField(f[3], &e.mount_point) || !UnescapeField(f[4], &e.target)) {
      out.bad_lines.push_back(bad("not a journal record"));
      continue;
    }
    auto it = std::find_if(out.outstanding.begin(), out.outstanding.end(),
                           [&](const JournalEntry& o) { return o.Key() == e.Key(); });
    if (f[0] == "F") {
      if (it == out.outstanding.end()) out.outstanding.push_back(e);
    } else if (it != out.outstanding.end()) {
      out.outstanding.erase(it);
    }
  }
  if (!have_header) {
    return Status::Corruption(name + ": byte 0: no complete journal header");
  }
  return out;
}

// ---- writer -------------------------------------------------------------------

FreezeJournal::~FreezeJournal() {
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ < 0) return;
  if (outstanding_.empty()) ::unlink(path_.c_str());
  ::close(fd_);  // releases the flock: a kept journal is now recoverable
}

std::string FreezeJournal::path() const {
  std::lock_guard<std::mutex> lock(mu_);
  return path_;
}

Status FreezeJournal::CreateLocked() {
  char nonce[17];
  std::snprintf(nonce, sizeof nonce, "%016" PRIx64,
                static_cast<uint64_t>(
                    std::chrono::system_clock::now().time_since_epoch().count()) ^
                    (static_cast<uint64_t>(::getpid()) << 40));
  std::string base = std::to_string(::getpid()) + "-" + nonce;
  std::string tmp = dir_ + "/.journal-" + base + ".tmp";
  std::string path = dir_ + "/" + std::string(kPrefix) + base;
  int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno(errno, tmp + ": create journal");
  // Locked before it has its visible name: RecoverJournals never sees a
  // journal whose owner has not locked it yet.
  Status s;
  if (::flock(fd, LOCK_EX) != 0) s = Status::FromErrno(errno, tmp + ": flock");
  if (s.ok()) s = WriteAllFd(fd, EncodeJournalHeader(::getpid()), tmp);
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    s = Status::FromErrno(errno, path + ": rename journal into place");
  }
  if (s.ok()) s = SyncDir(dir_);
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    ::unlink(path.c_str());
    ::close(fd);
    return s;
  }
  fd_ = fd;
  path_ = path;
  return Status::Ok();
}

Status FreezeJournal::AppendLocked(const std::string& bytes) {
  return WriteAllFd(fd_, bytes, path_);
}

Status FreezeJournal::Intend(const std::vector<JournalEntry>& entries) {
  if (entries.empty()) return Status::Ok();
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ < 0) STRATA_RETURN_IF_ERROR(CreateLocked());
  std::string bytes;
  for (const auto& e : entries) bytes += EncodeJournalRecord('F', e);
  STRATA_RETURN_IF_ERROR(AppendLocked(bytes));
  for (const auto& e : entries) outstanding_.push_back(e);
  return Status::Ok();
}

Status FreezeJournal::Thawed(const std::vector<JournalEntry>& entries) {
  if (entries.empty()) return Status::Ok();
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ < 0) return Status::Ok();
  std::string bytes;
  for (const auto& e : entries) bytes += EncodeJournalRecord('T', e);
  STRATA_RETURN_IF_ERROR(AppendLocked(bytes));
  for (const auto& e : entries) {
    auto it = std::find_if(outstanding_.begin(), outstanding_.end(),
                           [&](const JournalEntry& o) { return o.Key() == e.Key(); });
    if (it != outstanding_.end()) outstanding_.erase(it);
  }
  if (outstanding_.empty()) {
    // Unlinked while we still hold the flock; nothing is left to recover.
    ::unlink(path_.c_str());
    ::close(fd_);
    fd_ = -1;
    path_.clear();
  }
  return Status::Ok();
}

// ---- recovery -----------------------------------------------------------------

namespace {

// Recovers one entry; appends to the report. True when it is settled
// (thawed, or not frozen).
bool RecoverEntry(const JournalEntry& e, const std::string& mountinfo_path,
                  RecoveryReport* report) {
  if (e.backend == "qga") {
    auto n = QgaClient::SyncAndThaw(e.target, std::chrono::seconds(10));
    std::string what = e.mount_point + " (qemu-ga " + e.target + ")";
    if (!n.has_value()) {
      report->failed.push_back(what + ": " + n.error().message());
      return false;
    }
    (*n > 0 ? report->thawed : report->not_frozen).push_back(what);
    return true;
  }
  if (e.backend != "fifreeze") {
    report->failed.push_back(e.mount_point + ": journaled by backend '" + e.backend +
                             "', which recovery cannot reach");
    return false;
  }
  bool was_frozen = false;
  Status s = ThawIfSameDevice(e.mount_point, e.major, e.minor, &was_frozen);
  std::string where = e.mount_point;
  if (!s.ok()) {
    // The mount point may have moved or been mounted over: look for the
    // journaled device's own mount.
    auto mounts = ReadMountInfo(mountinfo_path);
    Status found = Status::NotFound("not mounted anywhere else");
    if (mounts.has_value()) {
      std::vector<const MountEntry*> candidates;
      for (const auto& m : *mounts) {
        if (m.major == e.major && m.minor == e.minor && m.mount_point != e.mount_point) {
          if (m.root == "/") candidates.insert(candidates.begin(), &m);
          else candidates.push_back(&m);
        }
      }
      for (const MountEntry* m : candidates) {
        found = ThawIfSameDevice(m->mount_point, e.major, e.minor, &was_frozen);
        if (found.ok()) {
          where = e.mount_point + " (device " + DevKey(e.major, e.minor) + " found at " +
                  m->mount_point + ")";
          break;
        }
      }
    } else {
      found = mounts.error();
    }
    if (!found.ok()) {
      report->failed.push_back(e.mount_point + " [" + DevKey(e.major, e.minor) + "]: " +
                               s.message() + "; " + found.message());
      return false;
    }
  }
  (was_frozen ? report->thawed : report->not_frozen).push_back(where);
  return true;
}

}  // namespace

Result<RecoveryReport> RecoverJournals(const std::string& dir, const std::string& mountinfo_path) {
  RecoveryReport report;
  for (const std::string& path : JournalFiles(dir)) {
    int fd = ::open(path.c_str(), O_RDWR | O_APPEND | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) continue;  // its owner finished and removed it
      report.failed.push_back(Status::FromErrno(errno, path).message());
      continue;
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      auto text = ReadAllFd(fd, path);
      auto c = text.has_value() ? ParseJournal(*text, path) : Result<JournalContents>(text.error());
      report.live.push_back(path + (c.has_value() ? " (pid " + std::to_string(c->pid) + ")" : ""));
      ::close(fd);
      continue;
    }
    struct stat st;
    if (::fstat(fd, &st) == 0 && st.st_nlink == 0) {  // removed after we opened it
      ::close(fd);
      continue;
    }
    auto text = ReadAllFd(fd, path);
    auto contents = text.has_value() ? ParseJournal(*text, path)
                                     : Result<JournalContents>(text.error());
    if (!contents.has_value()) {
      report.failed.push_back(contents.error().message() + " (journal kept)");
      ::close(fd);
      continue;
    }
    bool all_settled = contents->bad_lines.empty();
    for (const auto& b : contents->bad_lines) {
      report.failed.push_back(b + ": what it named is unknown (journal kept)");
    }
    std::string settled;
    for (const JournalEntry& e : contents->outstanding) {
      if (RecoverEntry(e, mountinfo_path, &report)) {
        settled += EncodeJournalRecord('T', e);
      } else {
        all_settled = false;
      }
    }
    Status w = settled.empty() ? Status::Ok() : WriteAllFd(fd, settled, path);
    if (!w.ok()) {
      report.failed.push_back(w.message());
      all_settled = false;
    }
    if (all_settled) ::unlink(path.c_str());
    ::close(fd);
  }
  return report;
}

Result<std::vector<JournalEntry>> StaleJournalEntries(const std::string& dir) {
  std::vector<JournalEntry> out;
  for (const std::string& path : JournalFiles(dir)) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    bool stale = ::flock(fd, LOCK_SH | LOCK_NB) == 0;
    auto text = stale ? ReadAllFd(fd, path) : Result<std::string>(std::string());
    ::close(fd);
    if (!stale || !text.has_value()) continue;
    auto c = ParseJournal(*text, path);
    if (!c.has_value()) continue;
    out.insert(out.end(), c->outstanding.begin(), c->outstanding.end());
  }
  return out;
}

}  // namespace strata::quiesce
