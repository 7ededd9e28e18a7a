// Reflink snapshots on real file systems the test makes itself: loop-mounted
// XFS (mkfs.xfs -m reflink=1) and btrfs (plain, compress=zstd), as root.
// Skipped with the reason when not root, or when a loop device, mkfs or the
// mount is not available. Every mount and loop device is removed again on
// every path (RAII), and no other mount is touched.
//
// The main check is randomized: histories of writes (aligned, unaligned,
// overwrites of the same block), hole punches, fallocate, zero ranges,
// truncates and extends, with FICLONE snapshots in between. After each
// snapshot the diff between the previous snapshot and the new one must cover
// every byte in which the model's contents of the two differ; the snapshot's
// bytes must equal the model's. Over-report (reported / needed bytes) is
// printed. Seeds are printed; a failing history is shrunk to a minimal op list.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstring>
#include <filesystem>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "formats/raw/reflink.h"
#include "tests/loop_fs.h"
#include "tests/test_util.h"

namespace strata {
namespace {

using testing::LoopFs;
using testing::MakeBtrfs;
using testing::MakeXfs;
using testing::RunCommand;
using testing::ShellQuote;


// ---- histories ----

struct Op {
  enum Type { kWrite, kPunch, kFallocate, kFallocateKeep, kZeroRange, kTruncate, kSync, kClone };
  Type type;
  uint64_t off = 0, len = 0;
  uint64_t seed = 0;  // data of a write
};

std::string OpText(const Op& op) {
  static const char* names[] = {"write", "punch", "fallocate", "fallocate-keep-size",
                                "zero-range", "truncate", "fsync", "clone"};
  std::ostringstream os;
  os << names[op.type];
  if (op.type == Op::kTruncate) os << " " << op.off;
  else if (op.type != Op::kSync && op.type != Op::kClone) os << " " << op.off << "+" << op.len;
  return os.str();
}

std::string OpsText(const std::vector<Op>& ops) {
  std::string s;
  for (size_t i = 0; i < ops.size(); ++i) s += "  " + std::to_string(i) + ": " + OpText(ops[i]) + "\n";
  return s;
}

struct Config {
  std::string name;
  uint64_t max_size;  // files stay around this size
  bool compressible;  // low-entropy data (so btrfs compresses it)
  int histories;
  int ops_per_history;
  bool nocow = false;  // chattr +C on the directory (btrfs: writes in place when unshared)
};

std::vector<uint8_t> OpData(const Op& op, bool compressible) {
  std::vector<uint8_t> d(op.len);
  std::mt19937_64 r(op.seed);
  if (compressible) {
    static const char kText[] = "strata backs up virtual disks; ";
    for (size_t i = 0; i < d.size(); ++i) d[i] = static_cast<uint8_t>(kText[i % 31]);
    for (size_t i = 0; i < d.size(); i += 512) d[i] = static_cast<uint8_t>(r());
  } else {
    for (size_t i = 0; i < d.size(); i += 8) {
      uint64_t v = r();
      std::memcpy(d.data() + i, &v, std::min<size_t>(8, d.size() - i));
    }
  }
  return d;
}

std::vector<Op> RandomHistory(std::mt19937_64& rng, const Config& c) {
  std::vector<Op> ops;
  const uint64_t m = c.max_size;
  const uint64_t blk = 4096;
  auto aligned = [&](uint64_t span) { return (rng() % std::max<uint64_t>(1, span / blk)) * blk; };
  // Start with some data so there is something to share.
  ops.push_back({Op::kWrite, 0, m / 2 + rng() % (m / 2), rng()});
  std::vector<Op> writes = {ops.back()};
  for (int i = 0; i < c.ops_per_history; ++i) {
    Op op{Op::kWrite};
    op.seed = rng();
    switch (rng() % 16) {
      case 0: case 1: case 2:  // aligned write
        op.off = aligned(m);
        op.len = blk * (1 + rng() % 16);
        break;
      case 3: case 4:  // unaligned write
        op.off = rng() % m;
        op.len = 1 + rng() % std::min<uint64_t>(m, 70000);
        break;
      case 5: {  // overwrite (part of) an earlier write
        const Op& w = writes[rng() % writes.size()];
        op.off = w.off + (w.len > 1 ? rng() % w.len : 0);
        op.len = 1 + rng() % std::max<uint64_t>(1, std::min<uint64_t>(w.len, 16384));
        if (rng() % 2) {
          op.off = w.off & ~(blk - 1);
          op.len = blk;
        }
        break;
      }
      case 6:
        op.type = Op::kPunch;
        op.off = rng() % 2 ? aligned(m) : rng() % m;
        op.len = 1 + rng() % std::min<uint64_t>(m, 40000);
        break;
      case 7:
        op.type = rng() % 2 ? Op::kFallocate : Op::kFallocateKeep;
        op.off = rng() % (m + m / 4);
        op.len = 1 + rng() % std::min<uint64_t>(m, 40000);
        break;
      case 8:
        op.type = Op::kZeroRange;
        op.off = rng() % 2 ? aligned(m) : rng() % m;
        op.len = 1 + rng() % std::min<uint64_t>(m, 40000);
        break;
      case 9:
        op.type = Op::kTruncate;
        op.off = rng() % 2 ? aligned(m + m / 4) : rng() % (m + m / 4);
        break;
      case 10:
        op.type = Op::kSync;
        break;
      default:
        op.type = Op::kClone;
    }
    if (op.type == Op::kWrite) writes.push_back(op);
    ops.push_back(op);
  }
  ops.push_back({Op::kClone});
  return ops;
}

struct Tally {
  uint64_t diffs = 0;
  uint64_t needed_bytes = 0;    // blocks holding a differing byte
  uint64_t reported_bytes = 0;  // blocks the diff reported
  uint64_t changed_bytes = 0;   // bytes that actually differ
};

// Runs `ops` on a new file in a new directory under `root`. Returns "" or
// what went wrong. Adds to `tally`.
std::string RunHistory(const std::string& root, const std::vector<Op>& ops, const Config& c,
                       Granularity g, Tally* tally) {
  static int counter = 0;
  const std::string dir = root + "/h" + std::to_string(counter++);
  std::filesystem::create_directory(dir);
  if (c.nocow && RunCommand("chattr +C " + ShellQuote(dir)).exit_code != 0) {
    return "chattr +C " + dir + " failed";
  }
  struct Cleanup {
    std::string d;
    ~Cleanup() { std::filesystem::remove_all(d); }
  } cleanup{dir};
  const std::string live = dir + "/disk.raw";
  int fd = ::open(live.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return "open " + live + ": " + std::strerror(errno);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  std::vector<uint8_t> model, prev_model;
  std::string prev_clone;
  int clones = 0;
  for (size_t i = 0; i < ops.size(); ++i) {
    const Op& op = ops[i];
    const std::string where = "op " + std::to_string(i) + " (" + OpText(op) + "): ";
    int rc = 0;
    switch (op.type) {
      case Op::kWrite: {
        auto d = OpData(op, c.compressible);
        if (::pwrite(fd, d.data(), d.size(), static_cast<off_t>(op.off)) !=
            static_cast<ssize_t>(d.size())) {
          rc = -1;
          break;
        }
        if (model.size() < op.off + op.len) model.resize(op.off + op.len);
        std::copy(d.begin(), d.end(), model.begin() + static_cast<ptrdiff_t>(op.off));
        break;
      }
      case Op::kPunch:
        rc = ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                         static_cast<off_t>(op.off), static_cast<off_t>(op.len));
        if (rc == 0 && op.off < model.size()) {
          std::fill(model.begin() + static_cast<ptrdiff_t>(op.off),
                    model.begin() + static_cast<ptrdiff_t>(std::min<uint64_t>(op.off + op.len,
                                                                              model.size())),
                    0);
        }
        break;
      case Op::kFallocate:
      case Op::kFallocateKeep:
        rc = ::fallocate(fd, op.type == Op::kFallocateKeep ? FALLOC_FL_KEEP_SIZE : 0,
                         static_cast<off_t>(op.off), static_cast<off_t>(op.len));
        if (rc == 0 && op.type == Op::kFallocate && model.size() < op.off + op.len) {
          model.resize(op.off + op.len);
        }
        break;
      case Op::kZeroRange:
        rc = ::fallocate(fd, FALLOC_FL_ZERO_RANGE, static_cast<off_t>(op.off),
                         static_cast<off_t>(op.len));
        if (rc == 0) {
          if (model.size() < op.off + op.len) model.resize(op.off + op.len);
          std::fill(model.begin() + static_cast<ptrdiff_t>(op.off),
                    model.begin() + static_cast<ptrdiff_t>(op.off + op.len), 0);
        }
        break;
      case Op::kTruncate:
        rc = ::ftruncate(fd, static_cast<off_t>(op.off));
        if (rc == 0) model.resize(op.off);
        break;
      case Op::kSync:
        rc = ::fsync(fd);
        break;
      case Op::kClone: {
        const std::string snap = dir + "/snap" + std::to_string(clones++);
        Status s = CloneFile(live, snap);
        if (!s.ok()) return where + s.ToString();
        auto bytes = testing::ReadFileBytes(snap);
        if (bytes != model) {
          size_t k = 0;
          while (k < std::min(bytes.size(), model.size()) && bytes[k] == model[k]) ++k;
          return where + "snapshot differs from the model at byte " + std::to_string(k) +
                 " (snapshot " + std::to_string(bytes.size()) + " bytes, model " +
                 std::to_string(model.size()) + ")";
        }
        if (!prev_clone.empty()) {
          ReflinkDiffStats st;
          auto diff = ReflinkDiff(prev_clone, snap, g, &st);
          if (!diff) return where + "diff: " + diff.error().ToString();
          const uint64_t common = std::min(prev_model.size(), model.size());
          const uint64_t total = std::max(prev_model.size(), model.size());
          if (diff->disk_size() != total) {
            return where + "diff covers " + std::to_string(diff->disk_size()) + " bytes, want " +
                   std::to_string(total);
          }
          ExtentSet truth = *ExtentSet::Create(total, g);
          uint64_t changed = total - common;
          for (uint64_t k = 0; k < common;) {
            if (prev_model[k] == model[k]) {
              ++k;
              continue;
            }
            uint64_t run_end = k;
            while (run_end < common && prev_model[run_end] != model[run_end]) ++run_end;
            changed += run_end - k;
            // Every block touched by the run must be in the diff.
            if (!diff->ContainsRange(k, run_end - k)) {
              uint64_t miss = k;
              while (diff->Contains(miss)) ++miss;
              return where + "UNDER-REPORT: byte " + std::to_string(miss) + " differs (" +
                     std::to_string(prev_model[miss]) + " -> " + std::to_string(model[miss]) +
                     ") but the diff does not contain it";
            }
            (void)truth.Add(k, run_end - k);
            k = run_end;
          }
          if (total > common) {
            (void)truth.Add(common, total - common);
            if (!diff->ContainsRange(common, total - common)) {
              return where + "UNDER-REPORT: size tail [" + std::to_string(common) + ", " +
                     std::to_string(total) + ") not reported";
            }
          }
          tally->diffs++;
          tally->needed_bytes += truth.ByteCount();
          tally->reported_bytes += diff->ByteCount();
          tally->changed_bytes += changed;
          // As a backup would: the previous snapshot goes once the next exists.
          std::filesystem::remove(prev_clone);
        }
        prev_clone = snap;
        prev_model = model;
        break;
      }
    }
    if (rc != 0) return where + std::strerror(errno);
  }
  return "";
}

// Removes ops (halves, then smaller chunks, then single ops) while the
// history still fails.
std::vector<Op> Shrink(const std::string& root, std::vector<Op> ops, const Config& c,
                       Granularity g) {
  Tally ignored;
  for (size_t chunk = ops.size() / 2; chunk >= 1; chunk /= 2) {
    for (size_t start = 0; start + chunk <= ops.size();) {
      std::vector<Op> trial(ops.begin(), ops.begin() + static_cast<ptrdiff_t>(start));
      trial.insert(trial.end(), ops.begin() + static_cast<ptrdiff_t>(start + chunk), ops.end());
      if (!RunHistory(root, trial, c, g, &ignored).empty()) {
        ops = trial;
      } else {
        start += chunk;
      }
    }
    if (chunk == 1) break;
  }
  return ops;
}

void RunHistories(const LoopFs& fs, const Config& c) {
  const uint64_t seed = testing::TestSeed();
  std::printf("[%s] seed=%" PRIu64 " (rerun with STRATA_SEED=%" PRIu64 ")\n", c.name.c_str(),
              seed, seed);
  SCOPED_TRACE(c.name + " seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Tally tally;
  const uint64_t grans[] = {4096, 4096, 65536, 512};
  for (int h = 0; h < c.histories; ++h) {
    const Granularity g = *Granularity::FromBytes(grans[rng() % 4]);
    std::vector<Op> ops = RandomHistory(rng, c);
    std::string err = RunHistory(fs.mnt(), ops, c, g, &tally);
    if (!err.empty()) {
      std::vector<Op> small = Shrink(fs.mnt(), ops, c, g);
      Tally ignored;
      std::string small_err = RunHistory(fs.mnt(), small, c, g, &ignored);
      FAIL() << c.name << " history " << h << " (granularity " << g.bytes() << "): " << err
             << "\nshrunk to " << small.size() << " ops (" << small_err << "):\n"
             << OpsText(small);
    }
  }
  const double ratio = tally.needed_bytes
                           ? static_cast<double>(tally.reported_bytes) /
                                 static_cast<double>(tally.needed_bytes)
                           : 0.0;
  std::printf("[%s] %d histories, %" PRIu64 " diffs: changed %" PRIu64 " B, needed %" PRIu64
              " B (granularity blocks), reported %" PRIu64 " B, over-report %.3fx\n",
              c.name.c_str(), c.histories, tally.diffs, tally.changed_bytes, tally.needed_bytes,
              tally.reported_bytes, ratio);
  ::testing::Test::RecordProperty("over_report_x1000", static_cast<int>(ratio * 1000));
  EXPECT_GT(tally.diffs, 0u);
}

TEST(ReflinkHistory, Xfs) {
  testing::TempDir dir;
  std::unique_ptr<LoopFs> fs(MakeXfs(dir));
  if (!fs->skip().empty()) GTEST_SKIP() << fs->skip();
  RunHistories(*fs, {"xfs", 4 << 20, false, 30, 40});
  RunHistories(*fs, {"xfs-small", 3000, false, 25, 30});
}

TEST(ReflinkHistory, Btrfs) {
  testing::TempDir dir;
  std::unique_ptr<LoopFs> fs(MakeBtrfs(dir, ""));
  if (!fs->skip().empty()) GTEST_SKIP() << fs->skip();
  RunHistories(*fs, {"btrfs", 4 << 20, false, 30, 40});
  // Files under max_inline (2048 bytes) get inline extents.
  RunHistories(*fs, {"btrfs-small-inline", 3000, false, 25, 30});
}

// VM images on btrfs are usually NOCOW (libvirt sets it on pool
// directories): unshared extents are then overwritten in place, shared ones
// must still be copied.
TEST(ReflinkHistory, BtrfsNocow) {
  if (!testing::HaveCommand("chattr")) GTEST_SKIP() << "chattr not installed";
  testing::TempDir dir;
  std::unique_ptr<LoopFs> fs(MakeBtrfs(dir, ""));
  if (!fs->skip().empty()) GTEST_SKIP() << fs->skip();
  RunHistories(*fs, {"btrfs-nocow", 4 << 20, false, 25, 40, true});
}

TEST(ReflinkHistory, BtrfsCompressZstd) {
  testing::TempDir dir;
  std::unique_ptr<LoopFs> fs(MakeBtrfs(dir, "compress=zstd"));
  if (!fs->skip().empty()) GTEST_SKIP() << fs->skip();
  RunHistories(*fs, {"btrfs-zstd", 4 << 20, true, 25, 40});
  RunHistories(*fs, {"btrfs-zstd-small-inline", 3000, true, 25, 30});
}

// ---- exact answers and errors ----

void WriteAt(const std::string& path, uint64_t off, uint64_t len, uint8_t byte) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0) << path;
  std::vector<uint8_t> d(len, byte);
  ASSERT_EQ(::pwrite(fd, d.data(), d.size(), static_cast<off_t>(off)),
            static_cast<ssize_t>(len));
  ::close(fd);
}

// More extents than one FIEMAP call returns (1024): every other 4 KiB block
// written, then a few rewritten; the diff is exactly those blocks.
TEST(Reflink, ManyExtentsAcrossFiemapBatches) {
  testing::TempDir dir;
  std::unique_ptr<LoopFs> fs(MakeXfs(dir));
  if (!fs->skip().empty()) GTEST_SKIP() << fs->skip();
  const std::string live = fs->mnt() + "/disk.raw";
  const uint64_t kBlocks = 6000;
  {
    int fd = ::open(live.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(kBlocks * 4096)), 0);
    std::vector<uint8_t> d(4096, 7);
    for (uint64_t b = 0; b < kBlocks; b += 2) {
      ASSERT_EQ(::pwrite(fd, d.data(), d.size(), static_cast<off_t>(b * 4096)), 4096);
    }
    ::close(fd);
  }
  const std::string s1 = fs->mnt() + "/s1", s2 = fs->mnt() + "/s2";
  ASSERT_TRUE(CloneFile(live, s1).ok());
  uint64_t size = 0;
  auto map = ReadExtentMap(s1, &size);
  ASSERT_TRUE(map.has_value()) << map.error().ToString();
  EXPECT_EQ(size, kBlocks * 4096);
  EXPECT_GE(map->size(), kBlocks / 2) << "XFS merged the extents; the batch loop is untested";
  const uint64_t rewritten[] = {0, 2, 3, 2048, 4001, 5998, 5999};
  for (uint64_t b : rewritten) WriteAt(live, b * 4096, 4096, 9);
  ASSERT_TRUE(CloneFile(live, s2).ok());
  ReflinkDiffStats st;
  auto diff = ReflinkDiff(s1, s2, *Granularity::FromBytes(4096), &st);
  ASSERT_TRUE(diff.has_value()) << diff.error().ToString();
  ExtentSet want = *ExtentSet::Create(kBlocks * 4096, 4096);
  for (uint64_t b : rewritten) ASSERT_TRUE(want.Add(b * 4096, 4096).ok());
  EXPECT_EQ(diff->ToExtents(), want.ToExtents());
  EXPECT_GT(st.old_extents, 1024u);
}

