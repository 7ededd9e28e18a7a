// Target resolution for quiesce: which mounted filesystems does a request
// for a disk, partition, device-mapper volume or path name?
//
// Freezing is per filesystem (superblock); requests are often per disk. A
// filesystem is selected when its device is the requested device, one of
// its partitions, or any device stacked above them (the transitive
// /sys/class/block/*/holders), so a filesystem spread over several disks is
// selected if any of its disks is named. A path selects the filesystem that
// contains it. Bind mounts of one superblock are one filesystem.
//
// Mount tables are parsed by libmount (util-linux); Resolve reads sysfs
// under a configurable root so tests can build a fake tree.
#ifndef STRATA_RESOLVE_H_
#define STRATA_RESOLVE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "strata/status.h"

namespace strata::quiesce {

// One line of /proc/self/mountinfo (fields per proc(5)).
struct MountEntry {
  uint32_t mount_id = 0;
  uint32_t major = 0, minor = 0;  // st_dev of the superblock
  std::string root;               // path within the filesystem
  std::string mount_point;        // unescaped (\040 -> ' ')
  std::string fs_type;
  std::string source;
};

// Parses mountinfo text with libmount. `name` is used in errors:
// "/proc/self/mountinfo: line 3: not a mountinfo line (libmount cannot
// parse it)"; a relative mount point is kCorruption as well.
Result<std::vector<MountEntry>> ParseMountInfo(std::string_view text, const std::string& name);
// Reads and parses a mountinfo file (e.g. /proc/self/mountinfo) the same way.
Result<std::vector<MountEntry>> ReadMountInfo(const std::string& path);

// A mounted filesystem: the unit of freezing.
struct Filesystem {
  std::string mount_point;  // first mount of the superblock whose root is "/"
  std::string fs_type;
  std::string source;
  uint32_t major = 0, minor = 0;
  std::vector<std::string> disks;  // leaf disks via sysfs slaves (display only)
  std::string Key() const { return std::to_string(major) + ":" + std::to_string(minor); }
};

struct ResolvedTarget {
  std::string target;                     // as requested
  std::string kind;                       // "block device" or "path"
  std::vector<std::string> devices;       // block devices considered (name list)
  std::vector<std::string> mount_points;  // filesystems it selected
};

struct Resolution {
  std::vector<ResolvedTarget> targets;
  std::vector<Filesystem> filesystems;  // union, in mountinfo order, no dups
  // Human-readable, one line per target, e.g.
  // "/dev/loop3 (block device loop3 + holders dm-0) -> /mnt/a [ext4 253:0]".
  std::string ToString() const;
};

// Resolves targets against a mountinfo file and a sysfs tree. Errors
// (kInvalidArgument / kNotFound): a target that is neither an existing path
// nor a block device, or a block device with no mounted filesystem.
Result<Resolution> ResolveTargets(const std::vector<std::string>& targets,
                                  const std::string& mountinfo_path, const std::string& sysfs_root);

// The filesystem containing `path` (by st_dev), from the given mountinfo.
Result<Filesystem> FilesystemOfPath(const std::string& path, const std::vector<MountEntry>& mounts);

// Whether `path` equals `dir` or lies below it (lexically, both absolute).
bool PathWithin(const std::string& path, const std::string& dir);

}  // namespace strata::quiesce

#endif  // STRATA_RESOLVE_H_
