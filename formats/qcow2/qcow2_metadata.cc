// Change lists from qcow2 metadata alone: persistent dirty bitmaps (§8) and
// internal snapshot diffs (§7, L1/L2 comparison). No guest data is read.
#include <algorithm>
#include <cstring>

#include "formats/qcow2/qcow2_internal.h"

namespace strata::qcow2 {

namespace {

Result<std::vector<BitmapEntry>> ReadDirectory(Core& c) {
  if (!c.h.has_bitmaps) return std::vector<BitmapEntry>();
  std::vector<uint8_t> dir(c.h.bitmaps.directory_size);  // <= 64 MiB, inside the file
  STRATA_RETURN_IF_ERROR(c.file->ReadFull(c.h.bitmaps.directory_offset, dir));
  return ParseBitmapDirectory(dir, c.h, c.file_size, c.name);
}

// Adds the guest ranges of the set bits of `bytes` (bitmap data bytes
// starting at bit `first_bit`) to `set`, clipped to the disk size.
Status AddBits(const uint8_t* bytes, uint64_t n, uint64_t first_bit, uint64_t nbits,
               uint32_t gran_bits, uint64_t disk_size, ExtentSet* set) {
  uint64_t run_start = 0;
  bool in_run = false;
  auto flush = [&](uint64_t end_bit) -> Status {
    in_run = false;
    uint64_t start = run_start << gran_bits;
    if (start >= disk_size) return Status::Ok();
    uint64_t end = std::min(disk_size, end_bit << gran_bits);
    return set->Add(start, end - start);
  };
  uint64_t i = 0;
  while (i < n) {
    uint64_t bit = first_bit + i * 8;
    if (bit >= nbits) break;
    // Skip whole zero (or whole one) words quickly.
    if (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, bytes + i, 8);
      if ((w == 0 && !in_run) || (w == ~uint64_t{0} && in_run)) {
        i += 8;
        continue;
      }
    }
    uint8_t b = bytes[i];
    for (int k = 0; k < 8; ++k) {
      uint64_t bb = bit + k;
      if (bb >= nbits) break;
      bool set_bit = (b >> k) & 1;  // LSB first (§8.4)
      if (set_bit && !in_run) {
        in_run = true;
        run_start = bb;
      } else if (!set_bit && in_run) {
        STRATA_RETURN_IF_ERROR(flush(bb));
      }
    }
    ++i;
  }
  if (in_run) {
    uint64_t end_bit = std::min(nbits, first_bit + n * 8);
    STRATA_RETURN_IF_ERROR(flush(end_bit));
  }
  return Status::Ok();
}

}  // namespace

Result<std::vector<Qcow2Bitmap>> ListBitmaps(Core& c) {
  STRATA_ASSIGN_OR_RETURN(auto dir, ReadDirectory(c));
  std::vector<Qcow2Bitmap> out;
  const bool valid_ext = (c.h.autoclear_features & kAutoclearBitmaps) && c.h.version >= 3;
  for (const BitmapEntry& b : dir) {
    Qcow2Bitmap q;
    q.name = b.name;
    q.granularity = uint64_t{1} << b.granularity_bits;
    q.in_use = b.in_use();
    q.auto_flag = b.auto_flag();
    q.consistent = valid_ext && !b.in_use();
    out.push_back(std::move(q));
  }
  return out;
}

