// nbdkit-strata-filter: tracks the writes of any nbdkit export in a strata
// tracker (docs/design/filter.md).
//
//   nbdkit --filter=strata PLUGIN [PLUGIN ARGS...] tracker=DIR [granularity=64K]
//
// Every write, trim and zero is marked in the tracker before it is passed
// on to the plugin: with the tracker's intent log (the default) the mark is
// durable before the plugin sees the request, so a write that reached the
// disk is never missing from the changes after a crash of nbdkit, FUA or
// not; a flush needs nothing more from the tracker. A mark that fails
// (intent log not durable) fails the request with EIO/ENOSPC: nothing is
// written, nothing acknowledged.
//
// The tracker is opened (or created with the export's size and
// `granularity`) when nbdkit starts and closed cleanly when it exits; in
// between this process owns it and serves DIR/control.sock
// (strata/tracker_control.h), through which `strata checkpoint --tracker
// DIR` and `strata backup --tracker DIR` take checkpoints and read changes.
// A checkpoint waits for the requests in flight and holds new ones off
// while it seals (a writer-preferring rwlock): a write marked before the
// checkpoint is on the disk before a backup reads it.
//
// A client of the public C++ API only (include/strata/).
#include <errno.h>
#include <pthread.h>
#include <sys/stat.h>

#include <cinttypes>
#include <cstdlib>
#include <cstring>
#include <functional>

#include <memory>
#include <string>

#include <nbdkit-filter.h>

#include "strata/status.h"
#include "strata/tracker.h"
#include "strata/tracker_control.h"
#include "strata/units.h"

namespace {

using strata::Status;

char* tracker_dir;            // absolute (nbdkit_absolute_path)
int64_t granularity = 64 * 1024;
bool granularity_set = false;
std::unique_ptr<strata::Tracker> tracker;
std::unique_ptr<strata::TrackerControlServer> server;
// Requests that change the disk hold it shared from their mark until the
// plugin returns; a checkpoint holds it exclusively.
pthread_rwlock_t inflight;

int ErrnoOf(const Status& s) {
  if (s.code() == strata::StatusCode::kNoSpace) return ENOSPC;
  return s.sys_errno() != 0 ? s.sys_errno() : EIO;
}

void Unload() {
  if (server) server->Stop();
  server.reset();
  if (tracker) {
    if (Status s = tracker->Close(); !s.ok()) {
      nbdkit_error("strata: closing tracker %s: %s (the next open recovers from the intent log)", tracker_dir,
                   s.message().c_str());
    }
  }
  tracker.reset();
  free(tracker_dir);
  tracker_dir = nullptr;
  pthread_rwlock_destroy(&inflight);
}

void Load() {
  pthread_rwlockattr_t attr;
  pthread_rwlockattr_init(&attr);
  // Writer preference: a checkpoint is not starved by a stream of writes.
  pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&inflight, &attr);
  pthread_rwlockattr_destroy(&attr);
}

int Config(nbdkit_next_config* next, nbdkit_backend* nxdata, const char* key, const char* value) {
  if (std::strcmp(key, "tracker") == 0) {
    free(tracker_dir);
    tracker_dir = nbdkit_absolute_path(value);
    return tracker_dir ? 0 : -1;
  }
  if (std::strcmp(key, "granularity") == 0) {
    granularity = nbdkit_parse_size(value);
    if (granularity < 0) return -1;
    if (auto g = strata::Granularity::FromBytes(static_cast<uint64_t>(granularity)); !g) {
      nbdkit_error("strata: granularity=%s: %s", value, g.error().message().c_str());
      return -1;
    }
    granularity_set = true;
    return 0;
  }
  return next(nxdata, key, value);
}

int ConfigComplete(nbdkit_next_config_complete* next, nbdkit_backend* nxdata) {
  if (tracker_dir == nullptr) {
    nbdkit_error("strata: tracker=DIR is required (the tracker's state directory)");
    return -1;
  }
  return next(nxdata);
}

bool HasTracker() {
  struct stat st;
  return ::stat((std::string(tracker_dir) + "/MANIFEST").c_str(), &st) == 0;
}

// Before nbdkit forks into the background: an existing tracker is opened
// here, so a busy or damaged one stops nbdkit with the error on its stderr.
int GetReady(int /*thread_model*/) {
  if (!HasTracker()) return 0;
  auto t = strata::Tracker::Open(tracker_dir);
  if (!t) {
    nbdkit_error("strata: %s", t.error().message().c_str());
    return -1;
  }
  tracker = std::move(*t);
  const strata::RecoveryInfo& r = tracker->recovery();
  if (!r.clean_shutdown) {
    nbdkit_debug("strata: %s recovered after an unclean shutdown: %" PRIu64 " intent regions, %" PRIu64
                 " bytes added%s",
                 tracker_dir, r.intent_regions, r.added_bytes, r.active_unknown ? ", active generation unknown" : "");
  }
  for (const std::string& p : r.problems) nbdkit_debug("strata: warning: %s", p.c_str());
  if (granularity_set && tracker->granularity().bytes() != static_cast<uint64_t>(granularity)) {
    nbdkit_error("strata: %s tracks %" PRIu64 "-byte blocks, granularity=%" PRId64 " asks for another",
                 tracker_dir, tracker->granularity().bytes(), granularity);
    return -1;
  }
  return 0;
}

