// The C interface (include/strata/strata.h): thin wrappers that turn
// Status into codes plus a thread-local message. Every entry point catches
// everything: no C++ exception crosses into C (allocation failure is
// STRATA_E_NO_MEMORY, anything else STRATA_E_INTERNAL).
#include "strata/strata.h"

#include <atomic>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "strata/jobs.h"
#include "strata/tracker.h"
#include "strata/open_image.h"
#include "strata/qcow2_image.h"

struct strata_image {
  std::unique_ptr<strata::Image> image;
};

struct strata_tracker {
  std::unique_ptr<strata::Tracker> t;
};

struct strata_extent_iter {
  explicit strata_extent_iter(strata::ExtentSet s) : set(std::move(s)), it(set) {}
  strata::ExtentSet set;
  strata::ExtentSet::RunIterator it;  // refers to `set` (declared first)
};

struct strata_repo {
  std::unique_ptr<strata::Repository> repo;
};

namespace {

thread_local std::string last_error;

int Code(const strata::Status& s) {
  if (s.ok()) {
    last_error.clear();
    return STRATA_OK;
  }
  last_error = s.message();
  return static_cast<int>(s.code());
}

int Invalid(const std::string& what) { return Code(strata::Status::InvalidArgument(what)); }

// Runs `fn` with every exception turned into a code.
template <class Fn>
int Guard(Fn&& fn) noexcept {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    last_error = "out of memory";
    return STRATA_E_NO_MEMORY;
  } catch (const std::exception& e) {
    last_error = std::string("internal error: ") + e.what();
    return STRATA_E_INTERNAL;
  } catch (...) {
    last_error = "internal error";
    return STRATA_E_INTERNAL;
  }
}

int SetIter(strata::Result<strata::ExtentSet> r, strata_extent_iter** out) {
  if (!r) return Code(r.error());
  *out = new strata_extent_iter(std::move(r).value());
  return Code(strata::Status::Ok());
}

// A C progress callback as the pipeline's progress and cancel flag.
struct Progress {
  Progress(strata_progress_fn fn, void* opaque, strata::PipelineOptions* opt) : fn_(fn), opaque_(opaque) {
    if (!fn_) return;
    opt->cancel = &cancel_;
    opt->progress = [this](uint64_t done, uint64_t total) {
      if (fn_(opaque_, done, total) != 0) cancel_ = true;
    };
  }
  strata_progress_fn fn_;
  void* opaque_;
  std::atomic<bool> cancel_{false};
};

void CopyId(const strata::ArchiveId& id, char out[33]) {
  std::string hex = strata::IsNullId(id) ? "" : strata::IdToHex(id);
  std::memcpy(out, hex.c_str(), hex.size() + 1);
}

}  // namespace

