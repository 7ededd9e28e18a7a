// The backup and restore pipelines over randomized write histories: every
// point of a chain restores byte-identically; --scan finds exactly the
// changed chunks; a read error aborts cleanly.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <random>

#include "strata/pipeline.h"
#include "strata/env.h"
#include "strata/open_image.h"
#include "engine/backup/pipeline_internal.h"
#include "formats/raw/raw_image.h"
#include "tests/test_util.h"

namespace strata {
namespace {

// Not a multiple of the chunk, nor of the 4 KiB O_DIRECT alignment: the
// restore writes the tail through the page cache.
constexpr uint64_t kDisk = (16 << 20) + 12800;

// Random writes to `path` (data, zeros, discards); adds them to `changed`.
void RandomWrites(const std::string& path, std::mt19937_64& rng, ExtentSet* changed, int n) {
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  std::vector<uint8_t> buf;
  for (int i = 0; i < n; ++i) {
    uint64_t len = 512 * (1 + rng() % 512);
    uint64_t off = (rng() % (kDisk - len)) & ~uint64_t{511};
    buf.resize(len);
    int kind = static_cast<int>(rng() % 4);
    for (auto& b : buf) b = kind == 0 ? 0 : static_cast<uint8_t>(kind == 1 ? rng() : 'a' + rng() % 4);
    ASSERT_EQ(::pwrite(fd, buf.data(), len, static_cast<off_t>(off)), static_cast<ssize_t>(len));
    ASSERT_TRUE(changed->Add(off, len).ok());
  }
  ::close(fd);
}

struct Point {
  ArchiveId id;
  std::vector<uint8_t> image;
};

std::vector<const ArchiveReader*> ChainOf(const std::vector<std::unique_ptr<ArchiveReader>>& all,
                                          size_t newest) {
  std::vector<const ArchiveReader*> c;
  for (size_t i = newest + 1; i-- > 0;) {
    c.push_back(all[i].get());
    if (all[i]->header().is_full()) break;
  }
  return c;
}

class PipelineTest : public ::testing::TestWithParam<int> {};

TEST_P(PipelineTest, RandomHistoriesRestoreEveryPoint) {
  const uint64_t seed = testing::TestSeed() + static_cast<uint64_t>(GetParam());
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  testing::TempDir dir;
  const std::string disk = dir.File("disk.raw");
  { int fd = ::open(disk.c_str(), O_CREAT | O_RDWR, 0644); ASSERT_EQ(::ftruncate(fd, kDisk), 0); ::close(fd); }
  // 512-byte blocks make extents that O_DIRECT cannot write whole: their
  // unaligned heads and tails go through the page cache.
  Granularity g = *Granularity::FromBytes(GetParam() == 3 ? 512 : GetParam() % 2 ? 4096 : 65536);
  PipelineOptions opt;
  opt.direct_io = GetParam() != 2;
  opt.chunk_size = GetParam() % 3 == 0 ? (256 << 10) : (1 << 20);
  opt.queue_depth = 1 + static_cast<unsigned>(rng() % 32);
  opt.workers = 1 + static_cast<unsigned>(rng() % 3);
  opt.coalesce_gap = rng() % 2 ? 0 : (128 << 10);
  // A small memory bound now and then: two backup slots, and a restore pool
  // so small that its frames refill it 8 times over (huge-page buffers).
  if (rng() % 3 == 0) opt.memory_limit = 4 << 20;
  SCOPED_TRACE("queue_depth=" + std::to_string(opt.queue_depth) + " workers=" + std::to_string(opt.workers) +
               " memory_limit=" + std::to_string(opt.memory_limit));
  std::vector<std::unique_ptr<ArchiveReader>> archives;
  std::vector<Point> points;
  ExtentSet changed = *ExtentSet::Create(kDisk, g);
  RandomWrites(disk, rng, &changed, 40);
  // Tens of generations for two histories, a dozen for the others (time).
  // Never fewer than 8: the merge below folds archive 5 into 6.
  const int generations = std::max(8, (GetParam() < 2 ? 24 : 12) / testing::kSanitizerSlowdown);
  for (int gen = 0; gen < generations; ++gen) {
    auto img = OpenImage(disk);
    ASSERT_TRUE(img.has_value());
    ArchiveHeader h;
    h.id = NewArchiveId();
    h.created_unix_ns = static_cast<uint64_t>(gen + 1);
    const ScanBaseline* scan = nullptr;
    std::unique_ptr<ScanBaseline> baseline;
    Result<ExtentSet> set = changed;
    if (gen == 0) {
      set = AllocatedExtents(**img, g, true);
      ASSERT_TRUE(set.has_value());
    } else {
      h.parent_id = archives.back()->header().id;
      h.parent_identity = IdentityCheck(archives.back()->header());
      if (gen % 4 == 3) {  // every fourth backup scans instead of using the changes
        h.source = SourceKind::kScan;
        auto b = ScanBaseline::Build(ChainOf(archives, archives.size() - 1));
        ASSERT_TRUE(b.has_value()) << b.error().ToString();
        baseline = std::make_unique<ScanBaseline>(std::move(*b));
        scan = baseline.get();
        set = ExtentSet::Create(kDisk, g);
        ASSERT_TRUE(set->AddBlocks({0, set->disk_blocks()}).ok());
      } else {
        h.source = SourceKind::kTracker;
      }
    }
    std::string path = dir.File(IdToHex(h.id) + ".sar");
    auto stats = RunBackup(**img, *set, h, path, opt, scan);
    ASSERT_TRUE(stats.has_value()) << stats.error().ToString();
    if (scan) {
      // Scan never stores more than the disk and skips what it can prove
      // unchanged (it may re-store chunks whose older extents were partly
      // overwritten later: over-report, never under-report).
      EXPECT_LE(stats->data_bytes + stats->zero_bytes + stats->skipped_bytes, kDisk);
    }
    auto r = ArchiveReader::Open(path);
    ASSERT_TRUE(r.has_value()) << r.error().ToString();
    ASSERT_TRUE(VerifyArchive(**r).ok());
    archives.push_back(std::move(*r));
    points.push_back({h.id, testing::ReadFileBytes(disk)});
    changed.Clear();
    RandomWrites(disk, rng, &changed, 5 + static_cast<int>(rng() % 30));
  }
  // Every point restores to exactly the image as it was.
  for (size_t p = 0; p < points.size(); ++p) {
    std::string out = dir.File("restore.raw");
    auto chain = ChainOf(archives, p);
    auto st = RunRestore(chain, out, opt);
    ASSERT_TRUE(st.has_value()) << st.error().ToString();
    auto got = testing::ReadFileBytes(out);
    // The raw image's virtual size is its length (a multiple of 512 here).
    ASSERT_EQ(got.size(), points[p].image.size()) << "point " << p;
    ASSERT_TRUE(got == points[p].image) << "point " << p << " differs";
    EXPECT_EQ(st->data_bytes + st->zero_bytes, kDisk);
  }
  // Offline merge: fold archive 5 into 6, then the full (0) into 1. Every
  // point that remains restores as before, and the rewritten archives keep
  // their identity so later archives still chain onto them.
  for (size_t removed : {size_t{5}, size_t{0}}) {
    size_t child = removed + 1;
    auto chain = ChainOf(archives, child);
    ASSERT_EQ(chain[1], archives[removed].get());
    std::string child_path = dir.File(IdToHex(archives[child]->header().id) + ".sar");
    auto st = FoldIntoChild(chain, child_path, opt);
    ASSERT_TRUE(st.has_value()) << st.error().ToString();
    archives[child] = *ArchiveReader::Open(child_path);
    ASSERT_TRUE(VerifyArchive(*archives[child]).ok());
    EXPECT_EQ(archives[child]->header().is_full(), removed == 0);
    archives.erase(archives.begin() + static_cast<long>(removed));
    points.erase(points.begin() + static_cast<long>(removed));
  }
  for (size_t p = 0; p < points.size(); ++p) {
    std::string out = dir.File("merged.raw");
    auto st = RunRestore(ChainOf(archives, p), out, opt);
    ASSERT_TRUE(st.has_value()) << st.error().ToString();
    ASSERT_TRUE(testing::ReadFileBytes(out) == points[p].image) << "after merge, point " << p;
  }
}

INSTANTIATE_TEST_SUITE_P(Histories, PipelineTest, ::testing::Range(0, 4));

// Both kinds of buffer arena hand out distinct, O_DIRECT-aligned, writable
// buffers of at least the size asked for.
TEST(BufferArena, BuffersAreAlignedDistinctAndWritable) {
  for (bool huge : {false, true}) {
    for (size_t count : {size_t{1}, size_t{3}, size_t{37}}) {
      internal::BufferArena a(count, (1 << 20) + 100, huge);
      ASSERT_EQ(a.size(), count);
      for (size_t i = 0; i < count; ++i) {
        std::span<uint8_t> b = a[i];
        EXPECT_GE(b.size(), (1u << 20) + 100);
        EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % internal::kDirectAlign, 0u) << "huge=" << huge;
        std::fill(b.begin(), b.end(), static_cast<uint8_t>(i));
      }
      for (size_t i = 0; i < count; ++i) {
        std::span<uint8_t> b = a[i];
        EXPECT_EQ(b.front(), static_cast<uint8_t>(i));
        EXPECT_EQ(b.back(), static_cast<uint8_t>(i)) << "buffer " << i << " overlaps the next";
      }
    }
  }
  internal::BufferArena empty(0, 4096, true);
  EXPECT_EQ(empty.size(), 0u);
}

// An image whose Nth read fails.
class FailingImage : public Image {
 public:
  FailingImage(std::unique_ptr<Image> base, int fail_at) : base_(std::move(base)), fail_at_(fail_at) {}
  const std::string& name() const override { return base_->name(); }
  std::string_view format() const override { return "failing"; }
  uint64_t size() const override { return base_->size(); }
  Status Read(uint64_t offset, std::span<uint8_t> buf) override {
    if (++reads_ == fail_at_) return Status::FromErrno(EIO, name() + ": read at " + std::to_string(offset));
    return base_->Read(offset, buf);
  }
  Status BlockStatus(uint64_t o, uint64_t l, std::vector<MapEntry>* out) override {
    return base_->BlockStatus(o, l, out);
  }

