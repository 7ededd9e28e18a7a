// Randomized histories over several disks in one repository, checked against
// a model of each disk (issue 10): random writes (marked through a tracker,
// unmarked on untracked disks, through qemu-io on qcow2 images), tracker
// checkpoints, removals, re-initialisations and disk resizes, internal
// snapshots, crashed qcow2 writers, backups from every change source
// (--full, one-step --tracker, --tracker --since, --bitmap, --since-snapshot,
// --snapshot, --scan, explicit --parent) and merges (--remove, --fold,
// --synthetic-full), all through the strata CLI as a user runs it.
//
// The property: every backup strata reports as made restores byte for byte
// to its disk's content when it was made, after every later step (merges
// included); a backup that cannot be proven is refused with one clear line.
// The model also predicts the cases that must succeed (a full backup; a
// --scan with a parent of the same size; a tracker or bitmap incremental
// whose chain the model knows intact), so a tool that refused everything
// would fail too.
//
// Failures print the seed and a shrunk list of operations.
// STRATA_MODEL_SEED, STRATA_MODEL_STEPS and STRATA_MODEL_RUNS set the seed,
// steps per history and number of histories (bench/chain_model_long.sh runs
// the long version).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "strata/tracker.h"
#include "strata/id128.h"
#include "tests/test_util.h"

namespace strata {
namespace {

using Json = nlohmann::json;
using testing::RunCommand;
using testing::ShellQuote;
using Bytes = std::vector<uint8_t>;

enum OpType : uint8_t {
  kWrite,
  kCheckpoint,
  kTrackerRemove,
  kTrackerReinit,
  kResize,
  kQemuCrash,
  kSnapshotCreate,
  kSnapshotDelete,
  kBackupFull,
  kBackupScan,
  kBackupTracker,
  kBackupTrackerSince,
  kBackupBitmap,
  kBackupSinceSnapshot,
  kBackupExplicitParent,
  kMergeRemove,
  kMergeFold,
  kMergeSynthetic,
  kVerify,
  kOpCount
};

const char* OpName(uint8_t t) {
  static const char* names[] = {"write",           "checkpoint",    "tracker-remove", "tracker-reinit",
                                "resize",          "qemu-crash",    "snapshot-create", "snapshot-delete",
                                "backup-full",     "backup-scan",   "backup-tracker", "backup-tracker-since",
                                "backup-bitmap",   "backup-since-snapshot", "backup-explicit-parent",
                                "merge-remove",    "merge-fold",    "merge-synthetic", "verify"};
  return t < kOpCount ? names[t] : "?";
}

struct Op {
  uint8_t type = 0;
  uint64_t a = 0, b = 0, c = 0;  // interpreted against the state when run
};

enum class Kind { kTrackedRaw, kPlainRaw, kQcow2 };

struct Disk {
  Kind kind = Kind::kPlainRaw;
  std::string path, tracker;
  Bytes content;
  std::vector<std::string> snapshots;  // alive, oldest first
  std::map<std::string, Bytes> snapshot_content;
};

struct Made {
  std::string id;
  size_t disk = 0;
  std::shared_ptr<const Bytes> content;
  uint64_t content_seq = 0;  // the model's clock when the content was read
  Json end;                  // as strata reported it (null: no point)
};

class History {
 public:
  History(const std::string& dir, uint64_t seed) : dir_(dir), seed_(seed) {}

  // Runs `ops`; returns the first violation ("" when none).
  std::string Run(const std::vector<Op>& ops) {
    std::string err = Setup();
    if (!err.empty()) return "setup: " + err;
    for (size_t i = 0; i < ops.size(); ++i) {
      step_ = i;
      std::string e = Apply(ops[i]);
      if (!e.empty()) {
        return "step " + std::to_string(i) + " (" + OpName(ops[i].type) + "): " + e;
      }
    }
    return CheckAll();
  }

  struct Stats {
    size_t backups_made = 0, refused = 0, merges = 0, restores_checked = 0;
    std::map<std::string, size_t> refusals;  // by source and reason
    std::map<std::string, size_t> made;      // by source
  };
  const Stats& stats() const { return stats_; }

