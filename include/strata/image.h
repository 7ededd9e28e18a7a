// Image: the interface every disk-image format implements (raw, qcow2).
//
// An image has a virtual (guest) size, positional reads of guest bytes and a
// block-status map. Map entries carry the same facts as QEMU's
// `qemu-img map --output=json` (start, length, depth, present, zero, data,
// offset) so our output can be compared with QEMU's field for field.
//
// Thread safety: an Image is used from one thread at a time unless the
// implementation says otherwise.
#ifndef STRATA_IMAGE_H_
#define STRATA_IMAGE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "strata/extent_set.h"
#include "strata/status.h"

namespace strata {

// One stretch of guest bytes with uniform status. Meaning as in QEMU:
//  - data:    reading needs the host file (not known to be zero)
//  - zero:    reads as zeros
//  - present: allocated at `depth` in the chain (false: falls through to
//             nothing, reads as zeros)
//  - depth:   0 = this image, 1 = its backing file, ...
//  - offset:  host offset of the bytes in the file at `depth`, when valid
//             (absent e.g. for compressed clusters and unallocated ranges)
struct MapEntry {
  uint64_t start = 0;
  uint64_t length = 0;
  int depth = 0;
  bool present = false;
  bool zero = false;
  bool data = false;
  bool has_offset = false;
  uint64_t offset = 0;
  bool operator==(const MapEntry&) const = default;
};

// Which other files opening an image may follow: backing files and qcow2
// external data files ("chain files"). A raw disk is guest-writable, and a
// guest can write a qcow2 header into it that names a host file; these rules
// keep such a header from making strata read host files
// (docs/formats/qcow2-support.md, "Which files a chain may name").
//  - A chain file must be a regular file (never a device, FIFO, ...).
//  - After resolving symlinks (realpath), it must lie inside one of
//    `allowed_dirs` or their subdirectories. Empty `allowed_dirs` means the
//    directory of the image being opened (the top of the chain, as named by
//    the caller), for every layer of the chain.
//  - A backing file's format must be declared in the image (the backing
//    format header extension); data files are raw by definition.
// Violations are kInvalidArgument naming the image, the chain file and the
// rule.
struct ImageOpenOptions {
  std::vector<std::string> allowed_dirs;
  // Probe the format of a backing file the image does not declare (qcow2
  // magic or raw), as QEMU does. Off by default: probing lets file contents
  // decide how a file is read.
  bool probe_backing_format = false;
};

// Canonical (realpath) forms of `options.allowed_dirs`, or of the directory
// of `top_image` when that list is empty. kNotFound / kIoError for a
// directory that cannot be resolved.
Result<std::vector<std::string>> AllowedChainDirs(const std::string& top_image,
                                                  const ImageOpenOptions& options);

// Resolves `name`, which image `referrer` names as its `kind` ("backing
// file", "data file"), and opens it read-only: a relative name is relative to
// the directory of `referrer`; the file must be a regular file inside one of
// `allowed` (canonical directories). The returned File is named by the
// joined (not canonical) path.
Result<std::unique_ptr<class File>> OpenChainFile(const std::string& referrer,
                                                  const std::string& name, const std::string& kind,
                                                  const std::vector<std::string>& allowed);

class Image {
 public:
  virtual ~Image() = default;

  // Path the image was opened with (used in every error message).
  virtual const std::string& name() const = 0;
  // "raw" or "qcow2".
  virtual std::string_view format() const = 0;
  // Guest-visible size in bytes.
  virtual uint64_t size() const = 0;

  // Reads guest bytes [offset, offset + buf.size()): kInvalidArgument past
  // size(); kCorruption / kIoError naming the file and offset otherwise.
  virtual Status Read(uint64_t offset, std::span<uint8_t> buf) = 0;

  // Appends entries describing [offset, offset + length) in ascending,
  // contiguous order; may stop early (the caller continues from the end of
  // the last entry) but always makes progress. Entries need not be merged.
  virtual Status BlockStatus(uint64_t offset, uint64_t length,
                             std::vector<MapEntry>* out) = 0;

  // Path of the file at `depth` in the backing chain (0 = this image).
  virtual std::string FileAt(int depth) const { return depth == 0 ? name() : std::string(); }
};

// Walks the whole image's block status and calls `emit` with entries merged
// exactly as `qemu-img map` merges them (same depth/present/zero/data and
// contiguous offsets or both without offset). Memory O(1) in image size.
Status MapImage(Image& image, const std::function<Status(const MapEntry&)>& emit);

// The ranges holding data (present and data) as an extent set at
// granularity `g`: what a full backup must read. Ranges that read as zero are
// left out. `include_backing` also counts data found deeper in the chain.
Result<ExtentSet> AllocatedExtents(Image& image, Granularity g, bool include_backing);

// `{ "start": S, "length": L, "depth": D, "present": P, "zero": Z, "data": D, "offset": O}`
// exactly as qemu-img 7.2 prints one entry (offset only when valid).
std::string MapEntryJson(const MapEntry& e);

}  // namespace strata

#endif  // STRATA_IMAGE_H_
