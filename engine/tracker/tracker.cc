// Tracker implementation. The hot path (Mark) is at the top; the control
// operations (checkpoint, flush, queries, persistence) below all hold mu_.
#include "strata/tracker.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "engine/tracker/dense_bitmap.h"
#include "engine/tracker/intent_log.h"
#include "engine/tracker/reader_slots.h"
#include "engine/tracker/state_format.h"
#include "extents/endian.h"
#include "strata/id128.h"
#include "strata/env.h"

namespace strata {

using tracker_internal::ActiveFileName;
using tracker_internal::DenseBitmap;
using tracker_internal::GenFileName;
using tracker_internal::IntentFileName;
using tracker_internal::IntentLog;
using tracker_internal::Manifest;
using tracker_internal::ManifestEntry;

namespace {

constexpr char kManifestName[] = "MANIFEST";
constexpr char kLockName[] = "LOCK";

// What Mark needs, published as one pointer so a checkpoint swaps all of it
// at once (bitmap, intent log and the disk geometry they were sized for).
struct Epoch {
  DenseBitmap* bits = nullptr;  // null: tracker closed or read-only
  IntentLog* log = nullptr;     // null: intent log disabled
  uint64_t disk_size = 0;
  uint32_t gshift = 16;
  uint32_t rshift = 26;
};

int64_t NowUnixNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Status CheckName(const std::string& name) {
  if (name.empty() || name.size() > tracker_internal::kMaxCheckpointName) {
    return Status::InvalidArgument("checkpoint name must be 1..255 bytes, got " +
                                   std::to_string(name.size()));
  }
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f) {
      return Status::InvalidArgument("checkpoint name contains a control character");
    }
  }
  return Status::Ok();
}

// A deep copy. Not `ExtentSet copy = s`: the implicit copy constructor of
// ExtentSet also copies its hot-path shard cache pointer, so a later Add on
// the copy would write into `s` (reported upstream; extents/ is not ours).
Result<ExtentSet> Clone(const ExtentSet& s) {
  STRATA_ASSIGN_OR_RETURN(ExtentSet out, ExtentSet::Create(s.disk_size(), s.granularity()));
  STRATA_RETURN_IF_ERROR(out.UnionWith(s));
  return out;
}

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace

struct Tracker::Impl {
  struct Gen {
    ManifestEntry entry;
    std::optional<ExtentSet> set;  // empty when unknown
    std::string unknown_reason;
  };

  // ---- hot path ----
  std::atomic<Epoch*> cur_ep{nullptr};  // what Mark uses; owned by `cur`

  // ---- control state, guarded by mu ----
  std::mutex mu;
  std::string dir;
  bool read_only = false;
  bool closed = false;
  Env* env = Env::Default();
  std::unique_ptr<FileLock> dir_lock;  // LOCK: exclusive (read-write) or shared
  Granularity gran = Granularity::Default();
  uint32_t rshift = 26;
  bool intent_enabled = true;
  uint64_t disk_size = 0;
  uint64_t next_id = 1;
  Manifest manifest;  // what is on disk now
  std::unique_ptr<Epoch> cur;
  std::unique_ptr<DenseBitmap> active_bits, spare_bits;
  std::unique_ptr<IntentLog> cur_log;
  std::optional<ExtentSet> base;  // active-generation blocks kept outside the bitmap
  bool active_unknown = false;
  std::string active_unknown_reason;
  std::vector<Gen> gens;
  RecoveryInfo recovery;

  // ---- periodic flusher ----
  std::thread flusher;
  std::mutex flush_mu;
  std::condition_variable flush_cv;
  bool stop_flusher = false;

  std::string Path(const std::string& name) const { return dir + "/" + name; }

  Status Mark(uint64_t offset, uint64_t length);
  Status MarkSlow(tracker_internal::ReaderSlot* slot, const void* ep, uint64_t offset, uint64_t length);
  void Publish(std::unique_ptr<Epoch> next);
  Status WriteManifest(Manifest m);
  void RemoveFile(const std::string& name);
  void RemoveStaleLogs(uint64_t floor);
  Result<std::unique_ptr<IntentLog>> NewLog(uint64_t disk_size);
  Status CheckWritable() const;
  Result<ExtentSet> ActiveSnapshot() const;
  Result<size_t> Find(const std::string& name) const;
  Result<ExtentSet> UnionOf(size_t first_gen, size_t end_gen, bool with_active,
                            const std::string& what) const;
  Status StartEpoch(std::unique_ptr<IntentLog> log);
  Status Load(std::unique_ptr<FileLock> held);
  void RemoveLeftovers(const std::vector<std::string>& names);
  Status Flush();
  Status Close();
};

// ---------------------------------------------------------------------------
// Hot path.

