// qcow2 driver: opening (header, backing chain), the L2 cache, guest reads
// and block status. Metadata-only features (bitmaps, snapshot diff) are in
// qcow2_metadata.cc. § numbers refer to /work/shared/reference/qcow2.md.
#include "strata/qcow2_image.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "formats/qcow2/qcow2_internal.h"
#include "formats/raw/raw_image.h"

namespace strata {
namespace qcow2 {

Core::~Core() {
  if (zstd_dctx) ZSTD_freeDCtx(static_cast<ZSTD_DCtx*>(zstd_dctx));
}

Result<const uint8_t*> Core::L2Table(uint64_t offset) {
  auto it = l2_index.find(offset);
  if (it != l2_index.end()) {
    l2_lru.splice(l2_lru.begin(), l2_lru, it->second);
    return static_cast<const uint8_t*>(it->second->second.data());
  }
  std::vector<uint8_t> buf;
  if (l2_lru.size() >= l2_cache_max) {  // recycle the least recently used table
    buf = std::move(l2_lru.back().second);
    l2_index.erase(l2_lru.back().first);
    l2_lru.pop_back();
  }
  buf.resize(h.cluster_size());
  // L2OffsetFromL1 checked that the table lies inside the file.
  STRATA_RETURN_IF_ERROR(file->ReadFull(offset, buf));
  l2_lru.emplace_front(offset, std::move(buf));
  l2_index[offset] = l2_lru.begin();
  return static_cast<const uint8_t*>(l2_lru.front().second.data());
}

Result<std::vector<uint64_t>> Core::ReadL1(uint64_t offset, uint32_t entries,
                                           const std::string& what) {
  if (entries == 0) return std::vector<uint64_t>();
  std::vector<uint8_t> raw(uint64_t{entries} * 8);
  STRATA_RETURN_IF_ERROR(file->ReadFull(offset, raw).WithContext(what));
  std::vector<uint64_t> l1(entries);
  for (uint32_t i = 0; i < entries; ++i) l1[i] = LoadBE64(raw.data() + 8 * uint64_t{i});
  return l1;
}

Result<const uint8_t*> Core::Decompress(uint64_t host, uint64_t csize) {
  const uint64_t cs = h.cluster_size();
  if (host == comp_host) return static_cast<const uint8_t*>(comp_data.data());
  comp_host = ~uint64_t{0};
  comp_in.resize(csize);
  // Like QEMU, bytes past end of file read as zeros (decompression then
  // fails if they were needed).
  STRATA_RETURN_IF_ERROR(file->ReadZeroPadded(host, comp_in));
  comp_data.resize(cs);
  auto bad = [&](const std::string& why) {
    return Status::Corruption(name + ": compressed cluster at " + Hex(host) + " (" +
                              std::to_string(csize) + " bytes): " + why);
  };
  if (h.compression_type == 0) {
    // §4: raw deflate; -15 accepts every window QEMU writes (-12).
    z_stream z{};
    if (inflateInit2(&z, -15) != Z_OK) return bad("inflateInit2 failed");
    z.next_in = comp_in.data();
    z.avail_in = static_cast<uInt>(csize);
    z.next_out = comp_data.data();
    z.avail_out = static_cast<uInt>(cs);
    int r = inflate(&z, Z_FINISH);
    bool ok = (r == Z_STREAM_END || r == Z_BUF_ERROR) && z.avail_out == 0;
    inflateEnd(&z);
    if (!ok) return bad("zlib stream does not inflate to one cluster (" + std::to_string(r) + ")");
  } else {
    if (!zstd_dctx) {
      ZSTD_DCtx* d = ZSTD_createDCtx();
      if (!d) return bad("out of memory");
      // Bound the decoder's memory: QEMU's frames have windows <= 2 MiB.
      ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, 23);
      zstd_dctx = d;
    }
    auto* d = static_cast<ZSTD_DCtx*>(zstd_dctx);
    ZSTD_DCtx_reset(d, ZSTD_reset_session_only);
    ZSTD_inBuffer in{comp_in.data(), csize, 0};
    ZSTD_outBuffer out{comp_data.data(), cs, 0};
    while (out.pos < out.size) {
      size_t last_in = in.pos, last_out = out.pos;
      size_t r = ZSTD_decompressStream(d, &out, &in);
      if (ZSTD_isError(r)) return bad(std::string("zstd: ") + ZSTD_getErrorName(r));
      if (in.pos <= last_in && out.pos <= last_out) return bad("zstd frame ends before one cluster");
    }
  }
  comp_host = host;
  return static_cast<const uint8_t*>(comp_data.data());
}

void Core::DetectMetadataPreallocation() {
  // QEMU (qcow2_detect_metadata_preallocation) reports data clusters of a
  // sparse, metadata-preallocated image as zero where the host file has
  // holes. It decides so when at least max(real * 10 / 9, real + 2) clusters
  // have a non-zero refcount, `real` being the clusters the file system has
  // allocated. Any error means "no", as in QEMU.
  prealloc_checked = true;
  if (file->fd() < 0) return;
  struct stat st;
  if (::fstat(file->fd(), &st) != 0 || !S_ISREG(st.st_mode)) return;
  const uint64_t cs = h.cluster_size();
  const uint64_t real = static_cast<uint64_t>(st.st_blocks) * 512 / cs;
  const uint64_t threshold = std::max(real * 10 / 9, real + 2);
  const uint64_t end_cluster = (file_size + cs - 1) / cs;
  const uint64_t rt_bytes = uint64_t{h.refcount_table_clusters} << h.cluster_bits;
  std::vector<uint8_t> rt(rt_bytes);
  if (!file->ReadFull(h.refcount_table_offset, rt).ok()) return;
  const uint64_t per_block = cs * 8 >> h.refcount_order;
  std::vector<uint8_t> block(cs);
  uint64_t count = 0;
  for (uint64_t i = 0; i < end_cluster && count < threshold;) {
    uint64_t rti = i / per_block;
    if (rti >= rt_bytes / 8) break;  // beyond the table: refcount 0
    uint64_t rb = LoadBE64(rt.data() + 8 * rti) & ~uint64_t{0x1ff};
    uint64_t stop = std::min(end_cluster, (rti + 1) * per_block);
    if (rb == 0) {
      i = stop;
      continue;
    }
    if ((rb & (cs - 1)) || rb > file_size || cs > file_size - rb) return;
    if (!file->ReadFull(rb, block).ok()) return;
    for (; i < stop && count < threshold; ++i) {
      count += RefcountAt(block, h.refcount_order, i % per_block) != 0;
    }
  }
  metadata_prealloc = count >= threshold;
}

Status Lookup(Core& c, const View& v, uint64_t offset, uint64_t max, Run* run) {
  const Header& h = c.h;
  const uint64_t cs = h.cluster_size();
  const uint64_t span = h.l2_span();
  const uint64_t l1i = offset / span;
  const uint64_t in_table = offset % span;
  uint64_t limit = std::min(max, span - in_table);
  *run = Run();
  if (l1i >= v.l1.size()) {  // a snapshot L1 shorter than the view: unallocated
    run->length = limit;
    return Status::Ok();
  }
  STRATA_ASSIGN_OR_RETURN(uint64_t l2,
                          L2OffsetFromL1(v.l1[l1i], l1i, v.l1_offset, h, c.file_size, c.name));
  if (l2 == 0) {
    run->length = limit;
    return Status::Ok();
  }
  STRATA_ASSIGN_OR_RETURN(const uint8_t* table, c.L2Table(l2));
  const uint64_t sc_size = h.subcluster_size();
  uint64_t idx = in_table >> h.cluster_bits;
  uint64_t e, bm;
  L2Words(h, table, idx, &e, &bm);
  uint32_t sc = static_cast<uint32_t>((offset & (cs - 1)) / sc_size);
  STRATA_ASSIGN_OR_RETURN(Mapping m, DecodeL2(e, bm, sc, h, l2, idx, c.name));
  run->kind = m.kind;
  if (m.kind == ClusterKind::kCompressed) {
    run->host = m.host_offset;
    run->csize = m.compressed_size;
    run->in_cluster = offset & (cs - 1);
    run->length = std::min(limit, cs - run->in_cluster);
    return Status::Ok();
  }
  const bool has_host = m.kind == ClusterKind::kNormal || m.kind == ClusterKind::kZeroAlloc ||
                        m.kind == ClusterKind::kUnallocatedAlloc;
  run->host = has_host ? m.host_offset + (offset & (cs - 1)) : 0;
  // With an external data file, host offset == guest offset (QEMU:
  // "External data file host cluster offset ... does not match").
  auto check_data_file = [&](uint64_t host_cluster, uint64_t guest, uint64_t i) -> Status {
    if (!h.data_file_bit() || host_cluster == (guest & ~(cs - 1))) return Status::Ok();
    return Status::Corruption(c.name + ": L2 table at " + Hex(l2) + " entry " +
                              std::to_string(i) + ": external data file cluster offset " +
                              Hex(host_cluster) + " differs from guest offset " +
                              Hex(guest & ~(cs - 1)));
  };
  if (has_host) STRATA_RETURN_IF_ERROR(check_data_file(m.host_offset, offset, idx));
  // Extend over following subclusters / clusters of the same kind (and,
  // for host-bearing kinds, contiguous host offsets).
  uint64_t len = std::min(limit, sc_size - (offset & (sc_size - 1)));
  while (len < limit) {
    uint64_t pos = offset + len;
    uint64_t i = (pos % span) >> h.cluster_bits;
    if (i != idx) {
      L2Words(h, table, i, &e, &bm);
      idx = i;
    }
    uint32_t s = static_cast<uint32_t>((pos & (cs - 1)) / sc_size);
    STRATA_ASSIGN_OR_RETURN(Mapping n, DecodeL2(e, bm, s, h, l2, i, c.name));
    if (n.kind != m.kind) break;
    if (has_host && n.host_offset + (pos & (cs - 1)) != run->host + len) break;
    if (has_host) STRATA_RETURN_IF_ERROR(check_data_file(n.host_offset, pos, i));
    len += std::min(limit - len, sc_size);
  }
  run->length = len;
  return Status::Ok();
}

namespace {

struct ChainState {
  std::vector<std::pair<dev_t, ino_t>> seen;
  std::vector<std::string> allowed;  // canonical directories chain files may lie in
  bool probe_backing_format = false;
};

class Qcow2ImageImpl : public Qcow2Image {
 public:
  Qcow2ImageImpl(std::shared_ptr<Core> core, View view, bool is_active)
      : core_(std::move(core)), view_(std::move(view)), is_active_(is_active) {}