 private:
  std::string S(const std::string& args) const { return testing::Tool("strata") + " " + args; }
  std::string R() const { return " --repo " + ShellQuote(repo_) + " "; }

  std::string Setup() {
    repo_ = dir_ + "/repo";
    auto r = RunCommand(S("init " + ShellQuote(repo_)));
    if (r.exit_code != 0) return r.err;
    std::mt19937_64 rng(seed_);
    const Kind kinds[] = {Kind::kTrackedRaw, Kind::kPlainRaw, Kind::kQcow2, Kind::kTrackedRaw};
    for (size_t i = 0; i < 4; ++i) {
      Disk d;
      d.kind = kinds[i];
      uint64_t size = (1 + rng() % 4) << 20;
      if (d.kind == Kind::kQcow2) {
        d.path = dir_ + "/disk" + std::to_string(i) + ".qcow2";
        r = RunCommand("qemu-img create -q -f qcow2 " + ShellQuote(d.path) + " " + std::to_string(size));
        if (r.exit_code != 0) return r.err;
        d.content.assign(size, 0);
      } else {
        d.path = dir_ + "/disk" + std::to_string(i) + ".raw";
        d.content.assign(size, 0);
        int fd = ::open(d.path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(size)) != 0) return "create " + d.path;
        ::close(fd);
        if (d.kind == Kind::kTrackedRaw) {
          d.tracker = dir_ + "/trk" + std::to_string(i);
          std::string e = InitTracker(d, rng() % 2 ? 65536 : 4096);
          if (!e.empty()) return e;
        }
      }
      disks_.push_back(std::move(d));
      // Some data before the first backup.
      for (int w = 0; w < 3; ++w) {
        std::string e = Write(disks_.size() - 1, rng(), rng(), rng());
        if (!e.empty()) return e;
      }
    }
    return "";
  }

  std::string InitTracker(Disk& d, uint64_t granularity) {
    auto r = RunCommand(S("tracker init --tracker " + ShellQuote(d.tracker) + " --size " +
                          std::to_string(d.content.size()) + " --granularity " + std::to_string(granularity)));
    return r.exit_code == 0 ? "" : r.err;
  }

  // ---- disk operations ----

  std::string Write(size_t di, uint64_t a, uint64_t b, uint64_t c) {
    Disk& d = disks_[di];
    const uint64_t size = d.content.size();
    std::mt19937_64 rng(c);
    if (d.kind == Kind::kQcow2) {
      uint64_t off = (a % (size / 512)) * 512;
      uint64_t len = std::min<uint64_t>(size - off, 512 * (1 + b % 512));
      int mode = static_cast<int>(rng() % 6);
      std::string cmd;
      if (mode == 0) {  // zero write
        cmd = "write -z " + std::to_string(off) + " " + std::to_string(len);
        std::fill(d.content.begin() + off, d.content.begin() + off + len, 0);
      } else if (mode == 1) {  // discard whole clusters: they read as zeros
        off = off / 65536 * 65536;
        len = std::max<uint64_t>(65536, len / 65536 * 65536);
        len = std::min(len, size - off);
        if (len % 65536 != 0 && off + len != size) return "";
        cmd = "discard " + std::to_string(off) + " " + std::to_string(len);
        std::fill(d.content.begin() + off, d.content.begin() + off + len, 0);
      } else {
        uint8_t pat = static_cast<uint8_t>(1 + rng() % 255);
        cmd = "write -P " + std::to_string(pat) + " " + std::to_string(off) + " " + std::to_string(len);
        std::fill(d.content.begin() + off, d.content.begin() + off + len, pat);
      }
      auto r = RunCommand("qemu-io -f qcow2 -c " + ShellQuote(cmd) + " " + ShellQuote(d.path) + " >/dev/null");
      return r.exit_code == 0 ? "" : "qemu-io " + cmd + ": " + r.err;
    }
    // Raw: unaligned offsets and lengths, data of three kinds.
    uint64_t off = a % size;
    uint64_t len = std::min<uint64_t>(size - off, 1 + b % (256 << 10));
    Bytes buf(len);
    int mode = static_cast<int>(rng() % 3);
    if (mode == 0) {
      for (auto& x : buf) x = static_cast<uint8_t>(rng());
    } else if (mode == 1) {
      uint8_t v = static_cast<uint8_t>(rng());
      for (size_t k = 0; k < buf.size(); ++k) buf[k] = static_cast<uint8_t>(v + k / 4096);
    }  // else zeros
    if (d.kind == Kind::kTrackedRaw) {
      auto t = Tracker::Open(d.tracker);
      if (!t) return "tracker open: " + t.error().message();
      if (Status s = (*t)->Mark(off, len); !s.ok()) return "mark: " + s.message();
      std::string e = PWrite(d.path, off, buf);
      if (Status s = (*t)->Close(); !s.ok()) return "tracker close: " + s.message();
      if (!e.empty()) return e;
    } else {
      std::string e = PWrite(d.path, off, buf);
      if (!e.empty()) return e;
    }
    std::copy(buf.begin(), buf.end(), d.content.begin() + off);
    return "";
  }

