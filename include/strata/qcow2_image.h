// qcow2 images: guest reads, block status, internal snapshots, persistent
// dirty bitmaps and change lists computed from metadata alone.
//
// What is read, refused and tolerated is listed in
// docs/formats/qcow2-support.md. Every value read from the image is
// validated before use; malformed images give kCorruption (unsupported
// features kUnsupported) with a one-line message naming the image, the
// structure and the byte offset, e.g.
//   "disk.qcow2: L2 table at 0x50000 entry 17: cluster offset 0x1234 is not cluster aligned".
//
// Thread safety: a Qcow2Image (and the snapshot views it opens, which share
// its file and caches) is used from one thread at a time.
// Memory: the L2 cache is bounded (at most max(16 tables, 8 MiB) per layer).
#ifndef STRATA_QCOW2_IMAGE_H_
#define STRATA_QCOW2_IMAGE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "strata/extent_set.h"
#include "strata/file.h"
#include "strata/image.h"

namespace strata {

// Facts from the qcow2 header.
struct Qcow2Info {
  uint32_t version = 0;             // 2 or 3
  uint64_t cluster_size = 0;        // 512 B .. 2 MiB
  bool extended_l2 = false;         // 32 subclusters per cluster
  std::string compression;          // "zlib" or "zstd"
  bool dirty = false;               // incompatible bit 0 (refcounts may be stale)
  bool corrupt = false;             // incompatible bit 1 (we still read it)
  bool bitmaps_consistent = false;  // autoclear bit 0
  std::string backing_file;         // as stored in the header ("" if none)
  std::string backing_format;       // from the extension ("" if absent)
  std::string data_file;            // external data file name as stored ("" if none)
  bool data_file_raw = false;       // autoclear bit 1: the data file is a raw image by itself
  uint32_t snapshot_count = 0;
};

// One internal snapshot (`qemu-img snapshot -l`).
struct Qcow2Snapshot {
  std::string id;
  std::string name;
  uint64_t vm_state_size = 0;
  uint32_t date_sec = 0;
  uint32_t date_nsec = 0;
  uint64_t vm_clock_nsec = 0;
  uint64_t disk_size = 0;  // guest size when taken (current size for old v2 entries)
};

// One persistent dirty bitmap.
struct Qcow2Bitmap {
  std::string name;
  uint64_t granularity = 0;  // bytes, 2^9 .. 2^31
  bool in_use = false;       // flag 0: not saved cleanly (writer crashed or still open)
  bool auto_flag = false;    // flag 1: enabled (writes are being recorded)
  // False when in_use is set or the image's autoclear bit says every bitmap
  // is stale: loading it then needs `force`.
  bool consistent = false;
};

class Qcow2Image : public Image {
 public:
  std::string_view format() const override { return "qcow2"; }

  virtual const Qcow2Info& info() const = 0;

  // Internal snapshots in table order. O(1): the table is parsed at open.
  virtual const std::vector<Qcow2Snapshot>& Snapshots() const = 0;

  // The guest view of internal snapshot `id_or_name` (ID first, then name, as
  // QEMU looks it up), of size disk_size, reading through the same backing
  // chain. The view shares this image's file: it must not outlive it.
  // kNotFound when there is no such snapshot.
  virtual Result<std::unique_ptr<Image>> OpenSnapshot(const std::string& id_or_name) = 0;

  // Persistent bitmaps from the bitmap directory (empty when the image has
  // none). kCorruption for a malformed directory.
  virtual Result<std::vector<Qcow2Bitmap>> Bitmaps() = 0;

  // The dirty ranges of bitmap `name` as an extent set of disk_size size()
  // and the bitmap's granularity (capped at 64 MiB, ExtentSet's limit). An
  // inconsistent bitmap (in_use, or autoclear bit 0 clear) is
  // kUnknownState ("... a full backup is needed") unless `force`. kNotFound
  // for an unknown name. Reads only the bitmap's own clusters:
  // O(bitmap size), never guest data.
  virtual Result<ExtentSet> LoadBitmap(const std::string& name, bool force = false) = 0;

  // Guest ranges whose content may differ between internal snapshot `from`
  // and snapshot `to` (empty: the active image), from L1/L2 comparison only:
  // a cluster whose L2 entries are identical (ignoring the COPIED flag) is
  // unchanged, unless the active image claims sole ownership (COPIED) of a
  // cluster or L2 table the snapshot shares (it may then have been written
  // in place); ranges beyond the smaller size are changed. Over-reports
  // (e.g. a rewrite with identical data), never under-reports. Granularity:
  // the cluster size; disk size: the size of `to`'s view. kNotFound for an
  // unknown snapshot. O(L2 tables that differ).
  virtual Result<ExtentSet> SnapshotDiff(const std::string& from, const std::string& to = "") = 0;

  // Guest ranges allocated (data or zero, "present") in the top `layers`
  // layers of the backing chain (1 = this file only): what changed since the
  // external snapshot below them was taken. Granularity: the cluster size.
  // kInvalidArgument for layers < 1.
  virtual Result<ExtentSet> LayerDiff(int layers) = 0;
};

// Opens a qcow2 image read-only with its whole backing chain and its
// external data file, if any. The image itself must be a regular file or a
// block device. Backing and data files are followed under `options`
// (include/strata/image.h): regular files inside the allowed directories only,
// backing files only with a declared format ("qcow2" or "raw"; others are
// kUnsupported) unless `probe_backing_format`. Relative backing and data
// file names resolve against the directory of the image that names them
// (QEMU 7.2 resolves data file names against its working directory instead).
// Loops (same device and inode twice) and chains deeper than
// kMaxQcow2ChainDepth are kCorruption.
inline constexpr int kMaxQcow2ChainDepth = 128;
Result<std::unique_ptr<Qcow2Image>> OpenQcow2Image(
    const std::string& path, const ImageOpenOptions& options = ImageOpenOptions());

// Same over an already open file, with no backing chain or data file allowed
// (an image naming one is kUnsupported). Used by tests and the fuzzer.
Result<std::unique_ptr<Qcow2Image>> OpenQcow2Image(std::unique_ptr<File> file);

}  // namespace strata

#endif  // STRATA_QCOW2_IMAGE_H_