  const std::string& name() const override { return core_->name; }
  uint64_t size() const override { return view_.size; }
  const Qcow2Info& info() const override { return core_->info; }
  const std::vector<Qcow2Snapshot>& Snapshots() const override { return core_->snapshot_infos; }
  std::string FileAt(int depth) const override {
    if (depth == 0) return name();
    return core_->backing ? core_->backing->FileAt(depth - 1) : std::string();
  }

  Status Read(uint64_t offset, std::span<uint8_t> buf) override {
    STRATA_RETURN_IF_ERROR(CheckRange(offset, buf.size(), view_.size).WithContext(name()));
    Core& c = *core_;
    uint64_t done = 0;
    while (done < buf.size()) {
      const uint64_t pos = offset + done;
      Run r;
      STRATA_RETURN_IF_ERROR(Lookup(c, view_, pos, buf.size() - done, &r));
      std::span<uint8_t> piece = buf.subspan(done, r.length);
      switch (r.kind) {
        case ClusterKind::kNormal:
          // Lenient like QEMU: a data cluster past end of file reads as zeros.
          STRATA_RETURN_IF_ERROR(c.data().ReadZeroPadded(r.host, piece));
          break;
        case ClusterKind::kZeroPlain:
        case ClusterKind::kZeroAlloc:
          std::memset(piece.data(), 0, piece.size());
          break;
        case ClusterKind::kCompressed: {
          STRATA_ASSIGN_OR_RETURN(const uint8_t* data, c.Decompress(r.host, r.csize));
          std::memcpy(piece.data(), data + r.in_cluster, piece.size());
          break;
        }
        case ClusterKind::kUnallocated:
        case ClusterKind::kUnallocatedAlloc: {
          uint64_t from_backing = 0;
          if (c.backing && pos < c.backing->size()) {
            from_backing = std::min<uint64_t>(piece.size(), c.backing->size() - pos);
            STRATA_RETURN_IF_ERROR(c.backing->Read(pos, piece.first(from_backing)));
          }
          std::memset(piece.data() + from_backing, 0, piece.size() - from_backing);
          break;
        }
      }
      done += r.length;
    }
    return Status::Ok();
  }