// Aligned to a cache line: where the linker happens to place it otherwise
// moved a random 4 KiB mark by ~0.5 ns between builds (docs/benchmarks.md).
[[gnu::aligned(64)]] Status Tracker::Impl::Mark(uint64_t offset, uint64_t length) {
  if (length == 0) return Status();
  // Announce the epoch we use (reader_slots.h): a checkpoint that swaps
  // it waits until we are done before sealing its bitmap.
  tracker_internal::ReaderSlot* slot = tracker_internal::ThisThreadSlot();
  const Epoch* ep = tracker_internal::EnterRead(slot, cur_ep);
  // Fast path: in range and (without intent log, or) the regions already
  // durable. Every branch returns a prvalue Status: no string is moved.
  if (ep != nullptr && ep->bits != nullptr && offset <= ep->disk_size &&
      length <= ep->disk_size - offset) {
    const uint64_t last_byte = offset + length - 1;
    bool recorded = true;
    if (ep->log != nullptr) {
      for (uint64_t r = offset >> ep->rshift; r <= last_byte >> ep->rshift; ++r) {
        if (!ep->log->IsRecorded(r)) {
          recorded = false;
          break;
        }
      }
    }
    if (recorded) {
      const uint64_t b0 = offset >> ep->gshift, b1 = last_byte >> ep->gshift;
      ep->bits->Set(b0, b1 - b0 + 1);
      // Release: the bits set above happen-before the checkpoint that sees
      // the slot cleared (acquire) and seals the bitmap.
      tracker_internal::ExitRead(slot);
      return Status();
    }
  }
  // A prvalue too: MarkSlow releases the slot itself, so no Status is moved
  // here and the fast path above keeps a lean frame.
  return MarkSlow(slot, ep, offset, length);
}

// Errors, and marks that must first make an intent region durable. Clears
// `slot` on every path, after the bits are set (release, as in Mark).
Status Tracker::Impl::MarkSlow(tracker_internal::ReaderSlot* slot, const void* epoch_ptr, uint64_t offset,
                               uint64_t length) {
  struct Release {
    tracker_internal::ReaderSlot* slot;
    ~Release() { tracker_internal::ExitRead(slot); }
  } release{slot};
  const Epoch* ep = static_cast<const Epoch*>(epoch_ptr);
  if (ep == nullptr || ep->bits == nullptr) {
    return Status::InvalidArgument(dir + ": tracker is closed or read-only");
  }
  if (offset > ep->disk_size || length > ep->disk_size - offset) {
    return Status::InvalidArgument(dir + ": mark [" + Hex(offset) + ", +" + Hex(length) +
                                   ") past disk end " + Hex(ep->disk_size));
  }
  const uint64_t last_byte = offset + length - 1;
  const uint64_t r0 = offset >> ep->rshift, r1 = last_byte >> ep->rshift;
  for (uint64_t r = r0; r <= r1; ++r) {
    if (!ep->log->IsRecorded(r)) {
      STRATA_RETURN_IF_ERROR(ep->log->Record(r, r1));
      break;
    }
  }
  const uint64_t b0 = offset >> ep->gshift, b1 = last_byte >> ep->gshift;
  ep->bits->Set(b0, b1 - b0 + 1);
  return Status();
}

// Swaps in `next` and waits until no Mark uses the previous epoch.
void Tracker::Impl::Publish(std::unique_ptr<Epoch> next) {
  Epoch* old = cur.get();
  cur_ep.store(next.get(), std::memory_order_seq_cst);
  if (old != nullptr) tracker_internal::WaitForReaders(old);
  cur = std::move(next);  // frees the drained epoch
}

// ---------------------------------------------------------------------------
// Persistence helpers.

Status Tracker::Impl::WriteManifest(Manifest m) {
  m.next_id = next_id;
  std::string bytes = tracker_internal::EncodeManifest(m);
  STRATA_RETURN_IF_ERROR(env->WriteFileAtomic(Path(kManifestName), Bytes(bytes)));
  manifest = std::move(m);
  return Status::Ok();
}

void Tracker::Impl::RemoveFile(const std::string& name) {
  // Best effort: a leftover file is garbage-collected at the next open.
  (void)env->Remove(Path(name));
}

// Deletes intent logs older than `floor` (never the current one).
void Tracker::Impl::RemoveStaleLogs(uint64_t floor) {
  auto names = env->ListDir(dir);
  if (!names) return;
  for (const std::string& n : *names) {
    uint64_t id;
    if (tracker_internal::ParseIdFileName(n, "intent-", ".log", &id) && id < floor) RemoveFile(n);
  }
}

// Temporaries of WriteFileAtomic left by a killed operation (§2). Called by
// the read-write opener, which holds the exclusive lock: no writer of ours
// can be using them.
void Tracker::Impl::RemoveLeftovers(const std::vector<std::string>& names) {
  for (const std::string& n : names) {
    if (tracker_internal::IsOwnTemporaryName(n)) RemoveFile(n);
  }
}

Result<std::unique_ptr<IntentLog>> Tracker::Impl::NewLog(uint64_t size) {
  if (!intent_enabled) return std::unique_ptr<IntentLog>();
  uint64_t id = next_id++;
  return IntentLog::Create(env, Path(IntentFileName(id)), id, size, rshift);
}

Status Tracker::Impl::CheckWritable() const {
  if (closed) return Status::InvalidArgument(dir + ": tracker is closed");
  if (read_only) return Status::InvalidArgument(dir + ": tracker is open read-only");
  return Status::Ok();
}

Result<ExtentSet> Tracker::Impl::ActiveSnapshot() const {
  STRATA_ASSIGN_OR_RETURN(ExtentSet s, Clone(*base));
  if (active_bits) STRATA_RETURN_IF_ERROR(active_bits->Snapshot(&s));
  return s;
}

Result<size_t> Tracker::Impl::Find(const std::string& name) const {
  for (size_t i = 0; i < gens.size(); ++i) {
    if (gens[i].entry.name == name) return i;
  }
  return Status::NotFound(dir + ": no checkpoint named '" + name + "'");
}