 private:
  std::unique_ptr<Image> base_;
  int fail_at_, reads_ = 0;
};

TEST(Pipeline, ReadErrorAbortsWithoutLeavingAnArchive) {
  testing::TempDir dir;
  std::mt19937_64 rng(3);
  const std::string disk = dir.File("disk.raw");
  { int fd = ::open(disk.c_str(), O_CREAT | O_RDWR, 0644); ASSERT_EQ(::ftruncate(fd, kDisk), 0); ::close(fd); }
  ExtentSet all = *ExtentSet::Create(kDisk, 65536);
  RandomWrites(disk, rng, &all, 50);
  ASSERT_TRUE(all.AddBlocks({0, all.disk_blocks()}).ok());
  for (int fail_at : {1, 3, 9}) {
    FailingImage img(*OpenRawImage(disk), fail_at);
    ArchiveHeader h;
    h.id = NewArchiveId();
    std::string path = dir.File("a.sar");
    PipelineOptions opt;
    opt.chunk_size = 256 << 10;
    auto st = RunBackup(img, all, h, path, opt);
    ASSERT_FALSE(st.has_value());
    EXPECT_EQ(st.error().code(), StatusCode::kIoError);
    EXPECT_NE(st.error().message().find(disk), std::string::npos);
    // Only the disk remains: no archive, no temporary.
    int files = 0;
    for (auto& e : std::filesystem::directory_iterator(dir.path())) { (void)e; ++files; }
    EXPECT_EQ(files, 1);
  }
}

TEST(Pipeline, ScanStoresExactlyTheChangedChunks) {
  testing::TempDir dir;
  std::mt19937_64 rng(testing::TestSeed());
  const std::string disk = dir.File("disk.raw");
  { int fd = ::open(disk.c_str(), O_CREAT | O_RDWR, 0644); ASSERT_EQ(::ftruncate(fd, kDisk), 0); ::close(fd); }
  ExtentSet ignored = *ExtentSet::Create(kDisk, 65536);
  RandomWrites(disk, rng, &ignored, 60);
  PipelineOptions opt;
  opt.chunk_size = 1 << 20;
  std::vector<std::unique_ptr<ArchiveReader>> chain;
  auto backup = [&](bool full) -> BackupStats {
    auto img = OpenImage(disk);
    ArchiveHeader h;
    h.id = NewArchiveId();
    ExtentSet set = *ExtentSet::Create(kDisk, 65536);
    EXPECT_TRUE(set.AddBlocks({0, set.disk_blocks()}).ok());
    std::unique_ptr<ScanBaseline> b;
    if (!full) {
      h.parent_id = chain.back()->header().id;
      h.parent_identity = IdentityCheck(chain.back()->header());
      std::vector<const ArchiveReader*> c;
      for (auto it = chain.rbegin(); it != chain.rend(); ++it) c.push_back(it->get());
      b = std::make_unique<ScanBaseline>(*ScanBaseline::Build(c));
    }
    std::string p = dir.File(IdToHex(h.id));
    auto st = RunBackup(**img, set, h, p, opt, b.get());
    EXPECT_TRUE(st.has_value());
    chain.push_back(*ArchiveReader::Open(p));
    return *st;
  };
  backup(true);
  BackupStats none = backup(false);  // nothing changed
  EXPECT_EQ(none.data_bytes + none.zero_bytes, 0u);
  EXPECT_EQ(none.skipped_bytes, kDisk);
  int fd = ::open(disk.c_str(), O_RDWR);
  std::vector<uint8_t> b(4096, 0x5a);
  ASSERT_EQ(::pwrite(fd, b.data(), b.size(), (5 << 20) + 8192), 4096);
  ::close(fd);
  BackupStats one = backup(false);  // one block in one chunk changed
  EXPECT_EQ(one.data_bytes + one.zero_bytes, uint64_t{1} << 20);
  BackupStats again = backup(false);  // scan after scan: the new chunk is whole
  EXPECT_EQ(again.data_bytes + again.zero_bytes, 0u);
}

TEST(Pipeline, ChainChecksRefuseWrongParents) {
  testing::TempDir dir;
  const std::string disk = dir.File("disk.raw");
  { int fd = ::open(disk.c_str(), O_CREAT | O_RDWR, 0644); ASSERT_EQ(::ftruncate(fd, 1 << 20), 0); ::close(fd); }
  auto img = OpenImage(disk);
  ExtentSet set = *ExtentSet::Create(1 << 20, 65536);
  ASSERT_TRUE(set.Add(0, 1 << 20).ok());
  auto make = [&](const ArchiveReader* parent) {
    ArchiveHeader h;
    h.id = NewArchiveId();
    if (parent) {
      h.parent_id = parent->header().id;
      h.parent_identity = IdentityCheck(parent->header());
    }
    std::string p = dir.File(IdToHex(h.id));
    EXPECT_TRUE(RunBackup(**img, set, h, p, {}).has_value());
    return *ArchiveReader::Open(p);
  };
  auto full1 = make(nullptr), full2 = make(nullptr);
  auto inc = make(full1.get());
  EXPECT_TRUE(CheckChain({inc.get(), full1.get()}).ok());
  Status s = CheckChain({inc.get(), full2.get()});
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_EQ(CheckChain({inc.get()}).code(), StatusCode::kNotFound);
  EXPECT_FALSE(RunRestore({inc.get(), full2.get()}, dir.File("o"), {}).has_value());
}

// Issue 11: the archive's storage fails (power gone, disk full) while reads
// are in flight through io_uring; every read is reaped before its buffer is
// freed (ASan reports it otherwise), and no archive appears.
TEST(Pipeline, FailedArchiveWriteReapsReadsInFlight) {
  testing::TempDir dir;
  const std::string disk = dir.File("disk.raw");
  std::mt19937_64 rng(testing::TestSeed());
  {
    std::vector<uint8_t> data(48 << 20);
    for (auto& b : data) b = static_cast<uint8_t>(rng() % 7);  // compressible, not zero
    testing::WriteFileBytes(disk, data);
  }
  auto img = OpenImage(disk);
  ASSERT_TRUE(img.has_value());
  ExtentSet set = *ExtentSet::Create((*img)->size(), Granularity::Default());
  ASSERT_TRUE(set.AddBlocks({0, set.disk_blocks()}).ok());
  for (uint64_t cut : {1, 2, 3, 5, 8}) {
    FaultEnv env;
    ASSERT_TRUE(env.MakeDir("/a").ok());
    PipelineOptions opt;
    opt.env = &env;
    opt.queue_depth = 32;
    opt.chunk_size = 256 << 10;  // many reads in flight per archive write
    env.CutAfter(cut);
    ArchiveHeader h;
    h.id = NewArchiveId();
    auto st = RunBackup(**img, set, h, "/a/x.sar", opt);
    ASSERT_FALSE(st.has_value()) << "cut " << cut;
    env.PowerCut();
    auto names = env.ListDir("/a");
    EXPECT_TRUE(!names || names->empty()) << "cut " << cut;
  }
}

// Issue 11: a source that shrinks while it is read is an error, not an
// archive of zeros; the same for one that grows.
TEST(Pipeline, SourceThatChangesSizeIsRefused) {
  for (bool grow : {false, true}) {
    for (bool direct : {true, false}) {
      testing::TempDir dir;
      const std::string disk = dir.File("disk.raw");
      std::vector<uint8_t> data(32 << 20, 0x5a);
      testing::WriteFileBytes(disk, data);
      auto img = OpenImage(disk);
      ASSERT_TRUE(img.has_value());
      ExtentSet set = *ExtentSet::Create((*img)->size(), Granularity::Default());
      ASSERT_TRUE(set.AddBlocks({0, set.disk_blocks()}).ok());
      PipelineOptions opt;
      opt.direct_io = direct;
      opt.queue_depth = 2;
      opt.chunk_size = 1 << 20;
      bool changed = false;
      opt.progress = [&](uint64_t, uint64_t) {
        if (!changed) {
          changed = true;
          EXPECT_EQ(::truncate(disk.c_str(), grow ? (40 << 20) : (5 << 20)), 0);
        }
      };
      ArchiveHeader h;
      h.id = NewArchiveId();
      const std::string archive = dir.File("a.sar");
      auto st = RunBackup(**img, set, h, archive, opt);
      ASSERT_FALSE(st.has_value()) << "grow " << grow << " direct " << direct;
      EXPECT_NE(st.error().message().find(disk), std::string::npos) << st.error().message();
      EXPECT_FALSE(std::filesystem::exists(archive));
    }
  }
}

// Issue 10: CheckChain refuses a child whose start point is not its
// parent's end point, or whose disk differs.
TEST(Pipeline, ChainChecksRefuseMismatchedPoints) {
  testing::TempDir dir;
  const std::string disk = dir.File("disk.raw");
  { int fd = ::open(disk.c_str(), O_CREAT | O_RDWR, 0644); ASSERT_EQ(::ftruncate(fd, 1 << 20), 0); ::close(fd); }
  auto img = OpenImage(disk);
  ExtentSet set = *ExtentSet::Create(1 << 20, 65536);
  ASSERT_TRUE(set.Add(0, 1 << 20).ok());
  const Id128 d1 = RandomId128(), d2 = RandomId128();
  ChainPoint c1{PointKind::kTracker, RandomId128(), 4, "c1"};
  ChainPoint c2 = c1;
  c2.seq = 5;
  c2.name = "c2";
  auto make = [&](const ArchiveReader* parent, const Id128& disk_id, const ChainPoint& start, const ChainPoint& end) {
    ArchiveHeader h;
    h.id = NewArchiveId();
    h.disk_id = disk_id;
    h.start = start;
    h.end = end;
    if (parent) {
      h.parent_id = parent->header().id;
      h.parent_identity = IdentityCheck(parent->header());
    }
    std::string p = dir.File(IdToHex(h.id));
    EXPECT_TRUE(RunBackup(**img, set, h, p, {}).has_value());
    return *ArchiveReader::Open(p);
  };
  auto full = make(nullptr, d1, {}, c1);
  auto good = make(full.get(), d1, c1, c2);
  EXPECT_TRUE(CheckChain({good.get(), full.get()}).ok());
  auto wrong_start = make(full.get(), d1, c2, c2);
  EXPECT_EQ(CheckChain({wrong_start.get(), full.get()}).code(), StatusCode::kCorruption);
  auto wrong_disk = make(full.get(), d2, c1, c2);
  EXPECT_EQ(CheckChain({wrong_disk.get(), full.get()}).code(), StatusCode::kCorruption);
  EXPECT_FALSE(RunRestore({wrong_start.get(), full.get()}, dir.File("o"), {}).has_value());
  EXPECT_FALSE(std::filesystem::exists(dir.File("o")));  // a failed restore leaves no output
}

}  // namespace
}  // namespace strata
