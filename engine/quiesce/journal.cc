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
constexpr int kVersion = 2;
constexpr std::string_view kPrefix = "journal-";
// Version 2: the header is one 512-byte sector, rewritten in place to commit;
// every record starts on a sector boundary (docs/formats/quiesce-journal.md).
constexpr size_t kSector = 512;
constexpr size_t kMaxJournalBytes = 16u << 20;

size_t RoundUp(size_t n) { return (n + kSector - 1) / kSector * kSector; }

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

Status PwriteAllFd(int fd, const std::string& bytes, off_t at, const std::string& path) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::pwrite(fd, bytes.data() + off, bytes.size() - off, at + static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, path + ": write");
    off += static_cast<size_t>(n);
  }
  if (::fdatasync(fd) != 0) return Status::FromErrno(errno, path + ": fdatasync");
  return Status::Ok();
}

// One checksummed line padded with zeros to whole sectors.
std::string Padded(const std::string& line) {
  std::string out = line;
  out.resize(RoundUp(out.size()), '\0');
  return out;
}

// Checks "<16 hex> <body>" and returns the body, or the problem.
bool CheckLine(std::string_view line, std::string_view* body, std::string* problem) {
  uint64_t sum = 0;
  // Exactly 16 lowercase hex digits: "A" for "a" must not pass.
  bool hex = line.size() >= 18 && line[16] == ' ';
  for (size_t i = 0; hex && i < 16; ++i) {
    hex = (line[i] >= '0' && line[i] <= '9') || (line[i] >= 'a' && line[i] <= 'f');
  }
  if (!hex || std::from_chars(line.data(), line.data() + 16, sum, 16).ptr != line.data() + 16) {
    *problem = "no checksum";
    return false;
  }
  *body = line.substr(17);
  if (Xxh3_64(body->data(), body->size()) != sum) {
    *problem = "checksum mismatch";
    return false;
  }
  return true;
}

// Parses "F|T backend maj:min mount target" (fields f[i0..i0+4]).
bool ParseEntry(const std::vector<std::string_view>& f, size_t i0, JournalEntry* e) {
  if (f.size() != i0 + 5 || (f[i0] != "F" && f[i0] != "T")) return false;
  size_t colon = f[i0 + 2].find(':');
  return colon != std::string_view::npos && ParseU32(f[i0 + 2].substr(0, colon), &e->major) &&
         ParseU32(f[i0 + 2].substr(colon + 1), &e->minor) && UnescapeField(f[i0 + 1], &e->backend) &&
         UnescapeField(f[i0 + 3], &e->mount_point) && UnescapeField(f[i0 + 4], &e->target);
}

void Apply(char kind, const JournalEntry& e, std::vector<JournalEntry>* outstanding) {
  auto it = std::find_if(outstanding->begin(), outstanding->end(),
                         [&](const JournalEntry& o) { return o.Key() == e.Key(); });
  if (kind == 'F') {
    if (it == outstanding->end()) outstanding->push_back(e);
  } else if (it != outstanding->end()) {
    outstanding->erase(it);
  }
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

std::string CurrentBootId() {
  int fd = ::open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  char buf[64];
  ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  std::string id;
  for (ssize_t i = 0; i < n; ++i) {
    char c = buf[i];
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || c == '-') id.push_back(c);
  }
  return id;
}

std::string EncodeJournalHeader(int64_t pid, std::string_view boot_id, uint64_t end) {
  std::string line = Line("H " + std::string(kMagic) + " " + std::to_string(kVersion) + " " +
                          std::to_string(pid) + " " + EscapeField(boot_id) + " " +
                          std::to_string(end));
  return Padded(line);
}

std::string EncodeJournalRecord(char kind, const JournalEntry& e, uint64_t seq) {
  return Padded(Line(std::to_string(seq) + " " + std::string(1, kind) + " " +
                     EscapeField(e.backend) + " " + DevKey(e.major, e.minor) + " " +
                     EscapeField(e.mount_point) + " " + EscapeField(e.target)));
}

namespace {

// Version 1 (issue 17): appended lines; bytes after the last '\n' were read
// as a torn append and ignored, so a damaged journal could look shorter.
// Still read, for journals an older strata left behind.
Result<JournalContents> ParseJournalV1(std::string_view text, const std::string& name,
                                       JournalContents out) {
  size_t pos = text.find('\n') + 1;  // after the header (checked by the caller)
  int line_no = 1;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) {
      out.torn_tail = true;
      break;
    }
    std::string_view line = text.substr(pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    std::string problem;
    std::string_view body;
    JournalEntry e;
    if (!CheckLine(line, &body, &problem)) {
      out.bad_lines.push_back(name + ": line " + std::to_string(line_no) + ": " + problem);
      continue;
    }
    auto f = Fields(body);
    if (!ParseEntry(f, 0, &e)) {
      out.bad_lines.push_back(name + ": line " + std::to_string(line_no) +
                              ": not a journal record");
      continue;
    }
    Apply(f[0][0], e, &out.outstanding);
  }
  return out;
}

}  // namespace