Result<ExtentSet> Tracker::Impl::UnionOf(size_t first, size_t end, bool with_active,
                                         const std::string& what) const {
  std::vector<const ExtentSet*> sets;
  for (size_t i = first; i < end; ++i) {
    if (!gens[i].set) {
      return Status::UnknownState(dir + ": " + what + ": changes up to checkpoint '" +
                                  gens[i].entry.name + "' are unknown (" +
                                  gens[i].unknown_reason + "): full backup or rescan needed");
    }
    sets.push_back(&*gens[i].set);
  }
  std::optional<ExtentSet> active;
  if (with_active) {
    if (active_unknown) {
      return Status::UnknownState(dir + ": " + what + ": changes since the last checkpoint are unknown (" +
                                  active_unknown_reason + "): full backup or rescan needed");
    }
    STRATA_ASSIGN_OR_RETURN(active, ActiveSnapshot());
    sets.push_back(&*active);
  }
  if (sets.empty()) return ExtentSet::Create(disk_size, gran);
  return ExtentSet::UnionAll(sets);
}

// Starts a fresh epoch over the current active bitmap with `log`.
Status Tracker::Impl::StartEpoch(std::unique_ptr<IntentLog> log) {
  auto ep = std::make_unique<Epoch>();
  ep->bits = active_bits.get();
  ep->log = log.get();
  ep->disk_size = disk_size;
  ep->gshift = gran.shift();
  ep->rshift = rshift;
  Publish(std::move(ep));
  cur_log = std::move(log);  // the previous log is closed (marks drained)
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Open / create / recovery.

Status Tracker::Impl::Load(std::unique_ptr<FileLock> held) {
  // Lock first so two openers cannot both recover.
  const std::string lock_path = Path(kLockName);
  const std::string mpath = Path(kManifestName);
  const Status missing = Status::NotFound(dir + ": no tracker state (MANIFEST missing)");
  if (held) {
    dir_lock = std::move(held);
  } else if (!env->Exists(mpath) && !env->Exists(lock_path)) {
    return missing;  // checked first so that no LOCK file is left behind
  } else if (!read_only || env->Exists(lock_path)) {
    // A read-only open of a directory without LOCK (a copy) takes no lock:
    // it must not write anything, not even the lock file.
    auto l = env->Lock(lock_path, read_only ? LockMode::kShared : LockMode::kExclusive,
                       std::chrono::milliseconds(0));
    if (!l) {
      if (l.error().code() == StatusCode::kBusy) {
        return Status::Busy(dir + ": tracker state is in use by another process");
      }
      return l.error();
    }
    dir_lock = std::move(l).value();
  }
  if (!env->Exists(mpath)) return missing;
  STRATA_ASSIGN_OR_RETURN(auto mbytes, env->ReadWholeFile(mpath));
  STRATA_ASSIGN_OR_RETURN(Manifest m, tracker_internal::DecodeManifest(mbytes, mpath));
  STRATA_ASSIGN_OR_RETURN(gran, Granularity::FromShift(m.granularity_shift));
  rshift = m.intent_region_shift;
  intent_enabled = (m.flags & tracker_internal::kFlagIntentLog) != 0;
  disk_size = m.disk_size;
  next_id = m.next_id;
  manifest = m;

  // Ids of every file present, to keep next_id above them (a crash may have
  // left files the manifest does not know about).
  std::vector<std::pair<uint64_t, std::string>> intents;
  std::vector<std::string> all_files;
  STRATA_ASSIGN_OR_RETURN(const std::vector<std::string> names, env->ListDir(dir));
  for (const std::string& n : names) {
    uint64_t id;
    if (tracker_internal::ParseIdFileName(n, "gen-", ".xset", &id) ||
        tracker_internal::ParseIdFileName(n, "active-", ".xset", &id)) {
      next_id = std::max(next_id, id + 1);
      all_files.push_back(n);
    } else if (tracker_internal::ParseIdFileName(n, "intent-", ".log", &id)) {
      next_id = std::max(next_id, id + 1);
      intents.emplace_back(id, n);
    }
  }
  std::sort(intents.begin(), intents.end());

  auto load_set = [&](const std::string& name) -> Result<ExtentSet> {
    std::string p = Path(name);
    STRATA_ASSIGN_OR_RETURN(auto bytes, env->ReadWholeFile(p));
    auto set = ExtentSet::Deserialize(bytes);
    if (!set) return set.error().WithContext(p);
    if (set->granularity() != gran || set->disk_size() != disk_size) {
      return Status::Corruption(p + ": granularity/disk size " +
                                std::to_string(set->granularity().bytes()) + "/" +
                                std::to_string(set->disk_size()) + " do not match the manifest");
    }
    return std::move(set).value();
  };

  for (const ManifestEntry& e : m.checkpoints) {
    Gen g;
    g.entry = e;
    if (e.flags & tracker_internal::kEntryGenerationUnknown || e.gen_file_id == 0) {
      g.unknown_reason = "marked unknown in the manifest";
    } else {
      auto s = load_set(GenFileName(e.gen_file_id));
      if (s) {
        g.set = std::move(s).value();
      } else {
        g.unknown_reason = s.error().message();
        recovery.problems.push_back(s.error().message());
      }
    }
    gens.push_back(std::move(g));
  }

  STRATA_ASSIGN_OR_RETURN(ExtentSet active, ExtentSet::Create(disk_size, gran));
  recovery.clean_shutdown = (m.flags & tracker_internal::kFlagClean) != 0;
  if (m.flags & tracker_internal::kFlagActiveUnknown) {
    active_unknown = true;
    active_unknown_reason = "marked unknown in the manifest";
  } else if (m.active_file_id != 0) {
    auto s = load_set(ActiveFileName(m.active_file_id));
    if (s) {
      active = std::move(s).value();
    } else {
      active_unknown = true;
      active_unknown_reason = s.error().message();
      recovery.problems.push_back(s.error().message());
    }
  }
  if (!recovery.clean_shutdown && !active_unknown) {
    if (!intent_enabled) {
      active_unknown = true;
      active_unknown_reason = "unclean shutdown without intent log";
      recovery.problems.push_back(dir + ": " + active_unknown_reason);
    } else {
      uint64_t before = active.ByteCount();
      for (const auto& [id, name] : intents) {
        if (id < m.intent_floor) continue;
        std::string p = Path(name);
        // Any damage (or a version-1 log, which cannot tell a torn record
        // from a damaged one) makes the active generation unknown: never
        // silently smaller (docs/formats/tracker-state.md §4.5).
        Result<tracker_internal::IntentLogContents> c = tracker_internal::ReadIntentLog(env, p);
        if (c && c->header.epoch != id) {
          c = Status::Corruption(p + ": intent log header names epoch " + Hex(c->header.epoch) +
                                 ", not the file's at byte 0x18");
        }
        if (!c) {
          active_unknown = true;
          active_unknown_reason = c.error().message();
          recovery.problems.push_back(c.error().message());
          break;
        }
        const uint32_t shift = c->header.region_shift;
        for (const tracker_internal::IntentRange& r : c->ranges) {
          // first + count <= the log's region count (checked by the
          // decoder), so the end fits in 64 bits.
          uint64_t off = r.first << shift;
          if (off >= disk_size) continue;  // the disk shrank after this log
          uint64_t end = std::min<uint64_t>((r.first + r.count) << shift, disk_size);
          STRATA_RETURN_IF_ERROR(active.Add(off, end - off));
          recovery.intent_regions += r.count;
        }
      }
      if (!active_unknown) recovery.added_bytes = active.ByteCount() - before;
    }
  }
  recovery.active_unknown = active_unknown;
  base = std::move(active);

  if (read_only) {
    auto ep = std::make_unique<Epoch>();  // bits == nullptr: Mark fails
    Publish(std::move(ep));
    return Status::Ok();
  }

  // Read-write: fresh bitmaps and intent epoch, then commit the recovered
  // state so that the old intent logs can go.
  STRATA_ASSIGN_OR_RETURN(active_bits, DenseBitmap::Create(gran.BlocksFor(disk_size)));
  STRATA_ASSIGN_OR_RETURN(spare_bits, DenseBitmap::Create(gran.BlocksFor(disk_size)));
  STRATA_ASSIGN_OR_RETURN(auto log, NewLog(disk_size));
  uint64_t floor = log ? log->epoch() : next_id;
  STRATA_RETURN_IF_ERROR(StartEpoch(std::move(log)));
  Manifest nm = manifest;
  // Trackers made before UUIDs existed get one at their first read-write open.
  if (IsNullId128(nm.uuid)) nm.uuid = RandomId128();
  nm.flags = static_cast<uint8_t>(nm.flags & ~tracker_internal::kFlagClean);
  if (active_unknown) nm.flags |= tracker_internal::kFlagActiveUnknown;
  uint64_t old_active = manifest.active_file_id;
  if (!recovery.clean_shutdown && !active_unknown && recovery.intent_regions > 0) {
    uint64_t id = next_id++;
    std::string bytes = base->Serialize();
    STRATA_RETURN_IF_ERROR(env->WriteFileAtomic(Path(ActiveFileName(id)), Bytes(bytes)));
    nm.active_file_id = id;
  }
  nm.intent_floor = floor;
  STRATA_RETURN_IF_ERROR(WriteManifest(nm));
  if (old_active != manifest.active_file_id && old_active != 0) RemoveFile(ActiveFileName(old_active));
  RemoveStaleLogs(floor);
  // Unreferenced generation / active files are leftovers of an interrupted
  // operation; referenced ones (even corrupt) are never touched.
  for (const std::string& n : all_files) {
    uint64_t id;
    bool referenced = false;
    if (tracker_internal::ParseIdFileName(n, "active-", ".xset", &id)) {
      referenced = id == manifest.active_file_id;
    } else if (tracker_internal::ParseIdFileName(n, "gen-", ".xset", &id)) {
      for (const auto& e : manifest.checkpoints) referenced |= e.gen_file_id == id;
    }
    if (!referenced) RemoveFile(n);
  }
  RemoveLeftovers(names);
  return Status::Ok();
}

namespace {

Result<std::unique_ptr<Tracker::Impl>> OpenImpl(const std::string& dir, const OpenOptions& options,
                                                std::unique_ptr<FileLock> held) {
  auto impl = std::make_unique<Tracker::Impl>();
  impl->dir = dir;
  impl->read_only = options.read_only;
  impl->env = options.env != nullptr ? options.env : Env::Default();
  Status s = impl->Load(std::move(held));
  if (!s.ok()) {
    impl->dir_lock.reset();
    impl->closed = true;
    return s;
  }
  return impl;
}

}  // namespace

Result<std::unique_ptr<Tracker>> Tracker::Create(const std::string& dir,
                                                 const TrackerOptions& options) {
  STRATA_ASSIGN_OR_RETURN(Granularity g, Granularity::FromBytes(options.granularity_bytes));
  if (options.disk_size == 0) return Status::InvalidArgument("disk size must be at least 1 byte");
  if (options.disk_size > kMaxDiskSize) {
    return Status::InvalidArgument("disk size " + std::to_string(options.disk_size) + " exceeds 2^63");
  }
  if (options.intent_region_shift < g.shift() || options.intent_region_shift > 40) {
    return Status::InvalidArgument("intent region shift " + std::to_string(options.intent_region_shift) +
                                   " must be between the granularity shift and 40");
  }
  STRATA_RETURN_IF_ERROR(DenseBitmap::Create(g.BlocksFor(options.disk_size)).status());
  Env* env = options.env != nullptr ? options.env : Env::Default();
  Status made = env->MakeDir(dir);
  if (!made.ok() && made.code() != StatusCode::kAlreadyExists) return made;
  // The directory's own name must survive a power cut before anything in it counts.
  if (made.ok()) STRATA_RETURN_IF_ERROR(env->SyncDirOf(dir));
  auto lock = env->Lock(dir + "/" + kLockName, LockMode::kExclusive, std::chrono::milliseconds(0));
  if (!lock) {
    if (lock.error().code() == StatusCode::kBusy) {
      return Status::Busy(dir + ": tracker state is in use by another process");
    }
    return lock.error();
  }
  std::string mpath = dir + "/" + kManifestName;
  if (env->Exists(mpath)) return Status::AlreadyExists(dir + ": already holds a tracker (MANIFEST exists)");
  Manifest m;
  m.granularity_shift = static_cast<uint8_t>(g.shift());
  m.intent_region_shift = static_cast<uint8_t>(options.intent_region_shift);
  m.flags = tracker_internal::kFlagClean |
            (options.intent_log ? tracker_internal::kFlagIntentLog : uint8_t{0});
  m.disk_size = options.disk_size;
  m.next_id = 1;
  m.intent_floor = 1;
  m.uuid = RandomId128();  // a re-created tracker is a different tracker
  std::string bytes = tracker_internal::EncodeManifest(m);
  STRATA_RETURN_IF_ERROR(env->WriteFileAtomic(mpath, Bytes(bytes)));
  // Opened under the same lock: no other opener can slip in between.
  OpenOptions o;
  o.env = env;
  STRATA_ASSIGN_OR_RETURN(auto impl, OpenImpl(dir, o, std::move(lock).value()));
  return std::unique_ptr<Tracker>(new Tracker(std::move(impl)));
}

Result<std::unique_ptr<Tracker>> Tracker::Open(const std::string& dir, const OpenOptions& options) {
  STRATA_ASSIGN_OR_RETURN(auto impl, OpenImpl(dir, options, nullptr));
  std::unique_ptr<Tracker> t(new Tracker(std::move(impl)));
  if (options.flush_interval.count() > 0 && !options.read_only) {
    Impl* p = t->impl_.get();
    auto interval = options.flush_interval;
    p->flusher = std::thread([p, interval] {
      std::unique_lock<std::mutex> lock(p->flush_mu);
      while (!p->stop_flusher) {
        if (p->flush_cv.wait_for(lock, interval, [p] { return p->stop_flusher; })) break;
        lock.unlock();
        (void)p->Flush();  // a failure is retried at the next tick; Close reports
        lock.lock();
      }
    });
  }
  return t;
}

Tracker::Tracker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Tracker::~Tracker() {
  if (impl_ && !impl_->closed) (void)impl_->Close();
}

// ---------------------------------------------------------------------------
// Public operations.

Status Tracker::Mark(uint64_t offset, uint64_t length) { return impl_->Mark(offset, length); }

Status Tracker::ValidCheckpointName(const std::string& name) { return CheckName(name); }

Result<CheckpointInfo> Tracker::Checkpoint(const std::string& name) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  STRATA_RETURN_IF_ERROR(m.CheckWritable());
  STRATA_RETURN_IF_ERROR(CheckName(name));
  if (m.Find(name).has_value()) {
    return Status::AlreadyExists(m.dir + ": checkpoint '" + name + "' already exists");
  }
  uint64_t cp_id = m.next_id++;
  // 1. New intent epoch and an empty bitmap; wait for marks on the old one.
  STRATA_ASSIGN_OR_RETURN(auto log, m.NewLog(m.disk_size));
  uint64_t floor = log ? log->epoch() : m.next_id;
  std::swap(m.active_bits, m.spare_bits);
  STRATA_RETURN_IF_ERROR(m.StartEpoch(std::move(log)));
  // 2. Seal: old bitmap (now spare, quiescent) plus the carried blocks.
  ExtentSet sealed = std::move(*m.base);
  STRATA_ASSIGN_OR_RETURN(m.base, ExtentSet::Create(m.disk_size, m.gran));
  Status s = m.spare_bits->Drain(&sealed);
  bool unknown = m.active_unknown;
  std::string unknown_reason = m.active_unknown_reason;
  auto restore = [&] {
    // Put the sealed blocks back into the active generation: no change is
    // lost when the checkpoint fails.
    (void)m.base->UnionWith(sealed);
    m.active_unknown = unknown;
    m.active_unknown_reason = unknown_reason;
  };
  if (!s.ok()) {
    restore();
    return s;
  }
  sealed.Optimize();
  Impl::Gen g;
  g.entry.checkpoint_id = cp_id;
  g.entry.name = name;
  g.entry.created_unix_ns = NowUnixNs();
  if (unknown) {
    g.entry.flags = tracker_internal::kEntryGenerationUnknown;
    g.unknown_reason = unknown_reason;
  } else {
    g.entry.gen_file_id = m.next_id++;
    g.entry.changed_bytes = sealed.ByteCount();
    std::string bytes = sealed.Serialize();
    s = m.env->WriteFileAtomic(m.Path(GenFileName(g.entry.gen_file_id)), Bytes(bytes));
    if (!s.ok()) {
      restore();
      return s;
    }
  }
  // 3. Commit: the manifest names the new generation, an empty active set
  // and the new intent floor.
  Manifest nm = m.manifest;
  nm.checkpoints.push_back(g.entry);
  nm.active_file_id = 0;
  nm.intent_floor = floor;
  nm.flags = static_cast<uint8_t>(nm.flags & ~tracker_internal::kFlagActiveUnknown);
  uint64_t old_active = m.manifest.active_file_id;
  s = m.WriteManifest(nm);
  if (!s.ok()) {
    if (g.entry.gen_file_id) m.RemoveFile(GenFileName(g.entry.gen_file_id));
    restore();
    return s;
  }
  if (!unknown) g.set = std::move(sealed);
  m.active_unknown = false;
  m.active_unknown_reason.clear();
  CheckpointInfo info{cp_id, name, g.entry.created_unix_ns, g.entry.changed_bytes, unknown};
  m.gens.push_back(std::move(g));
  if (old_active) m.RemoveFile(ActiveFileName(old_active));
  m.RemoveStaleLogs(floor);
  return info;
}