TEST(Reflink, ExtentDumpPrintsTheChangedRuns) {
  testing::TempDir dir;
  std::unique_ptr<LoopFs> fs(MakeXfs(dir));
  if (!fs->skip().empty()) GTEST_SKIP() << fs->skip();
  const std::string live = fs->mnt() + "/disk.raw";
  WriteAt(live, 0, 4 << 20, 1);
  const std::string s1 = fs->mnt() + "/s1", s2 = fs->mnt() + "/s2";
  ASSERT_TRUE(CloneFile(live, s1).ok());
  WriteAt(live, 1 << 20, 65536, 2);
  WriteAt(live, (3 << 20) + 100, 10, 3);  // unaligned: its 64 KiB block
  ASSERT_TRUE(CloneFile(live, s2).ok());
  const std::string tool = testing::Tool("extent-dump");
  auto r = RunCommand(tool + " --reflink-diff " + ShellQuote(s1) + " " + ShellQuote(s2) +
                      " --output json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out),
            nlohmann::json::parse(R"([{"start": 1048576, "length": 65536}, {"start": 3145728, "length": 65536}])"))
      << r.out;
  r = RunCommand(tool + " --reflink-diff " + ShellQuote(s1) + " " + ShellQuote(s2) +
                 " --granularity 4K");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("68 KiB in 2 runs"), std::string::npos) << r.out;
  // Two files on different file systems: one line, exit 1.
  testing::TempDir other;
  const std::string elsewhere = other.File("x");
  WriteAt(elsewhere, 0, 4096, 1);
  r = RunCommand(tool + " --reflink-diff " + ShellQuote(s1) + " " + ShellQuote(elsewhere));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not on the file system of"), std::string::npos) << r.err;
  r = RunCommand(tool + " --reflink-diff " + ShellQuote(s1));
  EXPECT_EQ(r.exit_code, 2) << r.err;
}

