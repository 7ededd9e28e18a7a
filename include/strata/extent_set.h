// ExtentSet: a set of fixed-size blocks of a disk, backed by Roaring bitmaps.
//
// A set covers a disk of `disk_size` bytes (at most 2^63) at a power-of-two
// granularity (512 B .. 64 MiB). Block b stands for bytes
// [b * granularity, min((b + 1) * granularity, disk_size)).
//
// Why sharded 32-bit Roaring rather than Roaring64Map: at 512 B granularity a
// 2 TiB disk already has 2^32 blocks, so indices need up to 54 bits. Debian's
// CRoaring 0.2.66 has no 64-bit C API, and its Roaring64Map throws exceptions
// and iterates value by value. Sharding by the high 32 bits of the block
// index over the C API keeps one plain roaring_bitmap_t per 2^32 blocks (one
// shard for any disk below 256 TiB at 64 KiB), lets us coalesce runs across
// shard boundaries ourselves, and keeps the hot single-shard path to one
// cached pointer. See docs/design/extent-set.md.
//
// Errors: every operation whose arguments can be wrong returns Status;
// argument errors are kInvalidArgument, never asserts.
// Thread safety: like std::vector; const methods may run concurrently,
// a mutating call needs exclusive access.
#ifndef STRATA_EXTENT_SET_H_
#define STRATA_EXTENT_SET_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "strata/status.h"
#include "strata/units.h"

struct roaring_bitmap_s;

namespace strata {

namespace internal {
// Owns one CRoaring bitmap (deep copies on copy).
class Bitmap32 {
 public:
  Bitmap32();
  explicit Bitmap32(roaring_bitmap_s* adopt) : bm_(adopt) {}
  Bitmap32(const Bitmap32& other);
  Bitmap32& operator=(const Bitmap32& other);
  Bitmap32(Bitmap32&& other) noexcept : bm_(other.bm_) { other.bm_ = nullptr; }
  Bitmap32& operator=(Bitmap32&& other) noexcept;
  ~Bitmap32();
  roaring_bitmap_s* get() const { return bm_; }

 private:
  roaring_bitmap_s* bm_;
};
}  // namespace internal

class ExtentSet {
 public:
  // An empty set. kInvalidArgument for a bad granularity or disk_size > 2^63.
  static Result<ExtentSet> Create(uint64_t disk_size, uint64_t granularity_bytes);
  static Result<ExtentSet> Create(uint64_t disk_size, Granularity granularity);

  // Copies are deep and independent; a moved-from set is empty.
  ExtentSet(const ExtentSet& other);
  ExtentSet& operator=(const ExtentSet& other);
  ExtentSet(ExtentSet&& other) noexcept;
  ExtentSet& operator=(ExtentSet&& other) noexcept;
  ~ExtentSet() = default;

  uint64_t disk_size() const { return disk_size_; }
  Granularity granularity() const { return granularity_; }
  // Blocks the disk has: ceil(disk_size / granularity).
  uint64_t disk_blocks() const { return disk_blocks_; }

  // Adds / removes every block touched by bytes [offset, offset + length).
  // Zero length is a no-op. kInvalidArgument on overflow or past disk_size.
  // Cost: O(containers touched), no allocation once containers exist.
  Status Add(uint64_t offset, uint64_t length);
  Status Remove(uint64_t offset, uint64_t length);
  // Block-index forms; kInvalidArgument past disk_blocks().
  Status AddBlocks(BlockRange range);
  Status RemoveBlocks(BlockRange range);
  // Adds many single blocks given in any order (duplicates allowed). For
  // random blocks over a large disk this is several times faster than one
  // AddBlocks per block: the list is sorted and merged container by
  // container instead of touching a random container per block.
  // kInvalidArgument (set unchanged) if any block is past disk_blocks().
  Status AddBlockList(std::span<const uint64_t> blocks);

  // Whether the block holding byte `offset` is in the set (false past end).
  bool Contains(uint64_t offset) const;
  // Whether every block touched by [offset, offset + length) is in the set.
  // Zero length: true. Out-of-range: false.
  bool ContainsRange(uint64_t offset, uint64_t length) const;
  // Whether any block touched by [offset, offset + length) is in the set.
  bool Intersects(uint64_t offset, uint64_t length) const;

