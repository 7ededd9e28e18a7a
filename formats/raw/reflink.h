// Reflink snapshots of raw images and the changes between two of them.
//
// On a file system with shared extents (XFS made with reflink=1, btrfs) a
// FICLONE copy of an image is a point-in-time snapshot that costs no data
// copy; comparing the physical extent maps (FS_IOC_FIEMAP) of an older and a
// newer snapshot gives the ranges written in between without reading data.
// The comparison rules are those of CompareExtentMaps
// (formats/raw/extent_map_diff.h); docs/design/reflink.md explains them.
//
// Thread safety: free functions; concurrent calls on different files are fine.
#ifndef STRATA_FORMATS_RAW_REFLINK_H_
#define STRATA_FORMATS_RAW_REFLINK_H_

#include <string>
#include <vector>

#include "strata/extent_set.h"
#include "strata/status.h"
#include "strata/units.h"
#include "formats/raw/extent_map_diff.h"

namespace strata {

// Makes `snapshot` a reflink clone of the regular file `source` (FICLONE),
// durably: the clone is made under a temporary name in the snapshot's
// directory, fsynced, renamed into place without replacing anything, and the
// directory fsynced. On any failure nothing is left behind.
//
// Errors (messages name both paths):
//  - kUnsupported: the file system cannot clone (EOPNOTSUPP, EINVAL, ENOTTY
//    from FICLONE), or the snapshot's directory is on another file system
//    than `source` (checked before cloning; EXDEV from FICLONE likewise).
//  - kAlreadyExists: `snapshot` exists.
//  - kInvalidArgument: `source` is not a regular file.
//  - kNotFound / kIoError / kNoSpace from the system calls.
// Cost: metadata only (the kernel flushes `source`'s dirty pages first).
Status CloneFile(const std::string& source, const std::string& snapshot);

// The physical extent map of the regular file `path` over [0, its size), as
// FS_IOC_FIEMAP reports it with FIEMAP_FLAG_SYNC (dirty data is written back
// first, so no extent is delayed-allocation). Extents may start before the
// end of the file and run past it; they are returned in the kernel's order.
// `size` receives the file size the map was taken at.
// Errors: kUnsupported when the file system has no FIEMAP; kIoError.
// Cost: O(extents) in batches of 1024 per ioctl.
Result<std::vector<PhysicalExtent>> ReadExtentMap(const std::string& path, uint64_t* size);

// Statistics of one ReflinkDiff.
struct ReflinkDiffStats {
  ExtentMapDiffStats bytes;
  uint64_t old_extents = 0;
  uint64_t new_extents = 0;
};

// The blocks at granularity `g` that may differ between the reflink clones
// `old_path` (the earlier snapshot) and `new_path` (a later clone of the same
// image): CompareExtentMaps over their FIEMAP maps. Over-reports, never
// under-reports, provided neither file is written while this runs (clones
// made by CloneFile are only ever read). The set covers the larger size.
//
// Errors: kInvalidArgument when the two are not regular files on one file
// system (physical addresses of different file systems are not comparable);
// as ReadExtentMap otherwise.
// Cost: O(extents of both files); no file data is read.
Result<ExtentSet> ReflinkDiff(const std::string& old_path, const std::string& new_path,
                              Granularity g, ReflinkDiffStats* stats = nullptr);

}  // namespace strata

#endif  // STRATA_FORMATS_RAW_REFLINK_H_