// Files left in `dir` (clones must leave no temporary behind on failure).
std::vector<std::string> Listing(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    names.push_back(e.path().filename());
  }
  std::sort(names.begin(), names.end());
  return names;
}

TEST(Reflink, CloneRefusesWithoutReflinkSupport) {
  testing::TempDir dir;
  LoopFs fs(dir.path(), "xfs-noreflink", "mkfs.xfs -q -m reflink=0", "");
  if (!fs.skip().empty()) GTEST_SKIP() << fs.skip();
  const std::string live = fs.mnt() + "/disk.raw";
  WriteAt(live, 0, 65536, 1);
  auto before = Listing(fs.mnt());
  Status s = CloneFile(live, fs.mnt() + "/snap");
  EXPECT_EQ(s.code(), StatusCode::kUnsupported) << s.ToString();
  EXPECT_NE(s.message().find("no reflink support"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find(live), std::string::npos) << s.ToString();
  EXPECT_EQ(Listing(fs.mnt()), before);
}

TEST(Reflink, CloneRefusesAnotherFileSystemAndExistingSnapshots) {
  testing::TempDir dir;
  std::unique_ptr<LoopFs> xfs(MakeXfs(dir));
  if (!xfs->skip().empty()) GTEST_SKIP() << xfs->skip();
  std::unique_ptr<LoopFs> btrfs(MakeBtrfs(dir, ""));
  if (!btrfs->skip().empty()) GTEST_SKIP() << btrfs->skip();
  const std::string live = xfs->mnt() + "/disk.raw";
  WriteAt(live, 0, 65536, 1);
  auto before = Listing(btrfs->mnt());
  Status s = CloneFile(live, btrfs->mnt() + "/snap");
  EXPECT_EQ(s.code(), StatusCode::kUnsupported) << s.ToString();
  EXPECT_NE(s.message().find("another file system"), std::string::npos) << s.ToString();
  EXPECT_EQ(Listing(btrfs->mnt()), before);

  const std::string snap = xfs->mnt() + "/snap";
  ASSERT_TRUE(CloneFile(live, snap).ok());
  before = Listing(xfs->mnt());
  s = CloneFile(live, snap);
  EXPECT_EQ(s.code(), StatusCode::kAlreadyExists) << s.ToString();
  EXPECT_EQ(Listing(xfs->mnt()), before);
  // The clone is a real, independent copy.
  WriteAt(live, 0, 4096, 2);
  EXPECT_EQ(testing::ReadFileBytes(snap), std::vector<uint8_t>(65536, 1));
  EXPECT_EQ(CloneFile(xfs->mnt(), xfs->mnt() + "/d").code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace strata