  Status BlockStatus(uint64_t offset, uint64_t length, std::vector<MapEntry>* out) override {
    STRATA_RETURN_IF_ERROR(CheckRange(offset, length, view_.size).WithContext(name()));
    Core& c = *core_;
    if (!c.prealloc_checked) c.DetectMetadataPreallocation();
    const uint64_t end = offset + length;
    uint64_t pos = offset;
    std::vector<MapEntry> below;
    while (pos < end) {
      Run r;
      STRATA_RETURN_IF_ERROR(Lookup(c, view_, pos, end - pos, &r));
      MapEntry e;
      e.start = pos;
      e.length = r.length;
      e.present = true;
      switch (r.kind) {
        case ClusterKind::kNormal:
          e.data = true;
          e.has_offset = true;
          e.offset = r.host;
          // QEMU's BDRV_BLOCK_RECURSE: for metadata-preallocated images,
          // block status asks the file holding the data (the image or its
          // external data file) with SEEK_DATA/SEEK_HOLE and reports its
          // holes as zero.
          if (c.metadata_prealloc) {
            STRATA_RETURN_IF_ERROR(SplitByHostHoles(e, out));
            pos += r.length;
            continue;
          }
          break;
        case ClusterKind::kZeroAlloc:
          e.zero = true;
          e.has_offset = true;
          e.offset = r.host;
          break;
        case ClusterKind::kZeroPlain:
          e.zero = true;
          break;
        case ClusterKind::kCompressed:
          e.data = true;
          break;
        case ClusterKind::kUnallocated:
        case ClusterKind::kUnallocatedAlloc:
          if (c.backing && pos < c.backing->size()) {
            // Ask the backing file; depth grows by one per layer (as in
            // qemu-img's get_block_status loop).
            uint64_t n = std::min(r.length, c.backing->size() - pos);
            below.clear();
            STRATA_RETURN_IF_ERROR(c.backing->BlockStatus(pos, n, &below));
            uint64_t got = 0;
            for (MapEntry b : below) {
              if (b.start != pos + got || b.length == 0 || b.length > n - got) {
                return Status::Corruption(c.backing->name() + ": bad block status at " +
                                          Hex(pos + got));
              }
              b.depth += 1;
              got += b.length;
              out->push_back(b);
            }
            if (got == 0) return Status::Corruption(name() + ": backing made no progress");
            pos += got;
            continue;
          }
          // No backing data here: zeros, not allocated (QEMU: ZERO without
          // ALLOCATED), reported at this depth; a reserved host cluster
          // (extended L2) keeps its offset.
          e.present = false;
          e.zero = true;
          if (r.kind == ClusterKind::kUnallocatedAlloc) {
            e.has_offset = true;
            e.offset = r.host;
          }
          break;
      }
      out->push_back(e);
      pos += r.length;
    }
    return Status::Ok();
  }

