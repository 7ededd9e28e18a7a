#include "strata/image.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <string>

#include "strata/file.h"

namespace strata {

namespace {
// qemu-img.c entry_mergeable(): same flags and depth, and offsets that either
// continue each other or are both absent.
bool Mergeable(const MapEntry& a, const MapEntry& b) {
  if (a.length == 0) return false;
  if (a.zero != b.zero || a.data != b.data || a.depth != b.depth || a.present != b.present) {
    return false;
  }
  if (a.has_offset != b.has_offset) return false;
  if (a.has_offset && a.offset + a.length != b.offset) return false;
  return true;
}

// Guest bytes per BlockStatus call: bounds the entries buffered at once.
constexpr uint64_t kMapStep = uint64_t{1} << 30;
}  // namespace

Status MapImage(Image& image, const std::function<Status(const MapEntry&)>& emit) {
  const uint64_t size = image.size();
  MapEntry cur;
  bool have = false;
  std::vector<MapEntry> batch;
  uint64_t pos = 0;
  while (pos < size) {
    batch.clear();
    uint64_t len = std::min(kMapStep, size - pos);
    STRATA_RETURN_IF_ERROR(image.BlockStatus(pos, len, &batch));
    if (batch.empty()) {
      return Status::Corruption(image.name() + ": block status made no progress at " +
                                std::to_string(pos));
    }
    for (const MapEntry& e : batch) {
      if (e.start != pos || e.length == 0 || e.length > size - pos) {
        return Status::Corruption(image.name() + ": block status returned a bad entry at " +
                                  std::to_string(pos));
      }
      pos += e.length;
      if (have && Mergeable(cur, e)) {
        cur.length += e.length;
        continue;
      }
      if (have) STRATA_RETURN_IF_ERROR(emit(cur));
      cur = e;
      have = true;
    }
  }
  if (have) STRATA_RETURN_IF_ERROR(emit(cur));
  return Status::Ok();
}

Result<ExtentSet> AllocatedExtents(Image& image, Granularity g, bool include_backing) {
  STRATA_ASSIGN_OR_RETURN(ExtentSet set, ExtentSet::Create(image.size(), g));
  Status s = MapImage(image, [&](const MapEntry& e) -> Status {
    if (!e.data || !e.present) return Status::Ok();
    if (e.depth > 0 && !include_backing) return Status::Ok();
    return set.Add(e.start, e.length);
  });
  STRATA_RETURN_IF_ERROR(s);
  set.Optimize();
  return set;
}

namespace {

Result<std::string> RealPath(const std::string& path, const std::string& what) {
  char* r = ::realpath(path.c_str(), nullptr);
  if (r == nullptr) return Status::FromErrno(errno, what);
  std::string out(r);
  std::free(r);
  return out;
}

std::string DirOf(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

bool Inside(const std::string& path, const std::string& dir) {
  if (dir == "/") return true;
  return path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
         path[dir.size()] == '/';
}

std::string JoinDirs(const std::vector<std::string>& dirs) {
  std::string s;
  for (const auto& d : dirs) s += (s.empty() ? "" : ", ") + d;
  return s;
}

}  // namespace

Result<std::vector<std::string>> AllowedChainDirs(const std::string& top_image,
                                                  const ImageOpenOptions& options) {
  std::vector<std::string> out;
  if (options.allowed_dirs.empty()) {
    // The directory the caller named the image in (not where a symlinked
    // image points): relative backing names resolve against it too.
    STRATA_ASSIGN_OR_RETURN(std::string d,
                            RealPath(DirOf(top_image), top_image + ": its directory"));
    out.push_back(std::move(d));
    return out;
  }
  for (const std::string& dir : options.allowed_dirs) {
    STRATA_ASSIGN_OR_RETURN(std::string d, RealPath(dir, dir + ": allowed directory"));
    struct stat st;
    if (::stat(d.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return Status::InvalidArgument(dir + ": allowed directory is not a directory");
    }
    out.push_back(std::move(d));
  }
  return out;
}

Result<std::unique_ptr<File>> OpenChainFile(const std::string& referrer, const std::string& name,
                                            const std::string& kind,
                                            const std::vector<std::string>& allowed) {
  std::string joined = name;
  if (joined.empty() || joined[0] != '/') {
    std::string dir = DirOf(referrer);
    joined = (dir == "/" ? "/" : dir + "/") + name;
  }
  const std::string what = referrer + ": " + kind + " '" + name + "'";
  STRATA_ASSIGN_OR_RETURN(std::string canonical, RealPath(joined, what));
  bool ok = false;
  for (const std::string& d : allowed) ok = ok || Inside(canonical, d);
  if (!ok) {
    return Status::InvalidArgument(
        what + " resolves to " + canonical + ", outside the directories a chain may use (" +
        JoinDirs(allowed) + "); allow its directory explicitly (--allow-backing DIR) to follow it");
  }
  struct stat want;
  if (::stat(canonical.c_str(), &want) != 0) return Status::FromErrno(errno, what);
  if (!S_ISREG(want.st_mode)) {
    return Status::InvalidArgument(what + " (" + canonical + ") is a " +
                                   FileTypeName(want.st_mode) + ": " + kind +
                                   "s must be regular files");
  }
  auto f = OpenDiskFile(joined, /*regular_only=*/true);
  if (!f) return f.error().WithContext(referrer + ": " + kind);
  // The file opened must be the one checked (no rename or symlink swap in between).
  struct stat got;
  if (::fstat((*f)->fd(), &got) != 0) return Status::FromErrno(errno, what);
  if (got.st_dev != want.st_dev || got.st_ino != want.st_ino) {
    return Status::InvalidArgument(what + " changed while it was being opened");
  }
  return f;
}

std::string MapEntryJson(const MapEntry& e) {
  std::string s = "{ \"start\": " + std::to_string(e.start) +
                  ", \"length\": " + std::to_string(e.length) +
                  ", \"depth\": " + std::to_string(e.depth) +
                  ", \"present\": " + (e.present ? "true" : "false") +
                  ", \"zero\": " + (e.zero ? "true" : "false") +
                  ", \"data\": " + (e.data ? "true" : "false");
  if (e.has_offset) s += ", \"offset\": " + std::to_string(e.offset);
  s += "}";
  return s;
}

}  // namespace strata