Status Tracker::Impl::Flush() {
  std::lock_guard<std::mutex> lock(mu);
  STRATA_RETURN_IF_ERROR(CheckWritable());
  STRATA_ASSIGN_OR_RETURN(auto log, NewLog(disk_size));
  uint64_t floor = log ? log->epoch() : next_id;
  STRATA_RETURN_IF_ERROR(StartEpoch(std::move(log)));
  // Every mark of the previous intent epoch has drained into active_bits;
  // later ones are covered by the new log.
  Manifest nm = manifest;
  nm.intent_floor = floor;
  uint64_t old_active = manifest.active_file_id;
  if (!active_unknown) {
    STRATA_ASSIGN_OR_RETURN(ExtentSet snap, ActiveSnapshot());
    if (snap.empty()) {
      nm.active_file_id = 0;
    } else {
      snap.Optimize();
      uint64_t id = next_id++;
      std::string bytes = snap.Serialize();
      STRATA_RETURN_IF_ERROR(env->WriteFileAtomic(Path(ActiveFileName(id)), Bytes(bytes)));
      nm.active_file_id = id;
    }
  }
  STRATA_RETURN_IF_ERROR(WriteManifest(nm));
  if (old_active && old_active != nm.active_file_id) RemoveFile(ActiveFileName(old_active));
  RemoveStaleLogs(floor);
  return Status::Ok();
}