  Result<std::unique_ptr<Image>> OpenSnapshot(const std::string& id_or_name) override {
    STRATA_ASSIGN_OR_RETURN(View v, SnapshotView(id_or_name));
    return std::unique_ptr<Image>(new Qcow2ImageImpl(core_, std::move(v), false));
  }

  Result<std::vector<Qcow2Bitmap>> Bitmaps() override { return ListBitmaps(*core_); }

  Result<ExtentSet> LoadBitmap(const std::string& name, bool force) override {
    return qcow2::LoadBitmap(*core_, name, force);
  }

  Result<ExtentSet> SnapshotDiff(const std::string& from, const std::string& to) override {
    STRATA_ASSIGN_OR_RETURN(View a, SnapshotView(from));
    if (to.empty()) return DiffViews(*core_, a, view_, is_active_);
    STRATA_ASSIGN_OR_RETURN(View b, SnapshotView(to));
    return DiffViews(*core_, a, b, false);
  }

  Result<ExtentSet> LayerDiff(int layers) override {
    if (layers < 1) {
      return Status::InvalidArgument(name() + ": layer count must be at least 1, not " +
                                     std::to_string(layers));
    }
    STRATA_ASSIGN_OR_RETURN(ExtentSet set, ExtentSet::Create(view_.size, core_->h.cluster_size()));
    Status s = MapImage(*this, [&](const MapEntry& e) -> Status {
      if (e.present && e.depth < layers) return set.Add(e.start, e.length);
      return Status::Ok();
    });
    STRATA_RETURN_IF_ERROR(s);
    set.Optimize();
    return set;
  }

