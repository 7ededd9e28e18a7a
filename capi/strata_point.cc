// strata_point (include/strata/point.h): a backup point as a thread-safe
// ChainImage over archives opened under the repository's shared lock, which
// is released once they are open (see point.h for why that is safe).
#include "strata/point.h"

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "capi/capi_internal.h"
#include "engine/backup/chain_image.h"
#include "strata/repository.h"

struct strata_point {
  std::vector<std::unique_ptr<strata::ArchiveReader>> chain;  // newest first; outlives image
  std::unique_ptr<strata::ChainImage> image;
  std::string id, disk_name;
};

using strata::capi::Code;
using strata::capi::Guard;
using strata::capi::Invalid;

extern "C" {

void strata_point_params_init(strata_point_params* p) {
  if (!p) return;
  std::memset(p, 0, sizeof *p);
  p->struct_size = sizeof *p;
  p->cache_bytes = strata::ChainImageOptions{}.cache_bytes;
}

int strata_point_open(const char* repo_dir, const strata_point_params* p, strata_point** out) {
  return Guard([&] {
    if (!repo_dir || !p || !out) return Invalid("strata_point_open: null argument");
    if (p->struct_size < sizeof(strata_point_params)) return Invalid("strata_point_open: params not initialised");
    strata::RepositoryOptions o;
    o.read_only = true;
    o.lock_wait = std::chrono::milliseconds(p->lock_wait_ms);
    auto point = std::make_unique<strata_point>();
    {
      // The shared lock is held only in this scope (see point.h).
      auto repo = strata::Repository::Open(repo_dir, o);
      if (!repo) return Code(repo.error());
      std::optional<strata::DiskInfo> disk;
      if (p->disk) {
        auto d = (*repo)->DiskNamed(p->disk);
        if (!d) return Code(d.error());
        disk = *d;
      }
      auto e = (*repo)->Find(p->backup ? p->backup : "latest", disk ? &disk->id : nullptr);
      if (!e) return Code(e.error());
      auto chain = (*repo)->OpenChain((*e)->id());
      if (!chain) return Code(chain.error());
      point->chain = std::move(*chain);
      point->id = strata::IdToHex((*e)->id());
      point->disk_name = (*e)->header.disk_name;
    }
    std::vector<const strata::ArchiveReader*> raw;
    for (auto& a : point->chain) raw.push_back(a.get());
    strata::ChainImageOptions io;
    io.cache_bytes = p->cache_bytes;
    auto img = strata::ChainImage::Open(raw, io);
    if (!img) return Code(img.error());
    point->image = std::move(*img);
    *out = point.release();
    return Code(strata::Status::Ok());
  });
}

void strata_point_close(strata_point* point) { delete point; }

const char* strata_point_id(const strata_point* point) { return point ? point->id.c_str() : ""; }
const char* strata_point_disk_name(const strata_point* point) {
  return point ? point->disk_name.c_str() : "";
}
uint64_t strata_point_size(const strata_point* point) { return point ? point->image->size() : 0; }

int strata_point_read(strata_point* point, uint64_t offset, void* buf, size_t length) {
  return Guard([&] {
    if (!point || (!buf && length)) return Invalid("strata_point_read: null point or buffer");
    return Code(point->image->Read(offset, {static_cast<uint8_t*>(buf), length}));
  });
}

int strata_point_map(strata_point* point, uint64_t offset, uint64_t length, strata_point_map_fn fn,
                     void* opaque) {
  return Guard([&] {
    if (!point || !fn) return Invalid("strata_point_map: null point or callback");
    bool stopped = false;
    point->image->Map(offset, length, [&](uint64_t off, uint64_t len, bool zero) {
      stopped = fn(opaque, off, len, zero ? 1 : 0) != 0;
      return !stopped;
    });
    if (stopped) return Code(strata::Status::Cancelled("map walk stopped by the caller"));
    return Code(strata::Status::Ok());
  });
}

int strata_point_prefetch(strata_point* point, uint64_t offset, uint64_t length) {
  return Guard([&] {
    if (!point) return Invalid("strata_point_prefetch: null point");
    return Code(point->image->Prefetch(offset, length));
  });
}

int strata_point_get_stats(strata_point* point, strata_point_stats* out) {
  return Guard([&] {
    if (!point || !out || out->struct_size < sizeof(strata_point_stats)) {
      return Invalid("strata_point_get_stats: null argument or struct_size not set");
    }
    strata::ChainImageStats s = point->image->stats();
    out->cache_hits = s.cache.hits;
    out->cache_waits = s.cache.waits;
    out->cache_misses = s.cache.misses;
    out->cache_evictions = s.cache.evictions;
    out->cache_bytes = s.cache.resident_bytes;
    out->bytes_decompressed = s.bytes_decompressed;
    return Code(strata::Status::Ok());
  });
}

}  // extern "C"