  static std::string PWrite(const std::string& path, uint64_t off, const Bytes& buf) {
    int fd = ::open(path.c_str(), O_WRONLY);
    if (fd < 0) return "open " + path;
    ssize_t n = ::pwrite(fd, buf.data(), buf.size(), static_cast<off_t>(off));
    ::close(fd);
    return n == static_cast<ssize_t>(buf.size()) ? "" : "pwrite " + path;
  }

  std::vector<CheckpointInfo> TrackerCheckpoints(const Disk& d, Id128* uuid) {
    OpenOptions ro;
    ro.read_only = true;
    auto t = Tracker::Open(d.tracker, ro);
    if (!t) return {};
    if (uuid) *uuid = (*t)->uuid();
    return (*t)->List();
  }

  // ---- backups ----

  // Runs `strata backup --json ARGS IMAGE`. `must` is the model's claim that
  // it has to succeed; `expected` the content it must restore to.
  std::string TakeBackup(size_t di, const std::string& args, bool must, const Bytes& expected) {
    Disk& d = disks_[di];
    auto r = RunCommand(S("backup --json" + R() + args + " " + ShellQuote(d.path)));
    if (r.exit_code != 0) {
      if (r.exit_code != 1) return "backup " + args + " exited " + std::to_string(r.exit_code) + ": " + r.err;
      if (r.err.empty() || std::count(r.err.begin(), r.err.end(), '\n') != 1) {
        return "refusal is not one line: " + r.err;
      }
      if (must) return "backup " + args + " refused though the model says it must work: " + r.err;
      ++stats_.refused;
      ++stats_.refusals[args.substr(0, args.find(' ', 3)) + ": " + Classify(r.err)];
      return "";
    }
    Json j = Json::parse(r.out, nullptr, false);
    if (j.is_discarded()) return "backup output is not JSON: " + r.out;
    Made b;
    b.id = j["id"].get<std::string>();
    b.disk = di;
    b.content = std::make_shared<Bytes>(expected);
    b.content_seq = ++clock_;
    b.end = j["end"];
    backups_.push_back(b);
    ++stats_.backups_made;
    ++stats_.made[args.substr(0, args.find(' ', 3))];
    return CheckRestore(backups_.back());
  }

  // The reason of a refusal without paths, ids and numbers.
  std::string Classify(std::string err) const {
    for (size_t at; (at = err.find(dir_)) != std::string::npos;) err.replace(at, dir_.size(), "");
    std::string out;
    for (size_t i = 0; i < err.size() && out.size() < 70; ++i) {
      char ch = err[i];
      if (std::isxdigit(static_cast<unsigned char>(ch)) && i + 1 < err.size() &&
          std::isxdigit(static_cast<unsigned char>(err[i + 1])) && std::isdigit(static_cast<unsigned char>(ch))) {
        while (i + 1 < err.size() && std::isxdigit(static_cast<unsigned char>(err[i + 1]))) ++i;
        out += '#';
      } else if (ch != '\n') {
        out += ch;
      }
    }
    return out;
  }