 private:
  Result<View> SnapshotView(const std::string& id_or_name) {
    Core& c = *core_;
    const SnapshotEntry* found = nullptr;
    for (const auto& s : c.snapshots) {
      if (s.id == id_or_name) { found = &s; break; }
    }
    if (!found) {
      for (const auto& s : c.snapshots) {
        if (s.name == id_or_name) { found = &s; break; }
      }
    }
    if (!found) return Status::NotFound(name() + ": no internal snapshot '" + id_or_name + "'");
    View v;
    v.l1_offset = found->l1_table_offset;
    v.size = found->has_disk_size ? found->disk_size : GuestSize(c.h.size);
    STRATA_ASSIGN_OR_RETURN(v.l1, c.ReadL1(found->l1_table_offset, found->l1_size,
                                           name() + ": L1 table of snapshot '" + found->id +
                                               "' at " + Hex(found->l1_table_offset)));
    return v;
  }

  // Metadata-preallocated images: QEMU asks the file holding the data
  // (SEEK_DATA / SEEK_HOLE) and reports holes, or bytes past its end, as zero.
  Status SplitByHostHoles(const MapEntry& e, std::vector<MapEntry>* out) {
    Core& c = *core_;
    const int fd = c.data().fd();
    const uint64_t file_size = c.data_size();
    uint64_t done = 0;
    while (done < e.length) {
      MapEntry p = e;
      p.start = e.start + done;
      p.offset = e.offset + done;
      uint64_t left = e.length - done;
      uint64_t host = p.offset;
      if (host >= file_size) {
        p.zero = true;
        p.length = left;
      } else {
        off_t data = ::lseek(fd, static_cast<off_t>(host), SEEK_DATA);
        if (data < 0 && errno == ENXIO) {  // trailing hole
          p.zero = true;
          p.length = left;
        } else if (data < 0) {  // no information: data
          p.length = left;
        } else if (static_cast<uint64_t>(data) > host) {
          p.zero = true;
          p.length = std::min<uint64_t>(left, static_cast<uint64_t>(data) - host);
        } else {
          off_t hole = ::lseek(fd, static_cast<off_t>(host), SEEK_HOLE);
          uint64_t n = hole > static_cast<off_t>(host) ? static_cast<uint64_t>(hole) - host : left;
          n = (n + 511) & ~uint64_t{511};  // QEMU rounds a partial sector at EOF up
          p.length = std::min(left, n);
        }
      }
      out->push_back(p);
      done += p.length;
    }
    return Status::Ok();
  }

