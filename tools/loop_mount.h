// Loop devices, partitions and read-only mounts for `strata mount
// --partitions` and `strata umount` (docs/design/serve.md). Linux only; the
// calls that change the system need root.
#ifndef STRATA_TOOLS_LOOP_MOUNT_H_
#define STRATA_TOOLS_LOOP_MOUNT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "strata/status.h"

namespace strata::cli {

// The partitions of the disk image `file`, read by libblkid from its
// partition table (GPT, MBR with logical partitions, ...; extended
// containers left out), not by the kernel, which may have no partition
// table support (the loop driver's partition scan then finds nothing).
// Empty when there is no partition table.
struct Partition {
  int number = 0;       // as the table numbers it (1, 2, ... ; 5+ for MBR logical)
  uint64_t offset = 0;  // bytes
  uint64_t size = 0;    // bytes
};
Result<std::vector<Partition>> ListPartitions(const std::string& file);

// The file system type libblkid finds in `file` at [offset, offset + size)
// (size 0: to the end); "" when none is known (no file system, swap, RAID or
// LVM members and the like, which cannot be mounted as they are).
std::string ProbeFsType(const std::string& file, uint64_t offset, uint64_t size);

// A read-only loop device over [offset, offset + size) of `file` (size 0:
// to the end) with auto-clear: the kernel detaches it when the last user
// (this descriptor, a mount) closes it. `fd` is the open device.
struct LoopDevice {
  int number = -1;
  int fd = -1;
  std::string path;  // /dev/loopN
};
Result<LoopDevice> AttachLoop(const std::string& file, const std::string& label, uint64_t offset,
                              uint64_t size);

// Mounts `device` (of type `fstype`) on `dir` read-only, nosuid, nodev,
// noexec; a journal is never replayed (ext3/4 noload, xfs norecovery).
Status MountReadOnly(const std::string& device, const std::string& dir, const std::string& fstype);

// One line of /proc/self/mountinfo.
struct MountInfo {
  std::string target, fstype, source;
};
Result<std::vector<MountInfo>> ReadMountInfo();

// Loop devices (/dev/loopN) whose backing file is `path`.
std::vector<std::string> LoopsBackedBy(const std::string& path);

}  // namespace strata::cli

#endif  // STRATA_TOOLS_LOOP_MOUNT_H_
