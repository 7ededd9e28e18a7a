// `strata demo`: the main job on a built-in sample. Generates a disk, writes
// to it through the tracked-device helper, takes a full and two incremental
// backups from the tracker, restores every point, verifies each against the
// disk as it was, and prints what it did and how fast.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "strata/jobs.h"
#include "strata/pipeline.h"
#include "strata/repository.h"
#include "strata/tracked_device.h"
#include "strata/tracker.h"
#include "strata/open_image.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/sample_data.h"

namespace strata::cli {
namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
std::string Rate(uint64_t bytes, double s) {
  return s > 0 ? FormatBytes(static_cast<uint64_t>(static_cast<double>(bytes) / s)) + "/s" : "-";
}

// XXH3-128 of a whole image's guest bytes.
Result<Hash128> HashImage(const std::string& path) {
  STRATA_ASSIGN_OR_RETURN(auto img, OpenImage(path, "raw"));
  std::vector<uint8_t> buf(4 << 20);
  std::vector<Hash128> parts;
  for (uint64_t off = 0; off < img->size(); off += buf.size()) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), img->size() - off));
    STRATA_RETURN_IF_ERROR(img->Read(off, {buf.data(), n}));
    parts.push_back(Xxh3_128(buf.data(), n));
  }
  return Xxh3_128(parts.data(), parts.size() * sizeof(Hash128));
}

// Random block rewrites through the tracked device.
Status Scribble(TrackedDevice& dev, uint64_t disk, double fraction, uint64_t seed, uint64_t* bytes) {
  const uint64_t block = 64 * 1024, blocks = disk / block;
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> buf(block);
  uint64_t n = static_cast<uint64_t>(static_cast<double>(blocks) * fraction);
  for (uint64_t i = 0; i < n; ++i) {
    uint64_t b = rng() % blocks;
    if (rng() % 8 == 0) std::fill(buf.begin(), buf.end(), 0);
    else FillSample(rng, rng() % 3 == 0, buf.data(), buf.size());
    STRATA_RETURN_IF_ERROR(dev.Write(b * block, buf));
  }
  *bytes = n * block;
  return dev.Sync();
}

