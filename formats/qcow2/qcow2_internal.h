// Driver internals shared by qcow2_image.cc and qcow2_metadata.cc.
#ifndef STRATA_FORMATS_QCOW2_QCOW2_INTERNAL_H_
#define STRATA_FORMATS_QCOW2_QCOW2_INTERNAL_H_

#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "extents/endian.h"
#include "formats/qcow2/qcow2_format.h"
#include "strata/qcow2_image.h"

namespace strata::qcow2 {

// One open qcow2 file: header, caches and backing image. Shared by the
// active view and snapshot views.
struct Core {
  std::string name;
  std::unique_ptr<File> file;
  uint64_t file_size = 0;
  Header h;
  Qcow2Info info;
  std::vector<SnapshotEntry> snapshots;
  std::vector<Qcow2Snapshot> snapshot_infos;
  std::unique_ptr<Image> backing;  // null: none
  // External data file (incompatible bit 2): guest data lives there at host
  // offset == guest offset. Null: data clusters are in `file`.
  std::unique_ptr<File> data_file;
  uint64_t data_file_size = 0;
  File& data() { return data_file ? *data_file : *file; }
  uint64_t data_size() const { return data_file ? data_file_size : file_size; }

  // Bounded LRU cache of L2 tables keyed by host offset.
  size_t l2_cache_max = 16;
  std::list<std::pair<uint64_t, std::vector<uint8_t>>> l2_lru;
  std::unordered_map<uint64_t, std::list<std::pair<uint64_t, std::vector<uint8_t>>>::iterator>
      l2_index;
  // Last decompressed cluster.
  uint64_t comp_host = ~uint64_t{0};
  std::vector<uint8_t> comp_data;
  std::vector<uint8_t> comp_in;
  void* zstd_dctx = nullptr;

  // QEMU's qcow2_detect_metadata_preallocation(), computed once.
  bool prealloc_checked = false;
  bool metadata_prealloc = false;

  ~Core();
  // The L2 table at `offset` (one cluster), from the cache or the file.
  Result<const uint8_t*> L2Table(uint64_t offset);
  // Decompresses the cluster whose compressed bytes start at `host`.
  Result<const uint8_t*> Decompress(uint64_t host, uint64_t csize);
  // Reads the L1 table (entries) at `offset`.
  Result<std::vector<uint64_t>> ReadL1(uint64_t offset, uint32_t entries, const std::string& what);
  void DetectMetadataPreallocation();
};

// A guest view: an L1 table and a size (active image or a snapshot).
struct View {
  std::vector<uint64_t> l1;
  uint64_t l1_offset = 0;
  uint64_t size = 0;
};

// A run of guest bytes with one mapping.
struct Run {
  ClusterKind kind = ClusterKind::kUnallocated;
  uint64_t length = 0;
  uint64_t host = 0;   // host offset of the first byte (host-bearing kinds)
  uint64_t csize = 0;  // kCompressed: compressed bytes at `host`
  uint64_t in_cluster = 0;  // kCompressed: offset of the first byte in the cluster
};

// Maps guest `offset` (< view.size) to a run of at most `max` bytes, inside
// one L2 table.
Status Lookup(Core& c, const View& v, uint64_t offset, uint64_t max, Run* run);

// The L2 entry words (entry, bitmap) of cluster `index` in a table.
inline void L2Words(const Header& h, const uint8_t* table, uint64_t index, uint64_t* e,
                    uint64_t* bm) {
  const uint8_t* p = table + index * h.l2_entry_bytes();
  *e = LoadBE64(p);
  *bm = h.extended_l2() ? LoadBE64(p + 8) : 0;
}

Result<std::vector<Qcow2Bitmap>> ListBitmaps(Core& c);
Result<ExtentSet> LoadBitmap(Core& c, const std::string& name, bool force);
// `to_is_active`: `to` is the active L1 (whose COPIED bits are meaningful).
Result<ExtentSet> DiffViews(Core& c, const View& from, const View& to, bool to_is_active);

}  // namespace strata::qcow2

#endif  // STRATA_FORMATS_QCOW2_QCOW2_INTERNAL_H_