  std::string CheckRestore(const Made& b) {
    std::string out = dir_ + "/restore.raw";
    std::filesystem::remove(out);
    auto r = RunCommand(S("restore" + R() + "--backup " + b.id + " " + ShellQuote(out)));
    if (r.exit_code != 0) return "restore of " + b.id + " failed: " + r.err;
    ++stats_.restores_checked;
    Bytes got = testing::ReadFileBytes(out);
    std::filesystem::remove(out);
    if (got.size() != b.content->size()) {
      return "backup " + b.id + " restores " + std::to_string(got.size()) + " bytes, the disk had " +
             std::to_string(b.content->size());
    }
    for (size_t i = 0; i < got.size(); ++i) {
      if (got[i] != (*b.content)[i]) {
        return "backup " + b.id + " of disk " + std::to_string(b.disk) + " differs from the disk at byte " +
               std::to_string(i) + " (restored " + std::to_string(got[i]) + ", was " +
               std::to_string((*b.content)[i]) + ")";
      }
    }
    return "";
  }

  std::string CheckAll() {
    for (const Made& b : backups_) {
      std::string e = CheckRestore(b);
      if (!e.empty()) return e;
    }
    auto v = RunCommand(S("verify" + R()));
    if (v.exit_code != 0) return "verify failed: " + v.err;
    return "";
  }

  const Made* Latest(size_t di, const std::function<bool(const Made&)>& pred) const {
    const Made* best = nullptr;
    for (const Made& b : backups_) {
      if (b.disk == di && pred(b) && (!best || b.content_seq >= best->content_seq)) best = &b;
    }
    return best;
  }

  // The bitmap flags of a qcow2 image, by name.
  std::map<std::string, std::set<std::string>> Bitmaps(const Disk& d) {
    std::map<std::string, std::set<std::string>> out;
    auto r = RunCommand("qemu-img info -U --output=json " + ShellQuote(d.path));
    Json j = Json::parse(r.out, nullptr, false);
    if (j.is_discarded()) return out;
    const Json& spec = j["format-specific"]["data"];
    if (!spec.contains("bitmaps")) return out;
    for (const Json& b : spec["bitmaps"]) {
      std::set<std::string> flags;
      for (const Json& f : b["flags"]) flags.insert(f.get<std::string>());
      out[b["name"].get<std::string>()] = flags;
    }
    return out;
  }