Result<ExtentSet> LoadBitmap(Core& c, const std::string& name, bool force) {
  STRATA_ASSIGN_OR_RETURN(auto dir, ReadDirectory(c));
  const BitmapEntry* b = nullptr;
  for (const auto& e : dir) {
    if (e.name == name) b = &e;
  }
  if (!b) return Status::NotFound(c.name + ": no persistent bitmap '" + name + "'");
  const uint64_t dir_at = c.h.bitmaps.directory_offset;
  if (!force) {
    if (b->in_use()) {
      return Status::UnknownState(c.name + ": bitmap '" + name + "' (directory at " +
                                  Hex(dir_at) + ") is in use: it was not saved cleanly, so "
                                  "its changes are unknown and a full backup is needed");
    }
    if (!(c.h.autoclear_features & kAutoclearBitmaps) || c.h.version < 3) {
      return Status::UnknownState(c.name + ": bitmap '" + name + "' is inconsistent: the "
                                  "autoclear bit at 0x58 says a program without bitmap "
                                  "support wrote the image, so a full backup is needed");
    }
  }
  const uint32_t gbits = b->granularity_bits;
  const uint64_t disk = GuestSize(c.h.size);
  STRATA_ASSIGN_OR_RETURN(
      ExtentSet set,
      ExtentSet::Create(disk, uint64_t{1} << std::min<uint32_t>(gbits, Granularity::kMaxShift)));
  const uint64_t cs = c.h.cluster_size();
  const uint64_t nbits = (disk >> gbits) + ((disk & ((uint64_t{1} << gbits) - 1)) != 0);
  // In-use bitmaps may have a stale table size: use only what maps the disk.
  const uint64_t entries = std::min<uint64_t>(b->table_size, BitmapTableEntriesFor(c.h, gbits));
  if (entries == 0) return set;
  std::vector<uint8_t> table(entries * 8);
  STRATA_RETURN_IF_ERROR(c.file->ReadFull(b->table_offset, table));
  std::vector<uint8_t> data(cs);
  const uint64_t bits_per_cluster = cs * 8;
  for (uint64_t i = 0; i < entries; ++i) {
    STRATA_ASSIGN_OR_RETURN(BitmapTableEntry t,
                            DecodeBitmapTableEntry(LoadBE64(table.data() + 8 * i), i, *b, c.h,
                                                   c.file_size, c.name));
    const uint64_t first_bit = i * bits_per_cluster;
    if (t.offset == 0) {
      if (!t.all_ones) continue;
      std::memset(data.data(), 0xff, cs);
    } else {
      STRATA_RETURN_IF_ERROR(c.file->ReadFull(t.offset, data));
    }
    STRATA_RETURN_IF_ERROR(AddBits(data.data(), cs, first_bit, nbits, gbits, disk, &set));
  }
  set.Optimize();
  return set;
}

Result<ExtentSet> DiffViews(Core& c, const View& from, const View& to, bool to_is_active) {
  const Header& h = c.h;
  STRATA_ASSIGN_OR_RETURN(ExtentSet set, ExtentSet::Create(to.size, h.cluster_size()));
  const uint64_t span = h.l2_span();
  const uint64_t common = std::min(from.size, to.size);
  const uint64_t tables = (common + span - 1) / span;
  std::vector<uint8_t> copy;
  for (uint64_t i = 0; i < tables; ++i) {
    const uint64_t start = i * span;
    const uint64_t len = std::min(span, common - start);
    uint64_t ea = i < from.l1.size() ? from.l1[i] : 0;
    uint64_t eb = i < to.l1.size() ? to.l1[i] : 0;
    STRATA_ASSIGN_OR_RETURN(uint64_t la, L2OffsetFromL1(ea, i, from.l1_offset, h, c.file_size, c.name));
    STRATA_ASSIGN_OR_RETURN(uint64_t lb, L2OffsetFromL1(eb, i, to.l1_offset, h, c.file_size, c.name));
    // A shared L2 table is never rewritten in place (writes copy it first), so
    // the same table means the same mapping for the whole range. An active L1
    // entry that claims sole ownership (COPIED) of a table a snapshot shares
    // contradicts that: the table may have been rewritten, so compare
    // entry by entry, which then reports every owned cluster.
    const bool owned_l1 = to_is_active && (eb & kL2Copied);
    if (la == lb && !owned_l1) continue;
    const uint8_t* ta = nullptr;
    if (la) {
      STRATA_ASSIGN_OR_RETURN(const uint8_t* t, c.L2Table(la));
      copy.assign(t, t + h.cluster_size());  // the next L2Table call may evict it
      ta = copy.data();
    }
    const uint8_t* tb = nullptr;
    if (lb) {
      STRATA_ASSIGN_OR_RETURN(tb, c.L2Table(lb));
    }
    const uint64_t clusters = (len + h.cluster_size() - 1) >> h.cluster_bits;
    for (uint64_t k = 0; k < clusters; ++k) {
      uint64_t a = 0, abm = 0, b = 0, bbm = 0;
      if (ta) L2Words(h, ta, k, &a, &abm);
      if (tb) L2Words(h, tb, k, &b, &bbm);
      // COPIED only says whether the refcount is 1: same mapping either way,
      // unless the active entry claims sole ownership of a cluster the
      // snapshot also maps (then it may have been written in place).
      const bool same = (a & ~kL2Copied) == (b & ~kL2Copied) && abm == bbm;
      const bool owned = to_is_active && (b & kL2Copied) && (b & kOffsetMask) && !(b & kL2Compressed);
      if (same && !owned) continue;
      uint64_t s = start + (k << h.cluster_bits);
      STRATA_RETURN_IF_ERROR(set.Add(s, std::min<uint64_t>(h.cluster_size(), to.size - s)));
    }
  }
  if (to.size > common) STRATA_RETURN_IF_ERROR(set.Add(common, to.size - common));
  set.Optimize();
  return set;
}

}  // namespace strata::qcow2
