// qcow2 codec (see qcow2_format.h). Section numbers (§) refer to
// /work/shared/reference/qcow2.md, which follows qemu/qemu docs/interop/qcow2.txt.
#include "formats/qcow2/qcow2_format.h"

#include <algorithm>
#include <set>

#include "extents/endian.h"
#include "strata/units.h"

namespace strata::qcow2 {

namespace {

constexpr uint32_t kExtEnd = 0;
constexpr uint32_t kExtBackingFormat = 0xE2792ACA;
constexpr uint32_t kExtFeatureTable = 0x6803F857;
constexpr uint32_t kExtBitmaps = 0x23852875;
constexpr uint32_t kExtCrypto = 0x0537BE77;
constexpr uint32_t kExtDataFile = 0x44415441;

Status Corrupt(const std::string& image, const std::string& what, uint64_t offset,
               const std::string& why) {
  return Status::Corruption(image + ": " + what + " at " + Hex(offset) + ": " + why);
}

// ceil(a / b) without overflow, b > 0.
uint64_t DivCeil(uint64_t a, uint64_t b) { return a / b + (a % b != 0); }

std::string Str(std::span<const uint8_t> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

}  // namespace

std::string FeatureBitNames(const Header& h, uint8_t type, uint64_t bits) {
  std::string out;
  for (int bit = 0; bit < 64; ++bit) {
    if (!(bits & (uint64_t{1} << bit))) continue;
    std::string name;
    for (const FeatureName& f : h.feature_names) {
      if (f.type == type && f.bit == bit) name = f.name;
    }
    if (name.empty()) name = "bit " + std::to_string(bit);
    if (!out.empty()) out += ", ";
    out += name;
  }
  return out;
}

uint64_t L1EntriesFor(uint64_t size, const Header& h) { return DivCeil(size, h.l2_span()); }

Status CheckTable(const Header& h, uint64_t offset, uint64_t entries, uint64_t entry_bytes,
                  uint64_t file_size, const std::string& image, const std::string& what) {
  if (offset & (h.cluster_size() - 1)) return Corrupt(image, what, offset, "not cluster aligned");
  if (entries > (uint64_t{1} << 62) / entry_bytes) {
    return Corrupt(image, what, offset, "too many entries (" + std::to_string(entries) + ")");
  }
  uint64_t bytes = entries * entry_bytes;
  if (offset > file_size || bytes > file_size - offset) {
    return Corrupt(image, what, offset,
                   std::to_string(bytes) + " bytes run past end of file (" + Hex(file_size) + ")");
  }
  return Status::Ok();
}

Result<Header> ParseHeader(std::span<const uint8_t> head, uint64_t file_size,
                           const std::string& image) {
  Header h;
  if (head.size() < 72) {
    return Corrupt(image, "qcow2 header", 0,
                   "file too short (" + std::to_string(head.size()) + " bytes)");
  }
  const uint8_t* p = head.data();
  if (LoadBE32(p) != kMagic) return Corrupt(image, "qcow2 header", 0, "bad magic");
  h.version = LoadBE32(p + 4);
  if (h.version != 2 && h.version != 3) {
    return Status::Unsupported(image + ": qcow2 header at 0x4: unsupported version " +
                               std::to_string(h.version));
  }
  h.backing_file_offset = LoadBE64(p + 8);
  h.backing_file_size = LoadBE32(p + 16);
  h.cluster_bits = LoadBE32(p + 20);
  h.size = LoadBE64(p + 24);
  h.crypt_method = LoadBE32(p + 32);
  h.l1_size = LoadBE32(p + 36);
  h.l1_table_offset = LoadBE64(p + 40);
  h.refcount_table_offset = LoadBE64(p + 48);
  h.refcount_table_clusters = LoadBE32(p + 56);
  h.nb_snapshots = LoadBE32(p + 60);
  h.snapshots_offset = LoadBE64(p + 64);
  if (h.cluster_bits < kMinClusterBits || h.cluster_bits > kMaxClusterBits) {
    return Corrupt(image, "qcow2 header field cluster_bits", 20,
                   "value " + std::to_string(h.cluster_bits) + " outside 9..21");
  }
  const uint64_t cs = h.cluster_size();
  if (h.version == 3) {
    if (head.size() < 104) {
      return Corrupt(image, "qcow2 v3 header", 0,
                     "file too short (" + std::to_string(head.size()) + " bytes)");
    }
    h.incompatible_features = LoadBE64(p + 72);
    h.compatible_features = LoadBE64(p + 80);
    h.autoclear_features = LoadBE64(p + 88);
    h.refcount_order = LoadBE32(p + 96);
    h.header_length = LoadBE32(p + 100);
    if (h.header_length < 104 || h.header_length % 8 != 0 || h.header_length > cs) {
      return Corrupt(image, "qcow2 header field header_length", 100,
                     "value " + std::to_string(h.header_length) +
                         " (must be >= 104, a multiple of 8 and <= the cluster size)");
    }
    if (h.header_length > head.size()) {
      return Corrupt(image, "qcow2 header", 0, "header_length runs past end of file");
    }
    if (h.header_length > 104) h.compression_type = p[104];
  }
  if (h.size > kMaxDiskSize) {
    return Status::Unsupported(image + ": qcow2 header field size at 0x18: " +
                               std::to_string(h.size) + " bytes is larger than 2^63");
  }
  if (h.refcount_order > 6) {
    return Corrupt(image, "qcow2 header field refcount_order", 96,
                   "value " + std::to_string(h.refcount_order) + " > 6");
  }
  if (h.backing_file_offset > cs) {
    return Corrupt(image, "qcow2 header field backing_file_offset", 8,
                   Hex(h.backing_file_offset) + " is past the first cluster");
  }

  // Header extensions (§2): from header_length to the backing name or the
  // end of cluster 0. The loop only advances, by at least 8 bytes.
  const uint64_t cluster0 = std::min<uint64_t>(cs, head.size());
  uint64_t end = h.backing_file_offset ? h.backing_file_offset : cluster0;
  end = std::min(end, cluster0);
  std::set<uint32_t> seen;
  uint64_t off = h.header_length;
  while (off < end) {
    if (end - off < 8) return Corrupt(image, "header extension", off, "truncated extension header");
    uint32_t type = LoadBE32(p + off);
    uint32_t len = LoadBE32(p + off + 4);
    uint64_t data = off + 8;
    if (len > end - data) {
      return Corrupt(image, "header extension " + Hex(type), off,
                     "length " + std::to_string(len) + " runs past the extension area (end " +
                         Hex(end) + ")");
    }
    if (type == kExtEnd) break;
    std::span<const uint8_t> d = head.subspan(data, len);
    if (type == kExtBackingFormat || type == kExtFeatureTable || type == kExtBitmaps ||
        type == kExtCrypto || type == kExtDataFile) {
      if (!seen.insert(type).second) {
        return Corrupt(image, "header extension " + Hex(type), off, "appears twice");
      }
    }
    switch (type) {
      case kExtBackingFormat:
        if (len >= 16) {
          return Corrupt(image, "backing format extension", off,
                         "length " + std::to_string(len) + " too large (QEMU: < 16)");
        }
        h.has_backing_format = true;
        h.backing_format = Str(d);
        break;
      case kExtFeatureTable:
        for (uint64_t i = 0; i + 48 <= len; i += 48) {
          FeatureName f;
          f.type = d[i];
          f.bit = d[i + 1];
          const uint8_t* n = d.data() + i + 2;
          size_t nl = 0;
          while (nl < 46 && n[nl] != 0) ++nl;
          f.name.assign(reinterpret_cast<const char*>(n), nl);
          h.feature_names.push_back(std::move(f));
        }
        break;
      case kExtBitmaps: {
        if (len != 24) {
          return Corrupt(image, "bitmaps extension", off,
                         "length " + std::to_string(len) + " (must be 24)");
        }
        h.has_bitmaps = true;
        h.bitmaps.nb_bitmaps = LoadBE32(d.data());
        uint32_t reserved = LoadBE32(d.data() + 4);
        h.bitmaps.directory_size = LoadBE64(d.data() + 8);
        h.bitmaps.directory_offset = LoadBE64(d.data() + 16);
        if (reserved != 0) return Corrupt(image, "bitmaps extension", off, "reserved32 is not zero");
        if (h.bitmaps.nb_bitmaps == 0 || h.bitmaps.nb_bitmaps > kMaxBitmaps) {
          return Corrupt(image, "bitmaps extension", off,
                         "nb_bitmaps " + std::to_string(h.bitmaps.nb_bitmaps) +
                             " outside 1..65535");
        }
        if (h.bitmaps.directory_size == 0 || h.bitmaps.directory_size > kMaxBitmapDirBytes) {
          return Corrupt(image, "bitmaps extension", off,
                         "bitmap directory size " + std::to_string(h.bitmaps.directory_size) +
                             " outside 1..67107840");
        }
        STRATA_RETURN_IF_ERROR(CheckTable(h, h.bitmaps.directory_offset,
                                          h.bitmaps.directory_size, 1, file_size, image,
                                          "bitmap directory"));
        break;
      }
      case kExtCrypto:
        if (len != 16) {
          return Corrupt(image, "crypto header extension", off,
                         "length " + std::to_string(len) + " (must be 16)");
        }
        h.has_crypto_header = true;
        break;
      case kExtDataFile:
        h.has_data_file = true;
        h.data_file = Str(d);
        break;
      default:
        break;  // unknown extensions are skipped (and would be preserved by a writer)
    }
    off = data + ((uint64_t{len} + 7) & ~uint64_t{7});
  }

  // Feature bits (§1): refuse what we cannot read correctly.
  if (uint64_t unknown = h.incompatible_features & ~kIncompatKnown) {
    return Status::Unsupported(image + ": qcow2 header field incompatible_features at 0x48: "
                               "unsupported feature(s): " + FeatureBitNames(h, 0, unknown));
  }
  if (h.crypt_method != 0) {
    return Status::Unsupported(image + ": qcow2 header field crypt_method at 0x20: encrypted "
                               "images (method " + std::to_string(h.crypt_method) +
                               ") are not supported");
  }
  if (h.data_file_bit() && (!h.has_data_file || h.data_file.empty())) {
    // QEMU then needs the data file given on its command line.
    return Status::Unsupported(image + ": qcow2 header field incompatible_features at 0x48: "
                               "external data file bit set but the image does not name "
                               "its data file");
  }
  if (h.data_file_bit() && h.data_file.find('\0') != std::string::npos) {
    return Corrupt(image, "data file name extension", h.header_length, "contains a NUL byte");
  }
  if (!h.data_file_bit() && (h.autoclear_features & kAutoclearDataFileRaw)) {
    return Corrupt(image, "qcow2 header field autoclear_features", 88,
                   "data-file-raw bit set without an external data file");
  }
  if (h.compression_type > 1) {
    return Status::Unsupported(image + ": qcow2 header field compression_type at 0x68: "
                               "unknown compression type " +
                               std::to_string(h.compression_type));
  }
  if ((h.compression_type != 0) != ((h.incompatible_features & kIncompatCompression) != 0)) {
    return Corrupt(image, "qcow2 header field compression_type", 104,
                   "compression type " + std::to_string(h.compression_type) +
                       " does not match incompatible bit 3");
  }
  if (h.extended_l2() && h.cluster_bits < 14) {
    return Corrupt(image, "qcow2 header field cluster_bits", 20,
                   "extended L2 entries need clusters of at least 16 KiB");
  }

  // Backing file name (§9), inside cluster 0.
  // A zero-length name means no backing file (as in QEMU).
  if (h.backing_file_offset != 0 && h.backing_file_size != 0) {
    uint64_t len = h.backing_file_size;
    if (len > kMaxNameSize || len > cs - h.backing_file_offset ||
        h.backing_file_offset + len > head.size()) {
      return Corrupt(image, "backing file name", h.backing_file_offset,
                     "length " + std::to_string(len) + " invalid (<= 1023, inside cluster 0)");
    }
    h.backing_file = Str(head.subspan(h.backing_file_offset, len));
    if (h.backing_file.find('\0') != std::string::npos) {
      return Corrupt(image, "backing file name", h.backing_file_offset, "contains a NUL byte");
    }
  }

  // Tables (§10 rules 7-8).
  if (uint64_t{h.l1_size} * 8 > kMaxL1Bytes) {
    return Corrupt(image, "L1 table", h.l1_table_offset,
                   "l1_size " + std::to_string(h.l1_size) + " exceeds 32 MiB");
  }
  if (h.l1_size < L1EntriesFor(h.size, h)) {
    return Corrupt(image, "L1 table", h.l1_table_offset,
                   "l1_size " + std::to_string(h.l1_size) + " too small for virtual size " +
                       std::to_string(h.size));
  }
  STRATA_RETURN_IF_ERROR(
      CheckTable(h, h.l1_table_offset, h.l1_size, 8, file_size, image, "L1 table"));
  if (h.refcount_table_clusters == 0) {
    return Corrupt(image, "refcount table", h.refcount_table_offset,
                   "image does not contain a refcount table");
  }
  if (uint64_t{h.refcount_table_clusters} << h.cluster_bits > kMaxRefTableBytes) {
    return Corrupt(image, "refcount table", h.refcount_table_offset,
                   std::to_string(h.refcount_table_clusters) + " clusters exceed 8 MiB");
  }
  STRATA_RETURN_IF_ERROR(CheckTable(h, h.refcount_table_offset,
                                    uint64_t{h.refcount_table_clusters} << h.cluster_bits, 1,
                                    file_size, image, "refcount table"));
  if (h.nb_snapshots > kMaxSnapshots) {
    return Corrupt(image, "snapshot table", h.snapshots_offset,
                   std::to_string(h.nb_snapshots) + " snapshots exceed 65536");
  }
  if (h.nb_snapshots > 0) {
    // Each entry has at least 40 fixed bytes.
    STRATA_RETURN_IF_ERROR(
        CheckTable(h, h.snapshots_offset, h.nb_snapshots, 40, file_size, image, "snapshot table"));
  }
  return h;
}

Result<uint64_t> L2OffsetFromL1(uint64_t l1e, uint64_t l1_index, uint64_t l1_offset,
                                const Header& h, uint64_t file_size, const std::string& image) {
  uint64_t l2 = l1e & kOffsetMask;
  if (l2 == 0) return uint64_t{0};
  std::string what = "L1 table entry " + std::to_string(l1_index);
  if (l2 & (h.cluster_size() - 1)) {
    return Corrupt(image, what, l1_offset + 8 * l1_index,
                   "L2 table offset " + Hex(l2) + " is not cluster aligned");
  }
  if (l2 > file_size || h.cluster_size() > file_size - l2) {
    return Corrupt(image, what, l1_offset + 8 * l1_index,
                   "L2 table at " + Hex(l2) + " lies past end of file (" + Hex(file_size) + ")");
  }
  return l2;
}

Result<Mapping> DecodeL2(uint64_t entry, uint64_t bitmap, uint32_t sc, const Header& h,
                         uint64_t l2_offset, uint64_t index, const std::string& image) {
  Mapping m;
  auto bad = [&](const std::string& why) {
    return Status::Corruption(image + ": L2 table at " + Hex(l2_offset) + " entry " +
                              std::to_string(index) + ": " + why);
  };
  if (entry & kL2Compressed) {
    if (h.data_file_bit()) return bad("compressed cluster in an image with an external data file");
    if (h.extended_l2() && bitmap != 0) return bad("compressed cluster with a subcluster bitmap");
    // §4: x = 62 - (cluster_bits - 8) offset bits, then the sector count.
    const uint32_t shift = 62 - (h.cluster_bits - 8);
    const uint64_t mask = (uint64_t{1} << (h.cluster_bits - 8)) - 1;
    uint64_t coffset = entry & ((uint64_t{1} << shift) - 1);
    if (coffset >> 56) return bad("compressed cluster offset " + Hex(coffset) + " too large");
    uint64_t sectors = ((entry >> shift) & mask) + 1;
    m.kind = ClusterKind::kCompressed;
    m.host_offset = coffset;
    m.compressed_size = sectors * 512 - (coffset & 511);
    return m;
  }
  const uint64_t off = entry & kOffsetMask;
  // qcow2_get_cluster_type(): offset 0 is ambiguous with an external data
  // file; every data-file cluster has refcount 1, so COPIED marks it allocated.
  const bool allocated = off != 0 || (h.data_file_bit() && (entry & kL2Copied));
  if (!h.extended_l2()) {
    if (entry & kL2Zero) {
      if (h.version < 3) return bad("zero cluster in a version 2 image");
      m.kind = off ? ClusterKind::kZeroAlloc : ClusterKind::kZeroPlain;
    } else {
      m.kind = allocated ? ClusterKind::kNormal : ClusterKind::kUnallocated;
    }
  } else {
    if ((bitmap >> 32) & bitmap & 0xffffffffu) {
      return bad("subcluster bitmap " + Hex(bitmap) + " marks a subcluster allocated and zero");
    }
    const bool zero = (bitmap >> (32 + sc)) & 1;
    const bool alloc = (bitmap >> sc) & 1;
    if (allocated) {
      m.kind = zero ? ClusterKind::kZeroAlloc
                    : (alloc ? ClusterKind::kNormal : ClusterKind::kUnallocatedAlloc);
    } else {
      if (bitmap & 0xffffffffu) return bad("allocated subclusters without a host cluster");
      m.kind = zero ? ClusterKind::kZeroPlain : ClusterKind::kUnallocated;
    }
  }
  if (off && (off & (h.cluster_size() - 1))) {
    return bad("cluster offset " + Hex(off) + " is not cluster aligned");
  }
  m.host_offset = off;
  return m;
}

Result<std::vector<SnapshotEntry>> ParseSnapshotTable(std::span<const uint8_t> table,
                                                      const Header& h, uint64_t file_size,
                                                      const std::string& image,
                                                      uint64_t* consumed) {
  std::vector<SnapshotEntry> out;
  uint64_t pos = 0;
  const uint64_t limit = std::min<uint64_t>(table.size(), kMaxSnapshotTableBytes);
  for (uint32_t i = 0; i < h.nb_snapshots; ++i) {
    const uint64_t at = h.snapshots_offset + pos;
    std::string what = "snapshot table entry " + std::to_string(i);
    if (pos >= limit || limit - pos < 40) {
      return Corrupt(image, what, at, "runs past the snapshot table");
    }
    const uint8_t* p = table.data() + pos;
    SnapshotEntry s;
    s.l1_table_offset = LoadBE64(p);
    s.l1_size = LoadBE32(p + 8);
    uint32_t id_size = LoadBE16(p + 12);
    uint32_t name_size = LoadBE16(p + 14);
    s.date_sec = LoadBE32(p + 16);
    s.date_nsec = LoadBE32(p + 20);
    s.vm_clock_nsec = LoadBE64(p + 24);
    s.vm_state_size = LoadBE32(p + 32);
    uint32_t extra = LoadBE32(p + 36);
    if (extra > kMaxSnapshotExtra) {
      return Corrupt(image, what, at, "extra data size " + std::to_string(extra) + " > 1024");
    }
    // Only the entry's own bytes must be present: QEMU pads each entry to 8
    // bytes but never writes the padding of the last one, so a table that
    // ends the file is 1-7 bytes short of its padded length (and QEMU never
    // reads that padding either: qcow2_read_snapshots rounds the offset up).
    const uint64_t raw_len = 40 + uint64_t{extra} + id_size + name_size;
    if (raw_len > limit - pos) return Corrupt(image, what, at, "runs past the snapshot table");
    const uint64_t len = (raw_len + 7) & ~uint64_t{7};
    const uint8_t* x = p + 40;
    if (extra >= 8) s.vm_state_size = LoadBE64(x);
    if (extra >= 16) {
      s.has_disk_size = true;
      s.disk_size = LoadBE64(x + 8);
    } else if (h.version >= 3) {
      return Corrupt(image, what, at, "extra data of " + std::to_string(extra) +
                                          " bytes lacks the disk size (v3 needs 16)");
    }
    s.id = Str(std::span<const uint8_t>(x + extra, id_size));
    s.name = Str(std::span<const uint8_t>(x + extra + id_size, name_size));
    if (s.has_disk_size && s.disk_size > kMaxDiskSize) {
      return Corrupt(image, what, at, "disk size " + std::to_string(s.disk_size) + " too large");
    }
    uint64_t view_size = s.has_disk_size ? s.disk_size : h.size;
    if (uint64_t{s.l1_size} * 8 > kMaxL1Bytes) {
      return Corrupt(image, what, at, "L1 size " + std::to_string(s.l1_size) + " exceeds 32 MiB");
    }
    if (s.l1_size < L1EntriesFor(view_size, h)) {
      return Corrupt(image, what, at, "L1 size " + std::to_string(s.l1_size) +
                                          " too small for disk size " + std::to_string(view_size));
    }
    STRATA_RETURN_IF_ERROR(CheckTable(h, s.l1_table_offset, s.l1_size, 8, file_size, image,
                                      "L1 table of snapshot '" + s.id + "'"));
    out.push_back(std::move(s));
    pos += len;
  }
  if (consumed) *consumed = pos;
  return out;
}

uint64_t BitmapTableEntriesFor(const Header& h, uint32_t granularity_bits) {
  uint64_t bits = DivCeil(h.size, uint64_t{1} << granularity_bits);
  uint64_t bytes = DivCeil(bits, 8);
  return DivCeil(bytes, h.cluster_size());
}

Result<std::vector<BitmapEntry>> ParseBitmapDirectory(std::span<const uint8_t> dir,
                                                      const Header& h, uint64_t file_size,
                                                      const std::string& image) {
  std::vector<BitmapEntry> out;
  std::set<std::string> names;
  uint64_t pos = 0;
  const uint64_t size = std::min<uint64_t>(dir.size(), h.bitmaps.directory_size);
  while (pos < size) {
    const uint64_t at = h.bitmaps.directory_offset + pos;
    std::string what = "bitmap directory entry " + std::to_string(out.size());
    if (out.size() >= h.bitmaps.nb_bitmaps) {
      return Corrupt(image, what, at, "more bitmaps than nb_bitmaps (" +
                                          std::to_string(h.bitmaps.nb_bitmaps) + ")");
    }
    if (size - pos < 24) return Corrupt(image, what, at, "truncated entry");
    const uint8_t* p = dir.data() + pos;
    BitmapEntry b;
    b.table_offset = LoadBE64(p);
    b.table_size = LoadBE32(p + 8);
    b.flags = LoadBE32(p + 12);
    b.type = p[16];
    b.granularity_bits = p[17];
    uint32_t name_size = LoadBE16(p + 18);
    uint32_t extra = LoadBE32(p + 20);
    uint64_t len = (24 + uint64_t{extra} + name_size + 7) & ~uint64_t{7};
    if (len > size - pos) return Corrupt(image, what, at, "runs past the bitmap directory");
    b.name = Str(std::span<const uint8_t>(p + 24 + extra, name_size));
    what += " '" + b.name + "'";
    if (extra != 0) {
      return Status::Unsupported(image + ": " + what + " at " + Hex(at) +
                                 ": extra data is not supported");
    }
    if (b.type != 1) return Corrupt(image, what, at, "type " + std::to_string(b.type) + " (not 1)");
    if (b.granularity_bits < 9 || b.granularity_bits > 31) {
      return Corrupt(image, what, at,
                     "granularity bits " + std::to_string(b.granularity_bits) + " outside 9..31");
    }
    if (b.flags & ~uint32_t{3}) return Corrupt(image, what, at, "reserved flags " + Hex(b.flags));
    if (name_size == 0 || name_size > kMaxNameSize) {
      return Corrupt(image, what, at, "name size " + std::to_string(name_size) + " outside 1..1023");
    }
    if (!names.insert(b.name).second) return Corrupt(image, what, at, "duplicate bitmap name");
    if (b.table_offset == 0) return Corrupt(image, what, at, "bitmap table offset is 0");
    if (b.table_size == 0 || b.table_size > kMaxBitmapTableEntries ||
        (uint64_t{b.table_size} << h.cluster_bits) > kMaxBitmapBytes) {
      return Corrupt(image, what, at, "bitmap table size " + std::to_string(b.table_size) +
                                          " invalid");
    }
    if (!b.in_use() && b.table_size != BitmapTableEntriesFor(h, b.granularity_bits)) {
      return Corrupt(image, what, at,
                     "bitmap table size " + std::to_string(b.table_size) + " does not match " +
                         std::to_string(BitmapTableEntriesFor(h, b.granularity_bits)) +
                         " needed for the disk size");
    }
    STRATA_RETURN_IF_ERROR(CheckTable(h, b.table_offset, b.table_size, 8, file_size, image,
                                      "bitmap table of '" + b.name + "'"));
    out.push_back(std::move(b));
    pos += len;
  }
  if (pos != h.bitmaps.directory_size) {
    return Corrupt(image, "bitmap directory", h.bitmaps.directory_offset,
                   "entries cover " + std::to_string(pos) + " of " +
                       std::to_string(h.bitmaps.directory_size) + " bytes");
  }
  if (out.size() != h.bitmaps.nb_bitmaps) {
    return Corrupt(image, "bitmap directory", h.bitmaps.directory_offset,
                   std::to_string(out.size()) + " bitmaps found, nb_bitmaps says " +
                       std::to_string(h.bitmaps.nb_bitmaps));
  }
  return out;
}

Result<BitmapTableEntry> DecodeBitmapTableEntry(uint64_t e, uint64_t index, const BitmapEntry& b,
                                                const Header& h, uint64_t file_size,
                                                const std::string& image) {
  auto bad = [&](const std::string& why) {
    return Status::Corruption(image + ": bitmap table of '" + b.name + "' at " +
                              Hex(b.table_offset) + " entry " + std::to_string(index) + ": " +
                              why);
  };
  if (e & 0xff000000000001feull) return bad("reserved bits set in " + Hex(e));
  BitmapTableEntry t;
  t.offset = e & kOffsetMask;
  t.all_ones = e & 1;
  if (t.offset == 0) return t;
  if (t.all_ones) return bad("all-ones bit set with a data offset");
  if (t.offset & (h.cluster_size() - 1)) return bad("data offset " + Hex(t.offset) + " unaligned");
  if (t.offset > file_size || h.cluster_size() > file_size - t.offset) {
    return bad("data cluster at " + Hex(t.offset) + " lies past end of file");
  }
  return t;
}

uint64_t RefcountAt(std::span<const uint8_t> block, uint32_t order, uint64_t index) {
  const uint32_t bits = 1u << order;
  if (bits >= 8) {
    const uint8_t* p = block.data() + index * (bits / 8);
    switch (bits) {
      case 8: return p[0];
      case 16: return LoadBE16(p);
      case 32: return LoadBE32(p);
      default: return LoadBE64(p);
    }
  }
  uint64_t bit = index * bits;
  return (block[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
}

}  // namespace strata::qcow2