  std::string Apply(const Op& op) {
    if (backups_.size() > 14 && op.type != kMergeRemove && op.b % 3 == 0) {
      return Apply(Op{kMergeRemove, op.a, op.b, op.c});  // keep the repository small
    }
    // Operations that only make sense for one kind of disk pick among those.
    std::vector<size_t> cand;
    for (size_t i = 0; i < disks_.size(); ++i) {
      Kind k = disks_[i].kind;
      switch (op.type) {
        case kCheckpoint: case kTrackerRemove: case kTrackerReinit: case kBackupTracker:
        case kBackupTrackerSince:
          if (k == Kind::kTrackedRaw) cand.push_back(i);
          break;
        case kQemuCrash: case kSnapshotCreate: case kSnapshotDelete: case kBackupBitmap:
        case kBackupSinceSnapshot:
          if (k == Kind::kQcow2) cand.push_back(i);
          break;
        case kResize:
          if (k != Kind::kQcow2) cand.push_back(i);
          break;
        default:
          cand.push_back(i);
      }
    }
    const size_t di = cand[op.a % cand.size()];
    Disk& d = disks_[di];
    std::mt19937_64 rng(op.c);
    const bool tracked = d.kind == Kind::kTrackedRaw, qcow2 = d.kind == Kind::kQcow2;
    switch (op.type) {
      case kWrite:
        return Write(di, op.b, rng(), rng());
      case kCheckpoint: {
        if (!tracked) return "";
        auto r = RunCommand(S("checkpoint --tracker " + ShellQuote(d.tracker) + " u" + std::to_string(++names_)));
        return r.exit_code == 0 ? "" : "checkpoint: " + r.err;
      }
      case kTrackerRemove: {
        if (!tracked) return "";
        auto cps = TrackerCheckpoints(d, nullptr);
        if (cps.empty()) return "";
        auto r = RunCommand(S("tracker remove --tracker " + ShellQuote(d.tracker) + " " +
                              ShellQuote(cps[op.b % cps.size()].name)));
        return r.exit_code == 0 ? "" : "tracker remove: " + r.err;
      }
      case kTrackerReinit: {
        if (!tracked) return "";
        std::filesystem::remove_all(d.tracker);
        return InitTracker(d, op.c % 2 ? 65536 : 4096);
      }
      case kResize: {
        if (qcow2) return "";
        uint64_t size = (512 + rng() % 8192) * 512;
        if (::truncate(d.path.c_str(), static_cast<off_t>(size)) != 0) return "truncate";
        d.content.resize(size, 0);
        if (tracked) {
          auto r = RunCommand(S("tracker resize --tracker " + ShellQuote(d.tracker) + " --size " + std::to_string(size)));
          if (r.exit_code != 0) return "tracker resize: " + r.err;
        }
        return "";
      }
      case kQemuCrash: {
        if (!qcow2) return "";
        // A writer killed with the image open: its bitmaps stay in use.
        uint64_t off = (op.b % (d.content.size() / 65536)) * 65536;
        std::string cmd = "write -P 7 " + std::to_string(off) + " 65536";
        (void)RunCommand("qemu-io -f qcow2 -c " + ShellQuote(cmd) + " -c 'sigraise 9' " + ShellQuote(d.path) +
                         " >/dev/null 2>&1");
        std::fill(d.content.begin() + off, d.content.begin() + off + 65536, 7);
        return "";
      }
      case kSnapshotCreate: {
        if (!qcow2) return "";
        std::string name = "s" + std::to_string(++names_);
        auto r = RunCommand("qemu-img snapshot -c " + name + " " + ShellQuote(d.path));
        if (r.exit_code != 0) return "snapshot -c: " + r.err;
        d.snapshots.push_back(name);
        d.snapshot_content[name] = d.content;
        return "";
      }
      case kSnapshotDelete: {
        if (!qcow2 || d.snapshots.empty()) return "";
        size_t k = op.c % d.snapshots.size();
        auto r = RunCommand("qemu-img snapshot -d " + d.snapshots[k] + " " + ShellQuote(d.path));
        if (r.exit_code != 0) return "snapshot -d: " + r.err;
        d.snapshot_content.erase(d.snapshots[k]);
        d.snapshots.erase(d.snapshots.begin() + static_cast<long>(k));
        return "";
      }
      case kBackupFull: {
        std::string args = "--full";
        Bytes expected = d.content;
        int rec = static_cast<int>(op.b % 4);  // 0: no end point
        if (tracked && rec) args += " --tracker " + ShellQuote(d.tracker);
        if (qcow2 && (rec == 1 || rec == 2)) args += " --bitmap series";
        if (qcow2 && rec == 3 && !d.snapshots.empty()) {
          const std::string& s = d.snapshots[op.c % d.snapshots.size()];
          args += " --snapshot " + s;
          expected = d.snapshot_content[s];
        }
        if (op.c % 5 == 0) args += " --granularity 4K";
        return TakeBackup(di, args, true, expected);
      }
      case kBackupScan: {
        std::string args = "--scan";
        int rec = static_cast<int>(op.b % 4);
        if (tracked && rec) args += " --tracker " + ShellQuote(d.tracker);
        if (qcow2 && rec) args += " --bitmap series";
        const Made* p = Latest(di, [](const Made&) { return true; });
        bool must = p && p->content->size() == d.content.size();
        return TakeBackup(di, args, must, d.content);
      }
      case kBackupTracker: {
        if (!tracked) return "";
        return TakeBackup(di, "--tracker " + ShellQuote(d.tracker), TrackerChainIntact(di), d.content);
      }
      case kBackupTrackerSince: {
        if (!tracked) return "";
        auto cps = TrackerCheckpoints(d, nullptr);
        if (cps.empty()) return "";
        return TakeBackup(di, "--tracker " + ShellQuote(d.tracker) + " --since " + ShellQuote(cps[op.b % cps.size()].name),
                      false, d.content);
      }
      case kBackupBitmap: {
        if (!qcow2) return "";
        const Made* p = Latest(di, [](const Made& b) {
          return b.end.is_object() && b.end["kind"] == "qcow2-bitmap";
        });
        bool must = false;
        if (p && p->content->size() == d.content.size()) {
          auto bm = Bitmaps(d);
          auto it = bm.find(p->end["name"].get<std::string>());
          must = it != bm.end() && !it->second.count("in-use") && it->second.count("auto");
        }
        return TakeBackup(di, "--bitmap series", must, d.content);
      }
      case kBackupSinceSnapshot: {
        if (!qcow2 || d.snapshots.empty()) return "";
        if (op.b % 3 == 0) {  // start a snapshot chain: a full backup of a snapshot's view
          const std::string& s0 = d.snapshots[op.c % d.snapshots.size()];
          return TakeBackup(di, "--full --snapshot " + s0, true, d.snapshot_content[s0]);
        }
        // Prefer a start snapshot some backup ends at (the model knows it must work then).
        std::vector<std::string> ends;
        for (const std::string& sn : d.snapshots) {
          if (Latest(di, [&](const Made& b) {
                return b.end.is_object() && b.end["kind"] == "qcow2-snapshot" && b.end["name"] == sn;
              })) {
            ends.push_back(sn);
          }
        }
        const std::string from = !ends.empty() && op.b % 4 != 1 ? ends[op.b % ends.size()]
                                                                : d.snapshots[op.b % d.snapshots.size()];
        const Made* p = Latest(di, [&](const Made& b) {
          return b.end.is_object() && b.end["kind"] == "qcow2-snapshot" && b.end["name"] == from;
        });
        std::string args = "--since-snapshot " + from;
        Bytes expected = d.content;
        if (op.c % 2) {
          const std::string& to = d.snapshots[op.c % d.snapshots.size()];
          args += " --snapshot " + to;
          expected = d.snapshot_content[to];
        }
        bool must = p && p->content->size() == expected.size();
        return TakeBackup(di, args, must, expected);
      }
      case kBackupExplicitParent: {
        if (backups_.empty()) return "";
        const Made& p = backups_[op.b % backups_.size()];
        std::string src = tracked && op.c % 2 ? "--tracker " + ShellQuote(d.tracker) : "--scan";
        return TakeBackup(di, src + " --parent " + p.id, false, d.content);
      }
      case kMergeRemove:
      case kMergeFold:
      case kMergeSynthetic: {
        if (backups_.empty()) return "";
        const Made victim = backups_[op.b % backups_.size()];
        std::string args = op.type == kMergeRemove ? "--remove " : op.type == kMergeFold ? "--fold " : "--synthetic-full ";
        auto r = RunCommand(S("merge --json" + R() + args + victim.id));
        if (r.exit_code != 0) {
          // Folding a full backup is the one refusal a merge may give.
          if (op.type == kMergeFold && r.err.find("full backup") != std::string::npos) return "";
          return "merge " + args + victim.id + ": " + r.err;
        }
        ++stats_.merges;
        return Reconcile(op.type, victim, r.out);
      }
      case kVerify: {
        auto v = RunCommand(S("verify" + R()));
        return v.exit_code == 0 ? "" : "verify: " + v.err;
      }
    }
    return "";
  }