Status Tracker::Flush() { return impl_->Flush(); }

Status Tracker::Impl::Close() {
  {
    std::lock_guard<std::mutex> fl(flush_mu);
    stop_flusher = true;
  }
  flush_cv.notify_all();
  if (flusher.joinable()) flusher.join();
  std::lock_guard<std::mutex> lock(mu);
  if (closed) return Status::InvalidArgument(dir + ": tracker is closed");
  closed = true;
  Status s;
  if (!read_only) {
    // No mark may race Close; publishing an empty epoch makes late ones fail.
    Publish(std::make_unique<Epoch>());
    cur_log.reset();
    Manifest nm = manifest;
    nm.intent_floor = next_id;
    uint64_t old_active = manifest.active_file_id;
    if (!active_unknown) {
      Result<ExtentSet> snap = ActiveSnapshot();
      if (snap && !snap->empty()) {
        snap->Optimize();
        uint64_t id = next_id++;
        std::string bytes = snap->Serialize();
        s = env->WriteFileAtomic(Path(ActiveFileName(id)), Bytes(bytes));
        nm.active_file_id = id;
      } else if (snap) {
        nm.active_file_id = 0;
      } else {
        s = snap.status();
      }
    }
    if (s.ok()) {
      nm.flags |= tracker_internal::kFlagClean;
      s = WriteManifest(nm);
    }
    if (s.ok()) {
      if (old_active && old_active != nm.active_file_id) RemoveFile(ActiveFileName(old_active));
      RemoveStaleLogs(nm.intent_floor);
    }
    // On failure the manifest stays unclean and the intent logs stay: the
    // next open recovers as after a crash.
  }
  dir_lock.reset();
  return s;
}

