// Power loss, not only kill -9 (issue 11): a repository on FaultEnv, which at
// a simulated power cut keeps only what was made durable (file bytes at
// their fsync, names at their directory's fsync; or, in the two lenient
// modes, undurable names or undurable bytes as well). Random histories of
// backups (full, --scan, caller-made incrementals with points), removals
// and synthetic fulls are cut at a random mutating call; after "reboot" the
// next writer opens the repository and finishes what was journaled, then:
//   * every backup acknowledged before the cut is in the catalog and
//     restores byte for byte to the disk as it was;
//   * the operation the cut interrupted is complete or absent (a removal is
//     finished by the next writer; an unacknowledged backup may be gone);
//   * every catalog entry agrees with its archive and every chain links up;
//   * no archive is left that no entry names.
// STRATA_POWERCUT_TRIALS sets the number of cut points (default 1,000); the
// seed is printed and STRATA_SEED replays it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <random>

#include "strata/jobs.h"
#include "strata/env.h"
#include "tests/test_util.h"

namespace strata {
namespace {

using Bytes = std::vector<uint8_t>;

struct Model {
  std::map<std::string, Bytes> content;  // backup id -> disk content
};

struct Trial {
  std::string disk;  // a real file, the source
  std::mt19937_64 rng;
  FaultEnv env;
  const std::string repo_dir = "/repo";
  Model acked;                    // acknowledged backups
  std::optional<std::pair<std::string, Bytes>> in_flight;  // a backup that did not return
  std::optional<std::string> removing;                     // a removal that did not return
  uint64_t disk_size;

  explicit Trial(const std::string& d, uint64_t seed) : disk(d), rng(seed) {
    disk_size = (1 + rng() % 6) << 20;
    Bytes b(disk_size);
    for (size_t i = 0; i < b.size(); i += 4096) {
      uint8_t v = static_cast<uint8_t>(rng() % 3 ? 0 : rng());
      std::fill(b.begin() + static_cast<long>(i), b.begin() + static_cast<long>(std::min(b.size(), i + 4096)), v);
    }
    testing::WriteFileBytes(disk, b);
  }

  void Scribble(ExtentSet* changed) {
    int fd = ::open(disk.c_str(), O_RDWR);
    for (int i = 0, n = 1 + static_cast<int>(rng() % 6); i < n; ++i) {
      uint64_t len = 1 + rng() % (200 << 10);
      uint64_t off = rng() % (disk_size - len);
      Bytes buf(len, static_cast<uint8_t>(rng()));
      EXPECT_EQ(::pwrite(fd, buf.data(), len, static_cast<off_t>(off)), static_cast<ssize_t>(len));
      if (changed) {
        EXPECT_TRUE(changed->Add(off, len).ok());
      }
    }
    ::close(fd);
  }

  // Runs `ops` random operations; stops at the first failure (the cut).
  void Run(int ops) {
    auto repo = Repository::Open(repo_dir, RepositoryOptions{&env});
    if (!repo) {
      ADD_FAILURE() << "open: " << repo.error().message();
      return;
    }
    ExtentSet since_last = *ExtentSet::Create(disk_size, Granularity::Default());
    ChainPoint last_end;  // the end point of the newest caller-made backup
    for (int i = 0; i < ops; ++i) {
      const int kind = i == 0 ? 0 : static_cast<int>(rng() % 6);
      PipelineOptions opt;
      opt.chunk_size = 256 << 10;
      if (kind <= 2) {  // a backup
        BackupRequest req;
        req.image = disk;
        req.format = "raw";
        req.disk_name = "disk";
        req.pipeline = opt;
        ExtentSet changes = since_last;
        ExtentSet none = *ExtentSet::Create(disk_size, Granularity::Default());
        if (kind == 0 || (*repo)->entries().empty()) {
          req.source.kind = SourceKind::kFull;
        } else if (kind == 1) {
          req.source.kind = SourceKind::kScan;
        } else {
          // An orchestrator's incremental: its change set and points.
          req.source.kind = SourceKind::kTracker;
          req.source.changes = &changes;
          req.source.start = last_end;
        }
        ChainPoint end{PointKind::kTracker, tracker_id_, ++seq_, "p" + std::to_string(seq_)};
        if (kind != 1) {
          // Full and caller-made backups end at a point the next one starts from.
          if (req.source.kind == SourceKind::kFull) {
            req.source.changes = &none;
            req.source.start = {};
          }
          req.source.end = end;
        }
        Bytes content = testing::ReadFileBytes(disk);
        in_flight = std::make_pair(std::string(), content);
        auto r = BackupToRepository(**repo, req);
        if (!r) {
          if (env.cut()) return;  // the cut: complete or absent
          in_flight.reset();      // a refusal (e.g. no backup ends where it starts)
          continue;
        }
        in_flight.reset();
        acked.content[IdToHex(r->entry.id())] = content;
        if (kind != 1) {
          last_end = end;
          since_last = *ExtentSet::Create(disk_size, Granularity::Default());
        }
        Scribble(&since_last);
      } else if (kind <= 4 && !(*repo)->entries().empty()) {  // remove a backup
        const auto& es = (*repo)->entries();
        const ArchiveId victim = es[rng() % es.size()].id();
        removing = IdToHex(victim);
        auto r = RemoveBackup(**repo, victim, opt);
        if (!r) {
          if (env.cut()) return;
          ADD_FAILURE() << "remove failed without a power cut: " << r.error().message();
          return;
        }
        acked.content.erase(*removing);
        removing.reset();
      } else if (!(*repo)->entries().empty()) {  // a synthetic full
        const auto& es = (*repo)->entries();
        const ArchiveId src = es[rng() % es.size()].id();
        Bytes content = acked.content[IdToHex(src)];
        in_flight = std::make_pair(std::string(), content);
        auto r = SyntheticFull(**repo, src, opt);
        if (!r) {
          if (env.cut()) return;
          ADD_FAILURE() << "synthetic full failed without a power cut: " << r.error().message();
          return;
        }
        in_flight.reset();
        acked.content[IdToHex(r->entry.id())] = content;
      }
    }
  }