  // The model's view of whether a one-step tracker backup must work: the
  // newest backup of the disk that ends at a checkpoint of the current
  // tracker has the disk's size, and that checkpoint or an older one is
  // still in the tracker.
  bool TrackerChainIntact(size_t di) {
    Id128 uuid{};
    auto cps = TrackerCheckpoints(disks_[di], &uuid);
    std::string hex = Id128ToHex(uuid);
    const Made* p = Latest(di, [&](const Made& b) {
      return b.end.is_object() && b.end["kind"] == "tracker" && b.end["source"] == hex;
    });
    if (!p || p->content->size() != disks_[di].content.size()) return false;
    uint64_t seq = p->end["seq"].get<uint64_t>();
    for (const CheckpointInfo& c : cps) {
      if (c.id <= seq) return true;
    }
    return false;
  }

  // After a merge: the catalog must hold exactly the backups the model
  // expects, each restoring as before; a synthetic full restores as its source.
  std::string Reconcile(uint8_t type, const Made& victim, const std::string& out) {
    Json res = Json::parse(out, nullptr, false);
    if (res.is_discarded()) return "merge output is not JSON: " + out;
    auto l = RunCommand(S("list --json" + R()));
    Json list = Json::parse(l.out, nullptr, false);
    if (l.exit_code != 0 || list.is_discarded()) return "list: " + l.err;
    std::set<std::string> ids;
    for (const Json& e : list) ids.insert(e["id"].get<std::string>());
    if (type == kMergeSynthetic) {
      Made b = victim;
      b.id = res["id"].get<std::string>();
      // Its content is as old as the source's: same content_seq.
      backups_.push_back(b);
    } else {
      std::string removed = res["removed"].get<std::string>();
      backups_.erase(std::remove_if(backups_.begin(), backups_.end(),
                                    [&](const Made& b) { return b.id == removed; }),
                     backups_.end());
    }
    for (const Made& b : backups_) {
      if (!ids.count(b.id)) return "backup " + b.id + " vanished from the catalog after a merge";
    }
    if (ids.size() != backups_.size()) return "the catalog holds backups the model does not know";
    for (const Json& e : list) {  // end points follow the content
      for (Made& b : backups_) {
        if (b.id == e["id"]) b.end = e["end"];
      }
    }
    return CheckAll();
  }