Status Tracker::Close() { return impl_->Close(); }

Result<ExtentSet> Tracker::ChangedSince(const std::string& name) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  STRATA_ASSIGN_OR_RETURN(size_t k, m.Find(name));
  return m.UnionOf(k + 1, m.gens.size(), true, "changes since '" + name + "'");
}

Result<ExtentSet> Tracker::ChangedBetween(const std::string& from, const std::string& to) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  STRATA_ASSIGN_OR_RETURN(size_t a, m.Find(from));
  STRATA_ASSIGN_OR_RETURN(size_t b, m.Find(to));
  if (a > b) {
    return Status::InvalidArgument(m.dir + ": checkpoint '" + from + "' is newer than '" + to + "'");
  }
  return m.UnionOf(a + 1, b + 1, false, "changes between '" + from + "' and '" + to + "'");
}

Status Tracker::Remove(const std::string& name) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  STRATA_RETURN_IF_ERROR(m.CheckWritable());
  STRATA_ASSIGN_OR_RETURN(size_t k, m.Find(name));
  Impl::Gen& g = m.gens[k];
  Manifest nm = m.manifest;
  std::vector<std::string> doomed;
  if (g.entry.gen_file_id) doomed.push_back(GenFileName(g.entry.gen_file_id));
  if (k + 1 == m.gens.size()) {
    // Merge into the active generation: carried in `base` and persisted as
    // a new active file. The intent floor stays: the new file is a superset
    // of the old one, and older intent logs still cover racing marks.
    STRATA_ASSIGN_OR_RETURN(std::optional<ExtentSet> new_base, Clone(*m.base));
    bool new_unknown = m.active_unknown || !g.set;
    if (!new_unknown) {
      STRATA_RETURN_IF_ERROR(new_base->UnionWith(*g.set));
      STRATA_ASSIGN_OR_RETURN(ExtentSet snap, Clone(*new_base));
      STRATA_RETURN_IF_ERROR(m.active_bits->Snapshot(&snap));
      snap.Optimize();
      uint64_t id = m.next_id++;
      std::string bytes = snap.Serialize();
      STRATA_RETURN_IF_ERROR(m.env->WriteFileAtomic(m.Path(ActiveFileName(id)), Bytes(bytes)));
      if (m.manifest.active_file_id) doomed.push_back(ActiveFileName(m.manifest.active_file_id));
      nm.active_file_id = id;
    } else {
      nm.flags |= tracker_internal::kFlagActiveUnknown;
    }
    nm.checkpoints.erase(nm.checkpoints.begin() + static_cast<ptrdiff_t>(k));
    Status s = m.WriteManifest(nm);
    if (!s.ok()) {
      if (nm.active_file_id != m.manifest.active_file_id) m.RemoveFile(ActiveFileName(nm.active_file_id));
      return s;
    }
    m.base = std::move(new_base);
    if (new_unknown && !m.active_unknown) {
      m.active_unknown = true;
      m.active_unknown_reason = g.unknown_reason;
    }
  } else {
    Impl::Gen& next = m.gens[k + 1];
    ManifestEntry ne = next.entry;
    std::optional<ExtentSet> merged;
    if (g.set && next.set) {
      STRATA_ASSIGN_OR_RETURN(merged, ExtentSet::Union(*g.set, *next.set));
      merged->Optimize();
      ne.gen_file_id = m.next_id++;
      ne.changed_bytes = merged->ByteCount();
      std::string bytes = merged->Serialize();
      STRATA_RETURN_IF_ERROR(m.env->WriteFileAtomic(m.Path(GenFileName(ne.gen_file_id)), Bytes(bytes)));
    } else {
      ne.gen_file_id = 0;
      ne.changed_bytes = 0;
      ne.flags |= tracker_internal::kEntryGenerationUnknown;
    }
    if (next.entry.gen_file_id) doomed.push_back(GenFileName(next.entry.gen_file_id));
    nm.checkpoints[k + 1] = ne;
    nm.checkpoints.erase(nm.checkpoints.begin() + static_cast<ptrdiff_t>(k));
    Status s = m.WriteManifest(nm);
    if (!s.ok()) {
      if (ne.gen_file_id) m.RemoveFile(GenFileName(ne.gen_file_id));
      return s;
    }
    std::string reason = !g.set ? g.unknown_reason : next.unknown_reason;
    next.entry = ne;
    next.set = std::move(merged);
    if (!next.set) next.unknown_reason = reason;
  }
  m.gens.erase(m.gens.begin() + static_cast<ptrdiff_t>(k));
  for (const auto& n : doomed) m.RemoveFile(n);
  return Status::Ok();
}