// In the process that serves: a new tracker gets the export's size, and
// the control socket's thread starts here (threads do not survive fork).
int AfterFork(nbdkit_backend* backend) {
  nbdkit_next* next = nbdkit_next_context_open(backend, 1, "", 1);
  if (next == nullptr) return -1;
  int64_t size = -1;
  if (next->prepare(next) != -1) {
    size = next->get_size(next);
    next->finalize(next);
  }
  nbdkit_next_context_close(next);
  if (size < 0) return -1;
  if (!tracker) {
    strata::TrackerOptions o;
    o.disk_size = static_cast<uint64_t>(size);
    o.granularity_bytes = static_cast<uint64_t>(granularity);
    auto t = strata::Tracker::Create(tracker_dir, o);
    if (!t) {
      nbdkit_error("strata: %s", t.error().message().c_str());
      return -1;
    }
    tracker = std::move(*t);
  }
  if (tracker->disk_size() != static_cast<uint64_t>(size)) {
    nbdkit_error("strata: %s tracks a disk of %" PRIu64 " bytes, the export has %" PRId64
                 " (resize the tracker with 'strata tracker resize')",
                 tracker_dir, tracker->disk_size(), size);
    return -1;
  }
  if (!tracker->intent_log_enabled()) {
    nbdkit_debug("strata: %s has no intent log: after a crash of nbdkit its changes are unknown "
                 "(a full backup or scan is needed)", tracker_dir);
  }
  strata::ControlServerOptions so;
  so.checkpoint_guard = [](const std::function<Status()>& checkpoint) {
    pthread_rwlock_wrlock(&inflight);
    Status s = checkpoint();
    pthread_rwlock_unlock(&inflight);
    return s;
  };
  auto srv = strata::TrackerControlServer::Start(tracker.get(), std::move(so));
  if (!srv) {
    nbdkit_error("strata: %s", srv.error().message().c_str());
    return -1;
  }
  server = std::move(*srv);
  return 0;
}

// Marks [offset, offset + count) with the request held against
// checkpoints, then runs it; -1 with *err set when either fails.
template <typename Op>
int Tracked(uint64_t offset, uint32_t count, int* err, Op op) {
  pthread_rwlock_rdlock(&inflight);
  Status s = tracker->Mark(offset, count);
  int r;
  if (!s.ok()) {
    nbdkit_error("strata: marking [%" PRIu64 ", +%" PRIu32 ") in %s: %s", offset, count, tracker_dir,
                 s.message().c_str());
    *err = ErrnoOf(s);
    r = -1;
  } else {
    r = op();
  }
  pthread_rwlock_unlock(&inflight);
  return r;
}

int Pwrite(nbdkit_next* next, void* /*handle*/, const void* buf, uint32_t count, uint64_t offset, uint32_t flags,
           int* err) {
  return Tracked(offset, count, err, [&] { return next->pwrite(next, buf, count, offset, flags, err); });
}

int Trim(nbdkit_next* next, void* /*handle*/, uint32_t count, uint64_t offset, uint32_t flags, int* err) {
  return Tracked(offset, count, err, [&] { return next->trim(next, count, offset, flags, err); });
}

int Zero(nbdkit_next* next, void* /*handle*/, uint32_t count, uint64_t offset, uint32_t flags, int* err) {
  return Tracked(offset, count, err, [&] { return next->zero(next, count, offset, flags, err); });
}

// Every connection serves the size the tracker was sized for.
int Prepare(nbdkit_next* next, void* /*handle*/, int readonly) {
  if (readonly) return 0;
  int64_t size = next->get_size(next);
  if (size < 0) return -1;
  if (static_cast<uint64_t>(size) != tracker->disk_size()) {
    nbdkit_error("strata: the export now has %" PRId64 " bytes, %s tracks %" PRIu64, size, tracker_dir,
                 tracker->disk_size());
    return -1;
  }
  return 0;
}

nbdkit_filter MakeFilter() {
  nbdkit_filter f = {};
  f.name = "strata";
  f.longname = "nbdkit strata filter: tracks written blocks in a strata tracker";
  f.config_help =
      "tracker=DIR            (required) the strata tracker's state directory; created with the\n"
      "                       export's size when it holds no tracker\n"
      "granularity=SIZE       block size of a new tracker (default 64K)";
  f.load = Load;
  f.unload = Unload;
  f.config = Config;
  f.config_complete = ConfigComplete;
  f.get_ready = GetReady;
  f.after_fork = AfterFork;
  f.prepare = Prepare;
  f.pwrite = Pwrite;
  f.trim = Trim;
  f.zero = Zero;
  return f;
}

nbdkit_filter filter = MakeFilter();

}  // namespace

NBDKIT_REGISTER_FILTER(filter)