  uint64_t BlockCount() const;
  // Bytes covered, the last block clipped to disk_size.
  uint64_t ByteCount() const;
  bool empty() const { return shards_.empty(); }
  void Clear();

  // Set algebra. Both sets must have the same granularity and disk size
  // (kInvalidArgument otherwise; the set is unchanged).
  Status UnionWith(const ExtentSet& other);
  Status IntersectWith(const ExtentSet& other);
  Status Subtract(const ExtentSet& other);
  Status SymmetricDifferenceWith(const ExtentSet& other);
  static Result<ExtentSet> Union(const ExtentSet& a, const ExtentSet& b);
  static Result<ExtentSet> Intersection(const ExtentSet& a, const ExtentSet& b);
  static Result<ExtentSet> Difference(const ExtentSet& a, const ExtentSet& b);
  static Result<ExtentSet> SymmetricDifference(const ExtentSet& a,
                                               const ExtentSet& b);
  // Union of many sets at once (CRoaring's heap-based or_many per shard).
  static Result<ExtentSet> UnionAll(std::span<const ExtentSet* const> sets);

  // Same blocks, granularity and disk size.
  bool operator==(const ExtentSet& other) const;

  // The set at another granularity: coarser marks a block if any sub-block
  // was; finer marks every sub-block of a marked block (clipped to the disk).
  // Cost O(runs).
  Result<ExtentSet> WithGranularity(Granularity g) const;

  // Changes the disk size. Shrinking drops blocks past the new end; growing
  // adds nothing (the caller decides whether new space is dirty).
  Status Resize(uint64_t new_disk_size);

  // Compacts containers into runs where smaller (representation only).
  void Optimize();
  // Approximate heap bytes held by the bitmaps.
  size_t MemoryBytes() const;

  // Forward iteration over maximal runs in ascending order, without
  // materialising the list. The set must not change while iterating.
  class RunIterator {
   public:
    explicit RunIterator(const ExtentSet& set);
    ~RunIterator();
    RunIterator(const RunIterator&) = delete;
    RunIterator& operator=(const RunIterator&) = delete;
    // Next maximal block run; false at the end.
    bool NextBlocks(BlockRange* out);
    // Next maximal byte run, the last one clipped to disk_size.
    bool Next(ByteExtent* out);

   private:
    bool Fill();  // refills buf_ from the current shard; false at the end.
    const ExtentSet& set_;
    std::map<uint32_t, internal::Bitmap32>::const_iterator shard_;
    struct State;
    std::unique_ptr<State> st_;
    uint32_t buf_[256];
    uint32_t pos_ = 0, len_ = 0;
  };
  RunIterator Runs() const { return RunIterator(*this); }

  // All runs as a vector (convenience for tests and small sets).
  std::vector<ByteExtent> ToExtents() const;
  std::vector<BlockRange> ToBlockRanges() const;

  // Serialisation, docs/formats/extent-set.md. Deserialize validates the
  // magic, version, checksum, sizes and every block index, and returns
  // kCorruption naming the byte offset on any failure.
  std::string Serialize() const;
  static Result<ExtentSet> Deserialize(std::span<const uint8_t> bytes);

 private:
  ExtentSet(uint64_t disk_size, Granularity g);
  Status CheckCompatible(const ExtentSet& other, const char* op) const;
  roaring_bitmap_s* ShardFor(uint32_t key);  // creates on demand
  const roaring_bitmap_s* FindShard(uint32_t key) const;
  void DropEmpty();

  uint64_t disk_size_;
  Granularity granularity_;
  uint64_t disk_blocks_;
  std::map<uint32_t, internal::Bitmap32> shards_;
  // Hot-path cache of the last shard written; reset when shards_ changes
  // and never carried over by copy or move (it points into shards_).
  uint32_t cached_key_ = 0;
  roaring_bitmap_s* cached_ = nullptr;
};

}  // namespace strata

#endif  // STRATA_EXTENT_SET_H_