  std::string dir_, repo_;
  uint64_t seed_;
  size_t step_ = 0;
  uint64_t clock_ = 0, names_ = 0;
  std::vector<Disk> disks_;
  std::vector<Made> backups_;
  Stats stats_;
};

// STRATA_MODEL_SKIP="snapshot-create,qemu-crash" leaves operation kinds
// out (for narrowing a failure down by hand).
std::vector<Op> Generate(uint64_t seed, size_t steps) {
  std::mt19937_64 rng(seed);
  std::vector<Op> ops;
  const char* skip_env = std::getenv("STRATA_MODEL_SKIP");
  const std::string skip = skip_env ? "," + std::string(skip_env) + "," : "";
  // Every disk gets a full backup early so incrementals have something to do.
  for (uint64_t d = 0; d < 4; ++d) ops.push_back({kBackupFull, d, rng() % 3, rng()});
  // Weights: mostly writes and incrementals, so chains grow long between
  // the events that break them (resizes, re-created trackers, crashes).
  static const std::pair<OpType, int> kWeights[] = {
      {kWrite, 24},         {kCheckpoint, 4},        {kTrackerRemove, 3},      {kTrackerReinit, 2},
      {kResize, 3},         {kQemuCrash, 3},         {kSnapshotCreate, 4},     {kSnapshotDelete, 2},
      {kBackupFull, 7},     {kBackupScan, 6},        {kBackupTracker, 14},     {kBackupTrackerSince, 3},
      {kBackupBitmap, 8},   {kBackupSinceSnapshot, 8}, {kBackupExplicitParent, 2}, {kMergeRemove, 4},
      {kMergeFold, 3},      {kMergeSynthetic, 3},    {kVerify, 1}};
  int total = 0;
  for (auto& w : kWeights) total += w.second;
  auto pick = [&]() {
    int r = static_cast<int>(rng() % static_cast<uint64_t>(total));
    for (auto& w : kWeights) {
      if ((r -= w.second) < 0) return w.first;
    }
    return kWrite;
  };
  while (ops.size() < steps) {
    Op op{static_cast<uint8_t>(pick()), rng(), rng(), rng()};
    if (skip.find("," + std::string(OpName(op.type)) + ",") != std::string::npos) continue;
    ops.push_back(op);
  }
  return ops;
}

std::string RunOnce(const std::vector<Op>& ops, uint64_t seed, History::Stats* stats = nullptr) {
  testing::TempDir dir;
  History h(dir.path(), seed);
  std::string e = h.Run(ops);
  if (stats) *stats = h.stats();
  return e;
}

// Delta debugging over the operation list: drop chunks while the history
// still fails (any failure counts).
std::vector<Op> Shrink(std::vector<Op> ops, uint64_t seed, int budget) {
  for (size_t chunk = ops.size() / 2; chunk >= 1 && budget > 0; chunk /= 2) {
    for (size_t start = 0; start + chunk <= ops.size() && budget > 0;) {
      std::vector<Op> cand(ops.begin(), ops.begin() + static_cast<long>(start));
      cand.insert(cand.end(), ops.begin() + static_cast<long>(start + chunk), ops.end());
      --budget;
      if (!RunOnce(cand, seed).empty()) {
        ops = std::move(cand);
      } else {
        start += chunk;
      }
    }
  }
  return ops;
}

std::string Describe(const std::vector<Op>& ops) {
  std::ostringstream o;
  for (size_t i = 0; i < ops.size(); ++i) {
    o << "  " << i << ": " << OpName(ops[i].type) << " a=" << ops[i].a << " b=" << ops[i].b << " c=" << ops[i].c
      << "\n";
  }
  return o.str();
}

uint64_t EnvU64(const char* name, uint64_t def) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : def;
}