std::vector<CheckpointInfo> Tracker::List() {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  std::vector<CheckpointInfo> out;
  for (const auto& g : m.gens) {
    out.push_back({g.entry.checkpoint_id, g.entry.name, g.entry.created_unix_ns,
                   g.entry.changed_bytes, !g.set.has_value(),
                   (g.entry.flags & tracker_internal::kEntryQuiesced) != 0});
  }
  return out;
}

Status Tracker::SetQuiesced(const std::string& name, bool quiesced) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  STRATA_RETURN_IF_ERROR(m.CheckWritable());
  STRATA_ASSIGN_OR_RETURN(size_t k, m.Find(name));
  ManifestEntry e = m.gens[k].entry;
  e.flags = quiesced ? e.flags | tracker_internal::kEntryQuiesced : e.flags & ~tracker_internal::kEntryQuiesced;
  if (e.flags == m.gens[k].entry.flags) return Status::Ok();
  Manifest nm = m.manifest;
  nm.checkpoints[k] = e;  // gens and manifest entries correspond one to one
  STRATA_RETURN_IF_ERROR(m.WriteManifest(nm));
  m.gens[k].entry = e;
  return Status::Ok();
}

Status Tracker::Resize(uint64_t new_size) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  STRATA_RETURN_IF_ERROR(m.CheckWritable());
  if (new_size > kMaxDiskSize) return Status::InvalidArgument("disk size exceeds 2^63");
  if (new_size == 0) return Status::InvalidArgument("disk size must be at least 1 byte");
  if (new_size == m.disk_size) return Status::Ok();
  const uint64_t old_size = m.disk_size;
  uint64_t blocks = m.gran.BlocksFor(new_size);
  STRATA_ASSIGN_OR_RETURN(auto nb, DenseBitmap::Create(blocks));
  STRATA_ASSIGN_OR_RETURN(auto ns, DenseBitmap::Create(blocks));
  // Everything that can fail before the swap is done first.
  std::vector<std::optional<ExtentSet>> new_sets;
  for (const auto& g : m.gens) {
    std::optional<ExtentSet> s;
    if (g.set) {
      STRATA_ASSIGN_OR_RETURN(s, Clone(*g.set));
      STRATA_RETURN_IF_ERROR(s->Resize(new_size));
    }
    new_sets.push_back(std::move(s));
  }
  std::vector<uint64_t> new_ids(m.gens.size(), 0);
  std::vector<std::string> written, doomed;
  auto cleanup = [&] { for (const auto& n : written) m.RemoveFile(n); };
  for (size_t i = 0; i < m.gens.size(); ++i) {
    if (!new_sets[i]) continue;
    new_ids[i] = m.next_id++;
    std::string bytes = new_sets[i]->Serialize();
    Status s = m.env->WriteFileAtomic(m.Path(GenFileName(new_ids[i])), Bytes(bytes));
    if (!s.ok()) {
      cleanup();
      return s;
    }
    written.push_back(GenFileName(new_ids[i]));
  }
  // Swap to bitmaps and an intent log sized for the new disk.
  auto log = m.NewLog(new_size);
  if (!log) {
    cleanup();
    return log.error();
  }
  uint64_t floor = *log ? (*log)->epoch() : m.next_id;
  std::unique_ptr<DenseBitmap> old_bits = std::move(m.active_bits);
  m.active_bits = std::move(nb);
  m.spare_bits = std::move(ns);
  m.disk_size = new_size;
  STRATA_RETURN_IF_ERROR(m.StartEpoch(std::move(*log)));
  ExtentSet carried = std::move(*m.base);
  STRATA_RETURN_IF_ERROR(old_bits->Drain(&carried));
  old_bits.reset();
  STRATA_RETURN_IF_ERROR(carried.Resize(new_size));
  if (new_size > old_size) STRATA_RETURN_IF_ERROR(carried.Add(old_size, new_size - old_size));
  m.base = std::move(carried);
  Manifest nm = m.manifest;
  nm.disk_size = new_size;
  nm.intent_floor = floor;
  for (size_t i = 0; i < m.gens.size(); ++i) {
    if (m.gens[i].entry.gen_file_id) doomed.push_back(GenFileName(m.gens[i].entry.gen_file_id));
    if (new_sets[i]) {
      nm.checkpoints[i].gen_file_id = new_ids[i];
      nm.checkpoints[i].changed_bytes = new_sets[i]->ByteCount();
    }
  }
  if (m.manifest.active_file_id) doomed.push_back(ActiveFileName(m.manifest.active_file_id));
  nm.active_file_id = 0;
  Status s;
  if (!m.active_unknown) {
    Result<ExtentSet> snap = m.ActiveSnapshot();
    s = snap.status();
    if (s.ok() && !snap->empty()) {
      nm.active_file_id = m.next_id++;
      std::string bytes = snap->Serialize();
      s = m.env->WriteFileAtomic(m.Path(ActiveFileName(nm.active_file_id)), Bytes(bytes));
      written.push_back(ActiveFileName(nm.active_file_id));
    }
  }
  if (s.ok()) s = m.WriteManifest(nm);
  if (!s.ok()) {
    // In memory the tracker already has the new size; on disk the old
    // manifest, old files and old intent logs still describe a consistent
    // (older-size) state, which the next open recovers from.
    cleanup();
    return s;
  }
  for (size_t i = 0; i < m.gens.size(); ++i) {
    m.gens[i].entry = nm.checkpoints[i];
    m.gens[i].set = std::move(new_sets[i]);
  }
  for (const auto& n : doomed) m.RemoveFile(n);
  m.RemoveStaleLogs(floor);
  return Status::Ok();
}

std::array<uint8_t, 16> Tracker::uuid() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->manifest.uuid;
}

uint64_t Tracker::disk_size() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->disk_size;
}
Granularity Tracker::granularity() const { return impl_->gran; }
const std::string& Tracker::dir() const { return impl_->dir; }
bool Tracker::intent_log_enabled() const { return impl_->intent_enabled; }
const RecoveryInfo& Tracker::recovery() const { return impl_->recovery; }

size_t Tracker::ActiveMemoryBytes() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  size_t n = 0;
  if (impl_->active_bits) n += impl_->active_bits->MemoryBytes();
  if (impl_->spare_bits) n += impl_->spare_bits->MemoryBytes();
  return n;
}

uint64_t Tracker::IntentSyncs() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->cur_log ? impl_->cur_log->syncs() : 0;
}

}  // namespace strata