Result<JournalContents> ParseJournal(std::string_view text, const std::string& name) {
  JournalContents out;
  size_t nl = text.find('\n');
  if (nl == std::string_view::npos) {
    return Status::Corruption(name + ": byte 0: no complete journal header");
  }
  std::string problem;
  std::string_view body;
  bool sum_ok = CheckLine(text.substr(0, nl), &body, &problem);
  auto f = Fields(body);
  if (!sum_ok || f.size() < 4 || f[0] != "H" || f[1] != kMagic) {
    return Status::Corruption(name + ": byte 0: not a strata quiesce journal header" +
                              (problem.empty() ? "" : " (" + problem + ")"));
  }
  if (f[2] == "1" && f.size() == 4) {
    out.version = 1;
    std::from_chars(f[3].data(), f[3].data() + f[3].size(), out.pid);
    return ParseJournalV1(text, name, std::move(out));
  }
  if (f[2] != std::to_string(kVersion)) {
    return Status::Unsupported(name + ": journal version " + std::string(f[2]) +
                               " (this strata reads versions 1 and " + std::to_string(kVersion) +
                               ")");
  }
  uint64_t end = 0;
  if (f.size() != 6 || nl + 1 > kSector ||
      std::from_chars(f[3].data(), f[3].data() + f[3].size(), out.pid).ptr !=
          f[3].data() + f[3].size() ||
      !UnescapeField(f[4], &out.boot_id) ||
      std::from_chars(f[5].data(), f[5].data() + f[5].size(), end).ptr !=
          f[5].data() + f[5].size() ||
      end < kSector || end % kSector != 0 || end > kMaxJournalBytes) {
    return Status::Corruption(name + ": byte 0: bad journal header");
  }
  out.version = kVersion;
  out.committed_bytes = end;
  // Everything up to the committed end was durable before any freeze it
  // names started: none of it may be missing or unreadable.
  if (text.size() < end) {
    out.bad_lines.push_back(name + ": byte " + std::to_string(text.size()) +
                            ": cut short (the header commits " + std::to_string(end) +
                            " bytes): what the missing records named is unknown");
  }
  size_t limit = std::min<size_t>(end, text.size());
  uint64_t seq = 0;
  for (size_t pos = kSector; pos < limit;) {
    ++seq;
    auto bad = [&](const std::string& what) {
      return name + ": byte " + std::to_string(pos) + ": record " + std::to_string(seq) + ": " +
             what;
    };
    size_t rnl = text.find('\n', pos);
    if (rnl == std::string_view::npos || rnl >= limit) {
      out.bad_lines.push_back(bad("no line end before the committed end"));
      break;
    }
    std::string_view line = text.substr(pos, rnl - pos);
    size_t next = RoundUp(rnl + 1);
    JournalEntry e;
    std::string_view rbody;
    std::string why;
    if (!CheckLine(line, &rbody, &why)) {
      out.bad_lines.push_back(bad(why));
    } else {
      auto rf = Fields(rbody);
      if (rf.empty() || rf[0] != std::to_string(seq) || !ParseEntry(rf, 1, &e)) {
        out.bad_lines.push_back(bad("not record " + std::to_string(seq)));
      } else {
        Apply(rf[1][0], e, &out.outstanding);
      }
    }
    pos = next;
  }
  out.records = seq;
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
  int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno(errno, tmp + ": create journal");
  // Locked before it has its visible name: RecoverJournals never sees a
  // journal whose owner has not locked it yet.
  Status s;
  if (::flock(fd, LOCK_EX) != 0) s = Status::FromErrno(errno, tmp + ": flock");
  boot_id_ = CurrentBootId();
  if (s.ok()) s = PwriteAllFd(fd, EncodeJournalHeader(::getpid(), boot_id_, kSector), 0, tmp);
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
  end_ = kSector;
  seq_ = 0;
  return Status::Ok();
}

// Records go after the committed end; only the header rewrite (one sector
// at offset 0, which neither SIGKILL nor a power cut tears) commits them.
// A process killed before that leaves records no reader counts, and no
// freeze has started for them.
Status FreezeJournal::AppendLocked(char kind, const std::vector<JournalEntry>& entries) {
  std::string bytes;
  uint64_t seq = seq_;
  for (const auto& e : entries) bytes += EncodeJournalRecord(kind, e, ++seq);
  if (end_ + bytes.size() > kMaxJournalBytes) {
    return Status::Busy(path_ + ": freeze journal full (" +
                                     std::to_string(end_) +
                                     " bytes); it starts afresh once nothing is frozen");
  }
  STRATA_RETURN_IF_ERROR(PwriteAllFd(fd_, bytes, static_cast<off_t>(end_), path_));
  uint64_t end = end_ + bytes.size();
  STRATA_RETURN_IF_ERROR(PwriteAllFd(fd_, EncodeJournalHeader(::getpid(), boot_id_, end), 0, path_));
  end_ = end;
  seq_ = seq;
  return Status::Ok();
}