  // After the power cut: what must hold.
  std::string Check(const std::string& out) {
    auto repo = Repository::Open(repo_dir, RepositoryOptions{&env});
    if (!repo) return "reopen: " + repo.error().message();
    if (Status s = CompletePending(**repo, {}); !s.ok()) return "complete pending: " + s.message();
    if (!(*repo)->pending().empty()) return "operations still pending after the next writer";
    auto orphans = (*repo)->Orphans();
    if (!orphans) return orphans.error().message();
    // An interrupted removal is finished, not left as an archive no entry
    // names (which `repair` would adopt again).
    if (!orphans->empty()) return "an archive no catalog entry names after the next writer: " + orphans->front();
    std::map<std::string, bool> present;
    for (const CatalogEntry& e : (*repo)->entries()) {
      present[IdToHex(e.id())] = true;
      auto a = ArchiveReader::Open((*repo)->ArchivePath(e.id()), &env);
      if (!a) return "catalog names an archive that is unreadable: " + a.error().message();
      if (EncodeHeader((*a)->header()) != EncodeHeader(e.header)) return "catalog entry disagrees with its archive";
    }
    for (const auto& [id, content] : acked.content) {
      if (!present.count(id)) {
        if (removing && *removing == id) continue;  // the interrupted removal took effect
        return "acknowledged backup " + id + " is gone";
      }
    }
    for (const CatalogEntry& e : (*repo)->entries()) {
      const std::string id = IdToHex(e.id());
      const Bytes* want = nullptr;
      if (acked.content.count(id)) want = &acked.content[id];
      else if (in_flight) want = &in_flight->second;  // the interrupted backup completed
      else return "backup " + id + " appeared from nowhere";
      auto chain = (*repo)->OpenChain(e.id());
      if (!chain) return "chain of " + id + ": " + chain.error().message();
      std::vector<const ArchiveReader*> c;
      for (auto& r : *chain) c.push_back(r.get());
      std::filesystem::remove(out);
      auto st = RunRestore(c, out, {});
      if (!st) return "restore of " + id + ": " + st.error().message();
      if (testing::ReadFileBytes(out) != *want) return "backup " + id + " restores to other bytes";
    }
    return "";
  }

  Id128 tracker_id_ = RandomId128();
  uint64_t seq_ = 0;
};

uint64_t EnvOr(const char* name, uint64_t def) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : def;
}

TEST(RepositoryPowerCut, AcknowledgedBackupsSurviveEveryCutPoint) {
  const uint64_t seed = testing::TestSeed();
  const uint64_t trials = EnvOr("STRATA_POWERCUT_TRIALS", 1000);
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::printf("seed %llu, %llu cut points\n", static_cast<unsigned long long>(seed),
              static_cast<unsigned long long>(trials));
  testing::TempDir dir;
  uint64_t calls_total = 0, backups_checked = 0;
  std::map<int, int> by_mode;
  for (uint64_t t = 0; t < trials; ++t) {
    const uint64_t tseed = seed * 1000003 + t;
    const int ops = 2 + static_cast<int>(tseed % 7);
    // Count the mutating calls of the whole history without a cut, then
    // replay it with the power cut at a random one of them.
    uint64_t total = 0;
    {
      Trial probe(dir.File("probe.raw"), tseed);
      ASSERT_TRUE(Repository::Init(probe.repo_dir, &probe.env).ok());
      uint64_t before = probe.env.MutatingCalls();
      probe.Run(ops);
      total = probe.env.MutatingCalls() - before;
    }
    if (total == 0) continue;
    Trial trial(dir.File("disk.raw"), tseed);
    ASSERT_TRUE(Repository::Init(trial.repo_dir, &trial.env).ok());
    const uint64_t cut = 1 + (tseed / 7) % total;
    trial.env.CutAfter(cut);
    trial.Run(ops);
    const int mode = static_cast<int>(t % 3);
    trial.env.PowerCut(static_cast<FaultEnv::CutMode>(mode));
    ++by_mode[mode];
    calls_total += total;
    std::string err = trial.Check(dir.File("out.raw"));
    ASSERT_EQ(err, "") << "trial " << t << " (seed " << tseed << "), " << ops << " operations, power cut at call "
                       << cut << " of " << total << ", mode " << mode;
    backups_checked += trial.acked.content.size();
  }
  std::printf("power cuts: %llu trials (strict %d, keep-names %d, keep-bytes %d), %llu mutating calls in the "
              "histories, %llu acknowledged backups restored and compared, 0 violations\n",
              static_cast<unsigned long long>(trials), by_mode[0], by_mode[1], by_mode[2],
              static_cast<unsigned long long>(calls_total), static_cast<unsigned long long>(backups_checked));
}

}  // namespace
}  // namespace strata