extern "C" {

const char* strata_version(void) { return STRATA_VERSION_STRING; }

const char* strata_last_error(void) { return last_error.c_str(); }

// ---- images ----

int strata_image_open(const char* path, const char* format, strata_image** out) {
  return Guard([&] {
    if (!path || !out) return Invalid("strata_image_open: null path or out");
    auto img = strata::OpenImage(path, format ? format : "auto");
    if (!img) return Code(img.error());
    *out = new strata_image{std::move(img).value()};
    return Code(strata::Status::Ok());
  });
}

void strata_image_close(strata_image* image) { delete image; }

uint64_t strata_image_size(const strata_image* image) { return image ? image->image->size() : 0; }

int strata_image_read(strata_image* image, uint64_t offset, void* buf, size_t length) {
  return Guard([&] {
    if (!image || (!buf && length)) return Invalid("strata_image_read: null image or buffer");
    return Code(image->image->Read(offset, {static_cast<uint8_t*>(buf), length}));
  });
}

int strata_image_map(strata_image* image, int (*fn)(void*, const strata_map_entry*), void* opaque) {
  return Guard([&] {
    if (!image || !fn) return Invalid("strata_image_map: null image or callback");
    return Code(strata::MapImage(*image->image, [&](const strata::MapEntry& e) -> strata::Status {
      strata_map_entry c{e.start, e.length, e.depth, e.present, e.zero, e.data};
      if (fn(opaque, &c) != 0) return strata::Status::Cancelled("map walk stopped by the caller");
      return strata::Status::Ok();
    }));
  });
}

int strata_image_bitmap_extents(strata_image* image, const char* name, strata_extent_fn fn, void* opaque) {
  return Guard([&] {
    if (!image || !name || !fn) return Invalid("strata_image_bitmap_extents: null argument");
    auto* q = dynamic_cast<strata::Qcow2Image*>(image->image.get());
    if (!q) return Code(strata::Status::InvalidArgument(image->image->name() + ": bitmaps need a qcow2 image"));
    auto set = q->LoadBitmap(name);
    if (!set) return Code(set.error());
    strata::ExtentSet::RunIterator it(*set);
    strata::ByteExtent run;
    while (it.Next(&run)) {
      if (fn(opaque, run.offset, run.length) != 0) return Code(strata::Status::Cancelled("stopped by the caller"));
    }
    return Code(strata::Status::Ok());
  });
}

// ---- tracker ----

int strata_tracker_create(const char* dir, uint64_t disk_size, uint64_t granularity, strata_tracker** out) {
  return Guard([&] {
    if (!dir || !out) return Invalid("strata_tracker_create: null dir or out");
    strata::TrackerOptions o;
    o.disk_size = disk_size;
    if (granularity) o.granularity_bytes = granularity;
    auto t = strata::Tracker::Create(dir, o);
    if (!t) return Code(t.error());
    *out = new strata_tracker{std::move(t).value()};
    return Code(strata::Status::Ok());
  });
}

int strata_tracker_open(const char* dir, strata_tracker** out) {
  return Guard([&] {
    if (!dir || !out) return Invalid("strata_tracker_open: null dir or out");
    auto t = strata::Tracker::Open(dir);
    if (!t) return Code(t.error());
    *out = new strata_tracker{std::move(t).value()};
    return Code(strata::Status::Ok());
  });
}

int strata_tracker_mark(strata_tracker* t, uint64_t offset, uint64_t length) {
  if (!t) return Invalid("strata_tracker_mark: null tracker");
  strata::Status s = t->t->Mark(offset, length);  // noexcept in practice: no allocation on the hot path
  if (s.ok()) return STRATA_OK;                    // hot path: leave last_error alone
  return Code(s);
}

int strata_tracker_checkpoint(strata_tracker* t, const char* name, uint64_t* id_out) {
  return Guard([&] {
    if (!t || !name) return Invalid("strata_tracker_checkpoint: null tracker or name");
    auto r = t->t->Checkpoint(name);
    if (!r) return Code(r.error());
    if (id_out) *id_out = r->id;
    return Code(strata::Status::Ok());
  });
}

int strata_tracker_changed_since(strata_tracker* t, const char* name, strata_extent_iter** out) {
  return Guard([&] {
    if (!t || !name || !out) return Invalid("strata_tracker_changed_since: null argument");
    return SetIter(t->t->ChangedSince(name), out);
  });
}

int strata_tracker_changed_between(strata_tracker* t, const char* from, const char* to, strata_extent_iter** out) {
  return Guard([&] {
    if (!t || !from || !to || !out) return Invalid("strata_tracker_changed_between: null argument");
    return SetIter(t->t->ChangedBetween(from, to), out);
  });
}

int strata_extent_iter_next(strata_extent_iter* it, uint64_t* offset, uint64_t* length) {
  if (!it) return 0;
  strata::ByteExtent e;
  if (!it->it.Next(&e)) return 0;
  if (offset) *offset = e.offset;
  if (length) *length = e.length;
  return 1;
}

uint64_t strata_extent_iter_bytes(const strata_extent_iter* it) { return it ? it->set.ByteCount() : 0; }

void strata_extent_iter_free(strata_extent_iter* it) { delete it; }

int strata_tracker_remove(strata_tracker* t, const char* name) {
  return Guard([&] {
    if (!t || !name) return Invalid("strata_tracker_remove: null tracker or name");
    return Code(t->t->Remove(name));
  });
}

uint64_t strata_tracker_disk_size(const strata_tracker* t) { return t ? t->t->disk_size() : 0; }

int strata_tracker_close(strata_tracker* t) {
  return Guard([&] {
    if (!t) return STRATA_OK;
    strata::Status s = t->t->Close();
    delete t;
    return Code(s);
  });
}

// ---- repositories ----

int strata_repo_init(const char* dir) {
  return Guard([&] {
    if (!dir) return Invalid("strata_repo_init: null dir");
    return Code(strata::Repository::Init(dir));
  });
}

int strata_repo_open(const char* dir, int read_only, uint32_t lock_wait_ms, strata_repo** out) {
  return Guard([&] {
    if (!dir || !out) return Invalid("strata_repo_open: null dir or out");
    strata::RepositoryOptions o;
    o.read_only = read_only != 0;
    o.lock_wait = std::chrono::milliseconds(lock_wait_ms);
    auto r = strata::Repository::Open(dir, o);
    if (!r) return Code(r.error());
    *out = new strata_repo{std::move(r).value()};
    return Code(strata::Status::Ok());
  });
}

void strata_repo_close(strata_repo* repo) { delete repo; }

void strata_backup_params_init(strata_backup_params* p) {
  if (!p) return;
  std::memset(p, 0, sizeof *p);
  p->struct_size = sizeof *p;
  p->source = STRATA_SOURCE_FULL;
}

int strata_backup(strata_repo* repo, const strata_backup_params* p, strata_backup_result* result) {
  return Guard([&] {
    if (!repo || !p || !p->image) return Invalid("strata_backup: null repository, params or image");
    if (p->struct_size < sizeof(strata_backup_params)) return Invalid("strata_backup: params.struct_size too small");
    strata::BackupRequest req;
    req.image = p->image;
    if (p->format) req.format = p->format;
    if (p->disk_name) req.disk_name = p->disk_name;
    if (p->parent) req.parent = p->parent;
    if (p->granularity) req.granularity = p->granularity;
    if (p->level) req.pipeline.level = p->level;
    strata::ChangeSource& s = req.source;
    switch (p->source) {
      case STRATA_SOURCE_FULL: s.kind = strata::SourceKind::kFull; break;
      case STRATA_SOURCE_SCAN: s.kind = strata::SourceKind::kScan; break;
      case STRATA_SOURCE_TRACKER: s.kind = strata::SourceKind::kTracker; break;
      case STRATA_SOURCE_BITMAP: s.kind = strata::SourceKind::kBitmap; break;
      case STRATA_SOURCE_SNAPSHOT: s.kind = strata::SourceKind::kSnapshot; break;
      case STRATA_SOURCE_REFLINK: s.kind = strata::SourceKind::kReflink; break;
      default: return Invalid("strata_backup: unknown source " + std::to_string(static_cast<int>(p->source)));
    }
    if (p->tracker_dir) s.tracker_dir = p->tracker_dir;
    if (p->since) s.since = p->since;
    if (p->bitmap) s.bitmap = p->bitmap;
    if (p->snapshot) s.snapshot = p->snapshot;
    if (p->since_snapshot) s.since_snapshot = p->since_snapshot;
    s.reflink = p->reflink != 0;
    Progress progress(p->progress, p->progress_opaque, &req.pipeline);
    auto r = strata::BackupToRepository(*repo->repo, req);
    if (!r) return Code(r.error());
    if (result && result->struct_size >= sizeof(strata_backup_result)) {
      CopyId(r->entry.id(), result->id);
      CopyId(r->entry.parent(), result->parent);
      result->changed_bytes = r->stats.planned_bytes;
      result->data_bytes = r->stats.data_bytes;
      result->stored_bytes = r->stats.stored_bytes;
      result->archive_bytes = r->stats.archive_bytes;
      result->seconds = r->stats.seconds;
    }
    return Code(strata::Status::Ok());
  });
}

int strata_list(strata_repo* repo, int (*fn)(void*, const strata_backup_info*), void* opaque) {
  return Guard([&] {
    if (!repo || !fn) return Invalid("strata_list: null repository or callback");
    for (const strata::CatalogEntry& e : repo->repo->entries()) {
      const strata::ArchiveHeader& h = e.header;
      std::string id = strata::IdToHex(h.id), parent = h.is_full() ? "" : strata::IdToHex(h.parent_id);
      std::string end = h.end.Describe();
      strata_backup_info info{};
      info.struct_size = sizeof info;
      info.id = id.c_str();
      info.parent = parent.c_str();
      info.disk_name = h.disk_name.c_str();
      info.source = strata::SourceKindName(h.source);
      info.end_point = end.c_str();
      info.created_unix_ns = h.created_unix_ns;
      info.content_unix_ns = h.content_unix_ns;
      info.disk_size = h.disk_size;
      info.logical_bytes = e.logical_bytes;
      info.stored_bytes = e.stored_bytes;
      info.archive_bytes = e.archive_bytes;
      info.merged = h.merged;
      info.quiesced = h.quiesced;
      if (fn(opaque, &info) != 0) return Code(strata::Status::Cancelled("listing stopped by the caller"));
    }
    return Code(strata::Status::Ok());
  });
}

int strata_restore(strata_repo* repo, const char* which, const char* output, strata_progress_fn fn, void* opaque) {
  return Guard([&] {
    if (!repo || !output) return Invalid("strata_restore: null repository or output");
    strata::PipelineOptions opt;
    Progress progress(fn, opaque, &opt);
    return Code(strata::RestoreFromRepository(*repo->repo, which ? which : "latest", output, opt).status());
  });
}

int strata_verify(strata_repo* repo, const char* which, strata_progress_fn fn, void* opaque) {
  return Guard([&] {
    if (!repo) return Invalid("strata_verify: null repository");
    std::vector<strata::ArchiveId> targets;
    if (which) {
      auto e = repo->repo->Find(which);
      if (!e) return Code(e.error());
      targets.push_back((*e)->id());
    } else {
      for (const strata::CatalogEntry& e : repo->repo->entries()) targets.push_back(e.id());
    }
    uint64_t done = 0, total = 0;
    for (const strata::CatalogEntry& e : repo->repo->entries()) total += e.stored_bytes;
    std::vector<strata::ArchiveId> verified;
    for (const strata::ArchiveId& id : targets) {
      auto chain = repo->repo->OpenChain(id);
      if (!chain) return Code(chain.error());
      std::vector<const strata::ArchiveReader*> c;
      for (auto& r : *chain) c.push_back(r.get());
      if (strata::Status s = strata::CheckChain(c); !s.ok()) return Code(s);
      for (const strata::ArchiveReader* r : c) {
        if (std::find(verified.begin(), verified.end(), r->header().id) != verified.end()) continue;
        verified.push_back(r->header().id);
        if (strata::Status s = strata::VerifyArchive(*r); !s.ok()) return Code(s);
        done += r->stored_bytes();
        if (fn && fn(opaque, done, total) != 0) return Code(strata::Status::Cancelled("verify cancelled"));
      }
    }
    return Code(strata::Status::Ok());
  });
}

}  // extern "C"