Status FreezeJournal::Intend(const std::vector<JournalEntry>& entries) {
  if (entries.empty()) return Status::Ok();
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ < 0) STRATA_RETURN_IF_ERROR(CreateLocked());
  STRATA_RETURN_IF_ERROR(AppendLocked('F', entries));
  for (const auto& e : entries) outstanding_.push_back(e);
  return Status::Ok();
}

Status FreezeJournal::Thawed(const std::vector<JournalEntry>& entries) {
  if (entries.empty()) return Status::Ok();
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ < 0) return Status::Ok();
  STRATA_RETURN_IF_ERROR(AppendLocked('T', entries));
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

namespace {

// A version 2 journal written under the boot id `current` names nothing that
// can still be frozen when its own boot id is another one: a reboot thawed
// it all. (An unknown boot id on either side proves nothing.)
bool FromEarlierBoot(const JournalContents& c, const std::string& current) {
  return c.version >= 2 && !c.boot_id.empty() && !current.empty() && c.boot_id != current;
}

// Records T for `entries` the way the journal's version appends.
Status AppendThawed(int fd, const std::string& path, const JournalContents& c, size_t file_size,
                    const std::vector<JournalEntry>& entries) {
  if (entries.empty()) return Status::Ok();
  if (c.version < 2) {
    std::string bytes;
    for (const auto& e : entries) {
      bytes += Line("T " + EscapeField(e.backend) + " " + DevKey(e.major, e.minor) + " " +
                    EscapeField(e.mount_point) + " " + EscapeField(e.target));
    }
    return PwriteAllFd(fd, bytes, static_cast<off_t>(file_size), path);
  }
  uint64_t seq = c.records;
  std::string bytes;
  for (const auto& e : entries) bytes += EncodeJournalRecord('T', e, ++seq);
  STRATA_RETURN_IF_ERROR(PwriteAllFd(fd, bytes, static_cast<off_t>(c.committed_bytes), path));
  return PwriteAllFd(fd, EncodeJournalHeader(c.pid, c.boot_id, c.committed_bytes + bytes.size()), 0,
                     path);
}

}  // namespace

Result<RecoveryReport> RecoverJournals(const std::string& dir, const std::string& mountinfo_path) {
  RecoveryReport report;
  const std::string boot = CurrentBootId();
  for (const std::string& path : JournalFiles(dir)) {
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
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
      report.failed.push_back(contents.error().message() +
                              ": what it named may still be frozen (journal kept)");
      ::close(fd);
      continue;
    }
    if (FromEarlierBoot(*contents, boot)) {
      for (const JournalEntry& e : contents->outstanding) {
        report.not_frozen.push_back(e.mount_point + " (journaled before a reboot)");
      }
      ::unlink(path.c_str());
      ::close(fd);
      continue;
    }
    bool all_settled = contents->bad_lines.empty();
    for (const auto& b : contents->bad_lines) {
      report.failed.push_back(b + ": what it named may still be frozen (journal kept)");
    }
    std::vector<JournalEntry> settled;
    for (const JournalEntry& e : contents->outstanding) {
      if (RecoverEntry(e, mountinfo_path, &report)) {
        settled.push_back(e);
      } else {
        all_settled = false;
      }
    }
    if (all_settled) {
      ::unlink(path.c_str());
    } else {
      Status w = AppendThawed(fd, path, *contents, text->size(), settled);
      if (!w.ok()) report.failed.push_back(w.message());
    }
    ::close(fd);
  }
  return report;
}

Result<StaleJournals> StaleJournalEntries(const std::string& dir) {
  StaleJournals out;
  const std::string boot = CurrentBootId();
  for (const std::string& path : JournalFiles(dir)) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    bool stale = ::flock(fd, LOCK_SH | LOCK_NB) == 0;
    auto text = stale ? ReadAllFd(fd, path) : Result<std::string>(std::string());
    ::close(fd);
    if (!stale) continue;
    if (!text.has_value()) {
      out.damaged.push_back(text.error().message());
      continue;
    }
    auto c = ParseJournal(*text, path);
    if (!c.has_value()) {
      out.damaged.push_back(c.error().message());
      continue;
    }
    if (FromEarlierBoot(*c, boot)) continue;
    out.damaged.insert(out.damaged.end(), c->bad_lines.begin(), c->bad_lines.end());
    out.entries.insert(out.entries.end(), c->outstanding.begin(), c->outstanding.end());
  }
  return out;
}

}  // namespace strata::quiesce