TEST(ChainModel, RandomHistoriesRestoreOrRefuse) {
  if (!testing::HaveCommand("qemu-img") || !testing::HaveCommand("qemu-io")) {
    GTEST_SKIP() << "qemu-utils not installed";
  }
  const uint64_t first = EnvU64("STRATA_MODEL_SEED", 1000);
  const uint64_t runs = EnvU64("STRATA_MODEL_RUNS", 3);
  const size_t steps = EnvU64("STRATA_MODEL_STEPS", 150);
  History::Stats total;
  for (uint64_t seed = first; seed < first + runs; ++seed) {
    std::vector<Op> ops = Generate(seed, steps);
    History::Stats st;
    std::string err = RunOnce(ops, seed, &st);
    total.backups_made += st.backups_made;
    total.refused += st.refused;
    total.merges += st.merges;
    total.restores_checked += st.restores_checked;
    for (auto& [k, v] : st.refusals) total.refusals[k] += v;
    for (auto& [k, v] : st.made) total.made[k] += v;
    if (!err.empty()) {
      std::vector<Op> small = Shrink(ops, seed, static_cast<int>(EnvU64("STRATA_MODEL_SHRINK", 60)));
      ADD_FAILURE() << "seed " << seed << ": " << err << "\nshrunk to " << small.size() << " of " << ops.size()
                    << " operations (rerun: STRATA_MODEL_SEED=" << seed << " STRATA_MODEL_RUNS=1 STRATA_MODEL_STEPS="
                    << steps << "):\n"
                    << Describe(small) << "failure of the shrunk history: " << RunOnce(small, seed);
      break;
    }
  }
  std::printf("chain model: %llu histories x %zu steps: %zu backups made, %zu refused, %zu merges, %zu restores "
              "compared\n",
              static_cast<unsigned long long>(runs), steps, total.backups_made, total.refused, total.merges,
              total.restores_checked);
  for (auto& [k, v] : total.made) std::printf("  made %zu x %s\n", v, k.c_str());
  for (auto& [k, v] : total.refusals) std::printf("  refused %zu x %s\n", v, k.c_str());
  EXPECT_GT(total.backups_made, 0u);
}

}  // namespace
}  // namespace strata