  std::shared_ptr<Core> core_;
  View view_;
  bool is_active_;  // the active L1 (COPIED bits meaningful), not a snapshot view
};

// Opens a chain file named by image `referrer` (a backing file of format
// `format`) under the chain's rules. `file` is already open and checked.
Result<std::unique_ptr<Image>> OpenLayer(std::unique_ptr<File> file, const std::string& format,
                                         ChainState* chain);

// QEMU treats "proto:..." names (json:, nbd:, ...) as protocols; we refuse them.
bool IsProtocolName(const std::string& n) {
  if (n.rfind("json:", 0) == 0) return true;
  size_t colon = n.find(':');
  return colon != std::string::npos && colon < n.find('/');
}

Result<std::unique_ptr<Qcow2ImageImpl>> OpenFromFile(std::unique_ptr<File> file,
                                                     const std::string& path, ChainState* chain) {
  auto core = std::make_shared<Core>();
  core->name = file->name();
  STRATA_ASSIGN_OR_RETURN(core->file_size, file->Size());
  core->file = std::move(file);
  // Read the header cluster and nothing beyond it. Bytes past it belong to
  // other clusters, possibly guest data; on ext4, reading an unwritten
  // (fallocated) extent into the page cache turns it from "hole" into
  // "data" for SEEK_DATA, and QEMU's block status asks SEEK_DATA on
  // metadata-preallocated images (DetectMetadataPreallocation). Reading
  // 2 MiB here once changed what both QEMU and strata reported afterwards.
  // No readahead for the whole life of the file, for the same reason:
  // metadata reads (L2 tables) must not pull neighbouring data clusters in.
  // Guest data reads are large preads of host-contiguous runs and do not
  // need it.
  if (core->file->fd() >= 0) {
    (void)::posix_fadvise(core->file->fd(), 0, 0, POSIX_FADV_RANDOM);
  }
  uint64_t head_len = std::min<uint64_t>(core->file_size, 512);
  {
    uint8_t first[24] = {};
    if (core->file_size >= sizeof first) {
      STRATA_RETURN_IF_ERROR(core->file->ReadFull(0, first));
      const uint32_t bits = LoadBE32(first + 20);
      if (bits >= kMinClusterBits && bits <= kMaxClusterBits) {
        head_len = std::min<uint64_t>(core->file_size, uint64_t{1} << bits);
      }
    }
  }
  std::vector<uint8_t> head(head_len);
  if (!head.empty()) STRATA_RETURN_IF_ERROR(core->file->ReadFull(0, head));
  STRATA_ASSIGN_OR_RETURN(core->h, ParseHeader(head, core->file_size, core->name));
  const Header& h = core->h;
  core->l2_cache_max = std::max<uint64_t>(16, (uint64_t{8} << 20) >> h.cluster_bits);

  Qcow2Info& info = core->info;
  info.version = h.version;
  info.cluster_size = h.cluster_size();
  info.extended_l2 = h.extended_l2();
  info.compression = h.compression_type == 1 ? "zstd" : "zlib";
  info.dirty = h.incompatible_features & kIncompatDirty;
  info.corrupt = h.incompatible_features & kIncompatCorrupt;
  info.bitmaps_consistent = h.autoclear_features & kAutoclearBitmaps;
  info.backing_file = h.backing_file;
  info.backing_format = h.backing_format;
  info.snapshot_count = h.nb_snapshots;
  if (h.data_file_bit()) {
    info.data_file = h.data_file;
    info.data_file_raw = h.data_file_raw();
  }

  if (h.nb_snapshots > 0) {
    uint64_t avail = std::min<uint64_t>(core->file_size - h.snapshots_offset, kMaxSnapshotTableBytes);
    // Walk the entries' fixed parts to learn the table's length, then read
    // exactly that (nothing past it: see the file head above).
    uint64_t want = 0;
    for (uint32_t i = 0; i < h.nb_snapshots && want + 40 <= avail; ++i) {
      uint8_t fixed[40];
      STRATA_RETURN_IF_ERROR(core->file->ReadFull(h.snapshots_offset + want, fixed));
      const uint64_t raw = 40 + uint64_t{LoadBE32(fixed + 36)} + LoadBE16(fixed + 12) +
                           LoadBE16(fixed + 14);
      want += i + 1 < h.nb_snapshots ? (raw + 7) & ~uint64_t{7} : raw;
    }
    want = std::min(want, avail);
    for (;;) {
      std::vector<uint8_t> table(want);
      STRATA_RETURN_IF_ERROR(core->file->ReadFull(h.snapshots_offset, table));
      uint64_t used = 0;
      auto parsed = ParseSnapshotTable(table, h, core->file_size, core->name, &used);
      if (parsed.has_value()) {
        core->snapshots = std::move(*parsed);
        break;
      }
      if (want >= avail) return parsed.error();
      want = std::min(avail, want * 4);
    }
    for (const SnapshotEntry& s : core->snapshots) {
      Qcow2Snapshot q;
      q.id = s.id;
      q.name = s.name;
      q.vm_state_size = s.vm_state_size;
      q.date_sec = s.date_sec;
      q.date_nsec = s.date_nsec;
      q.vm_clock_nsec = s.vm_clock_nsec;
      q.disk_size = s.has_disk_size ? s.disk_size : GuestSize(h.size);
      core->snapshot_infos.push_back(std::move(q));
    }
  }

  if (h.data_file_bit()) {
    // Raw by definition; resolved and checked like a backing file.
    if (!chain) {
      return Status::Unsupported(core->name + ": external data file '" + h.data_file +
                                 "': data files need a path");
    }
    if (IsProtocolName(h.data_file)) {
      return Status::Unsupported(core->name + ": external data file '" + h.data_file +
                                 "': protocols are not supported");
    }
    STRATA_ASSIGN_OR_RETURN(core->data_file,
                            OpenChainFile(path, h.data_file, "data file", chain->allowed));
    STRATA_ASSIGN_OR_RETURN(core->data_file_size, core->data_file->Size());
  }

  if (!h.backing_file.empty()) {
    if (!chain) {
      return Status::Unsupported(core->name + ": backing file name at " +
                                 Hex(h.backing_file_offset) + ": backing files need a path");
    }
    const std::string& bname = h.backing_file;
    if (IsProtocolName(bname)) {
      return Status::Unsupported(core->name + ": backing file name at " +
                                 Hex(h.backing_file_offset) + ": protocol '" + bname +
                                 "' is not supported");
    }
    std::string fmt = h.has_backing_format ? h.backing_format : "auto";
    if (fmt != "qcow2" && fmt != "raw" && fmt != "auto") {
      return Status::Unsupported(core->name + ": backing format '" + fmt + "' of '" +
                                 h.backing_file + "' is not supported");
    }
    if (fmt == "auto" && !chain->probe_backing_format) {
      return Status::InvalidArgument(
          core->name + ": backing file '" + bname +
          "' has no declared format (no backing format header extension), and strata does "
          "not probe backing formats; declare it with `qemu-img rebase -u -b '" + bname +
          "' -F qcow2|raw " + core->name + "`");
    }
    STRATA_ASSIGN_OR_RETURN(auto bfile,
                            OpenChainFile(path, bname, "backing file", chain->allowed));
    auto b = OpenLayer(std::move(bfile), fmt, chain);
    if (!b) return b.error().WithContext(core->name + ": backing file");
    core->backing = std::move(*b);
  }

  View v;
  v.l1_offset = h.l1_table_offset;
  v.size = GuestSize(h.size);
  // Only the entries that map guest data are needed; the rest hold VM state.
  uint32_t entries = static_cast<uint32_t>(L1EntriesFor(h.size, h));
  STRATA_ASSIGN_OR_RETURN(v.l1, core->ReadL1(h.l1_table_offset, entries,
                                             core->name + ": L1 table at " + Hex(h.l1_table_offset)));
  return std::make_unique<Qcow2ImageImpl>(std::move(core), std::move(v), true);
}

// Opens one qcow2 layer from an open file, after the loop and depth checks.
Result<std::unique_ptr<Qcow2ImageImpl>> OpenChecked(std::unique_ptr<File> file,
                                                    ChainState* chain) {
  const std::string path = file->name();
  struct stat st;
  if (::fstat(file->fd(), &st) != 0) return Status::FromErrno(errno, path + ": fstat");
  for (const auto& [dev, ino] : chain->seen) {
    if (dev == st.st_dev && ino == st.st_ino) {
      return Status::Corruption(path + ": backing chain loop: this file already appears in "
                                "the chain");
    }
  }
  if (static_cast<int>(chain->seen.size()) > kMaxQcow2ChainDepth) {
    return Status::Corruption(path + ": backing chain deeper than " +
                              std::to_string(kMaxQcow2ChainDepth) + " images");
  }
  chain->seen.emplace_back(st.st_dev, st.st_ino);
  return OpenFromFile(std::move(file), path, chain);
}

Result<std::unique_ptr<Image>> OpenLayer(std::unique_ptr<File> file, const std::string& format,
                                         ChainState* chain) {
  std::string fmt = format;
  if (fmt == "auto") {  // only with probe_backing_format
    uint8_t magic[4] = {};
    STRATA_ASSIGN_OR_RETURN(size_t got, file->Read(0, magic));
    fmt = (got == 4 && LoadBE32(magic) == kMagic) ? "qcow2" : "raw";
  }
  if (fmt == "raw") return OpenRawImage(std::move(file));
  STRATA_ASSIGN_OR_RETURN(auto img, OpenChecked(std::move(file), chain));
  return std::unique_ptr<Image>(std::move(img));
}

}  // namespace
}  // namespace qcow2

Result<std::unique_ptr<Qcow2Image>> OpenQcow2Image(const std::string& path,
                                                   const ImageOpenOptions& options) {
  qcow2::ChainState chain;
  chain.probe_backing_format = options.probe_backing_format;
  STRATA_ASSIGN_OR_RETURN(auto file, OpenDiskFile(path));
  STRATA_ASSIGN_OR_RETURN(chain.allowed, AllowedChainDirs(path, options));
  STRATA_ASSIGN_OR_RETURN(auto img, qcow2::OpenChecked(std::move(file), &chain));
  return std::unique_ptr<Qcow2Image>(std::move(img));
}

Result<std::unique_ptr<Qcow2Image>> OpenQcow2Image(std::unique_ptr<File> file) {
  std::string name = file->name();
  STRATA_ASSIGN_OR_RETURN(auto img, qcow2::OpenFromFile(std::move(file), name, nullptr));
  return std::unique_ptr<Qcow2Image>(std::move(img));
}

}  // namespace strata