int DemoMain(int argc, char** argv) {
  const char* tool = "strata demo";
  auto a = Args::Parse(argc, argv, 1, {"--size", "--dir"}, {"--help", "--keep", "--json"});
  if (!a) return Usage(tool, a.error().message());
  if (a->Has("--help")) {
    std::puts("Usage: strata demo [--size BYTES] [--dir DIR] [--keep] [--json]\n\n"
              "Runs the whole job on a generated sample disk (default 2G) in DIR (default: a\n"
              "new temporary directory, removed afterwards unless --keep): tracked writes,\n"
              "a full and two incremental backups, restore and verification of every point.\n"
              "--json prints one JSON object at the end instead of the tables.");
    return kExitOk;
  }
  const bool json = a->Has("--json");
  // With --json only the final object goes to stdout.
  auto say = [&](const char* fmt, auto... args) {
    if (!json) std::printf(fmt, args...);
  };
  uint64_t size = 2ull << 30;
  if (auto s = a->Get("--size")) {
    auto v = ParseSize(*s);
    if (!v || *v < (16 << 20) || *v > (1ull << 40)) return Usage(tool, "--size must be between 16M and 1T");
    size = *v / (64 * 1024) * (64 * 1024);
  }
  std::string dir;
  bool temp = !a->Has("--dir");
  if (temp) {
    std::string tmpl = std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") + "/strata-demo-XXXXXX";
    if (!::mkdtemp(tmpl.data())) return Fail(tool, Status::FromErrno(errno, tmpl));
    dir = tmpl;
  } else {
    dir = *a->Get("--dir");
    std::filesystem::create_directories(dir);
  }
  struct Cleanup {
    std::string dir;
    bool on;
    ~Cleanup() {
      std::error_code ec;
      if (on) std::filesystem::remove_all(dir, ec);
    }
  } cleanup{dir, temp && !a->Has("--keep")};
  const std::string disk = dir + "/disk.raw", trk = dir + "/tracker", repo_dir = dir + "/repo";
  auto fail = [&](const Status& s) { return Fail(tool, s); };

  say("strata demo in %s\n\n", dir.c_str());
  // 1. A sample disk, a tracker for it, a repository.
  auto t = Clock::now();
  {
    std::string sz = std::to_string(size), fill = "0.25", seed = "42";
    const char* gargv[] = {"generate", "--size", sz.c_str(), "--fill", fill.c_str(), "--seed",
                           seed.c_str(), disk.c_str(), nullptr};
    std::fflush(stdout);
    int saved = -1;
    if (json) {  // generate's own result line is not part of the demo's JSON
      saved = ::dup(1);
      int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
      if (saved < 0 || null < 0) return fail(Status::FromErrno(errno, "/dev/null"));
      ::dup2(null, 1);
      ::close(null);
    }
    int rc = CommandTable().at("generate").run(8, const_cast<char**>(gargv));
    if (saved >= 0) {
      std::fflush(stdout);
      ::dup2(saved, 1);
      ::close(saved);
    }
    if (rc != 0) return rc;
  }
  TrackerOptions topt;
  topt.disk_size = size;
  auto tracker = Tracker::Create(trk, topt);
  if (!tracker) return fail(tracker.error());
  auto device = TrackedDevice::Open(disk, tracker->get());
  if (!device) return fail(device.error());
  if (Status s = Repository::Init(repo_dir); !s.ok()) return fail(s);
  auto repo = Repository::Open(repo_dir);
  if (!repo) return fail(repo.error());

  struct Row {
    std::string what;
    uint64_t changed = 0;
    BackupStats st;
    ArchiveId id{};
    Hash128 truth;
  };
  std::vector<Row> rows;
  PipelineOptions opt;
  auto backup = [&](const std::string& what, SourceKind kind, uint64_t changed) -> Status {
    // One step: the backup takes a checkpoint in the tracker this process
    // holds (its end point) and, for an incremental, reads what changed
    // since the checkpoint its parent ended at.
    BackupRequest req;
    req.image = disk;
    req.format = "raw";
    req.pipeline = opt;
    req.source.kind = kind;
    req.source.tracker = tracker->get();
    req.source.checkpoint_name = "cp" + std::to_string(rows.size());
    STRATA_ASSIGN_OR_RETURN(BackupResult res, BackupToRepository(**repo, req));
    BackupStats st = res.stats;
    ArchiveId id = res.entry.id();
    STRATA_ASSIGN_OR_RETURN(Hash128 truth, HashImage(disk));
    rows.push_back({what, changed ? changed : st.planned_bytes, st, id, truth});
    return Status::Ok();
  };

  // 2. Full backup, then two rounds of tracked writes and incrementals.
  if (Status s = backup("full", SourceKind::kFull, 0); !s.ok()) return fail(s);
  uint64_t changed = 0;
  if (Status s = Scribble(**device, size, 0.02, 7, &changed); !s.ok()) return fail(s);
  say("wrote %s through the tracked device (2%% of the 64 KiB blocks)\n", FormatBytes(changed).c_str());
  if (Status s = backup("incremental 1", SourceKind::kTracker, 0); !s.ok()) return fail(s);
  if (Status s = Scribble(**device, size, 0.01, 8, &changed); !s.ok()) return fail(s);
  say("wrote %s through the tracked device (1%% of the 64 KiB blocks)\n\n", FormatBytes(changed).c_str());
  if (Status s = backup("incremental 2", SourceKind::kTracker, 0); !s.ok()) return fail(s);

  Json backups = Json::array(), restores = Json::array();
  say("%-14s %12s %12s %12s %7s %8s %12s\n", "backup", "changed", "data", "stored", "ratio", "time",
      "throughput");
  for (const Row& r : rows) {
    double ratio = r.st.stored_bytes ? static_cast<double>(r.st.data_bytes) / static_cast<double>(r.st.stored_bytes) : 0;
    say("%-14s %12s %12s %12s %7.2f %7.2fs %12s\n", r.what.c_str(), FormatBytes(r.changed).c_str(),
        FormatBytes(r.st.data_bytes).c_str(), FormatBytes(r.st.stored_bytes).c_str(), ratio, r.st.seconds,
        Rate(r.st.read_bytes, r.st.seconds).c_str());
    backups.push_back({{"name", r.what},
                       {"id", IdToHex(r.id)},
                       {"changed_bytes", r.changed},
                       {"read_bytes", r.st.read_bytes},
                       {"data_bytes", r.st.data_bytes},
                       {"stored_bytes", r.st.stored_bytes},
                       {"seconds", r.st.seconds}});
  }
  if (!rows.back().st.notice.empty()) say("note: %s\n", rows.back().st.notice.c_str());

  // 3. Restore every point and compare with the disk as it was.
  say("\n%-14s %8s %12s %12s  %s\n", "restore", "time", "data", "throughput", "verified");
  bool all_ok = true;
  for (const Row& r : rows) {
    auto chain = (*repo)->OpenChain(r.id);
    if (!chain) return fail(chain.error());
    std::vector<const ArchiveReader*> c;
    for (auto& x : *chain) c.push_back(x.get());
    std::string out = dir + "/restored.raw";
    auto st = RunRestore(c, out, opt);
    if (!st) return fail(st.error());
    auto h = HashImage(out);
    if (!h) return fail(h.error());
    bool ok = *h == r.truth;
    all_ok &= ok;
    say("%-14s %7.2fs %12s %12s  %s\n", r.what.c_str(), st->seconds, FormatBytes(st->data_bytes).c_str(),
        Rate(st->data_bytes, st->seconds).c_str(), ok ? "identical to the disk at that point" : "MISMATCH");
    restores.push_back({{"name", r.what},
                        {"id", IdToHex(r.id)},
                        {"data_bytes", st->data_bytes},
                        {"seconds", st->seconds},
                        {"identical", ok}});
    std::filesystem::remove(out);
  }
  if (Status s = (*tracker)->Close(); !s.ok()) return fail(s);
  say("\n%s in %.1f s\n", all_ok ? "all points restored byte-identically" : "VERIFICATION FAILED", Since(t));
  if (!temp || a->Has("--keep")) say("files kept in %s\n", dir.c_str());
  if (!all_ok) return Fail(tool, Status::Corruption(dir + ": a restored point differs from the disk at that point"));
  if (json) {
    PrintJson(Json{{"ok", all_ok},
                   {"dir", dir},
                   {"kept", !temp || a->Has("--keep")},
                   {"disk_size", size},
                   {"backups", backups},
                   {"restores", restores},
                   {"seconds", Since(t)}});
  }
  return kExitOk;
}

Registrar reg("demo", "run the whole job on a generated sample disk", &DemoMain);

}  // namespace
}  // namespace strata::cli
