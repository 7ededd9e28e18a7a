// The C interface: thin wrappers turning Status into codes + a thread-local
// message. No exception may cross this boundary: allocation failure aborts.
#include "engine/tracker/strata_tracker_c.h"

#include <memory>
#include <optional>
#include <string>

#include "engine/tracker/tracker.h"

struct strata_tracker {
  std::unique_ptr<strata::Tracker> t;
};

struct strata_extent_iter {
  explicit strata_extent_iter(strata::ExtentSet s) : set(std::move(s)), it(set) {}
  strata::ExtentSet set;
  strata::ExtentSet::RunIterator it;  // refers to `set` (declared first)
};

namespace {

thread_local std::string last_error;

int Code(const strata::Status& s) {
  if (s.ok()) {
    last_error.clear();
    return STRATA_OK;
  }
  last_error = s.ToString();
  return static_cast<int>(s.code());
}

int NullArg(const char* what) {
  return Code(strata::Status::InvalidArgument(std::string("null argument: ") + what));
}

int SetIter(strata::Result<strata::ExtentSet> r, strata_extent_iter** out) {
  if (!r) return Code(r.error());
  *out = new strata_extent_iter(std::move(r).value());
  return Code(strata::Status::Ok());
}

}  // namespace

extern "C" {

int strata_tracker_create(const char* dir, uint64_t disk_size, uint64_t granularity,
                          strata_tracker** out) {
  if (!dir || !out) return NullArg("dir/out");
  strata::TrackerOptions o;
  o.disk_size = disk_size;
  if (granularity) o.granularity_bytes = granularity;
  auto t = strata::Tracker::Create(dir, o);
  if (!t) return Code(t.error());
  *out = new strata_tracker{std::move(t).value()};
  return Code(strata::Status::Ok());
}

int strata_tracker_open(const char* dir, strata_tracker** out) {
  if (!dir || !out) return NullArg("dir/out");
  auto t = strata::Tracker::Open(dir);
  if (!t) return Code(t.error());
  *out = new strata_tracker{std::move(t).value()};
  return Code(strata::Status::Ok());
}

int strata_tracker_mark(strata_tracker* t, uint64_t offset, uint64_t length) {
  if (!t) return NullArg("tracker");
  strata::Status s = t->t->Mark(offset, length);
  if (s.ok()) return STRATA_OK;  // hot path: leave last_error alone
  return Code(s);
}

int strata_tracker_checkpoint(strata_tracker* t, const char* name, uint64_t* id_out) {
  if (!t || !name) return NullArg("tracker/name");
  auto r = t->t->Checkpoint(name);
  if (!r) return Code(r.error());
  if (id_out) *id_out = r->id;
  return Code(strata::Status::Ok());
}

int strata_tracker_changed_since(strata_tracker* t, const char* name, strata_extent_iter** out) {
  if (!t || !name || !out) return NullArg("tracker/name/out");
  return SetIter(t->t->ChangedSince(name), out);
}

int strata_tracker_changed_between(strata_tracker* t, const char* from, const char* to,
                                   strata_extent_iter** out) {
  if (!t || !from || !to || !out) return NullArg("tracker/from/to/out");
  return SetIter(t->t->ChangedBetween(from, to), out);
}

int strata_extent_iter_next(strata_extent_iter* it, uint64_t* offset, uint64_t* length) {
  if (!it) return 0;
  strata::ByteExtent e;
  if (!it->it.Next(&e)) return 0;
  if (offset) *offset = e.offset;
  if (length) *length = e.length;
  return 1;
}

uint64_t strata_extent_iter_bytes(const strata_extent_iter* it) {
  return it ? it->set.ByteCount() : 0;
}

void strata_extent_iter_free(strata_extent_iter* it) { delete it; }

int strata_tracker_remove(strata_tracker* t, const char* name) {
  if (!t || !name) return NullArg("tracker/name");
  return Code(t->t->Remove(name));
}

uint64_t strata_tracker_disk_size(const strata_tracker* t) { return t ? t->t->disk_size() : 0; }

int strata_tracker_close(strata_tracker* t) {
  if (!t) return STRATA_OK;
  strata::Status s = t->t->Close();
  delete t;
  return Code(s);
}

const char* strata_last_error(void) { return last_error.c_str(); }

}  // extern "C"
