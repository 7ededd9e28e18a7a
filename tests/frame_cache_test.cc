// FrameCache and ChainImage (engine/backup/frame_cache.h, chain_image.h):
// the cache against a naive LRU model over random operations; many threads
// getting the same frames (each frame loaded by one thread at a time, every
// waiter sharing its result or its error); a served chain read at random by
// many threads at several cache sizes, byte for byte against the disk at
// each point; flipped archive bytes reported as corruption. Also built and
// run under ThreadSanitizer (label tsan).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <list>
#include <map>
#include <random>
#include <thread>

#include "engine/backup/chain_image.h"
#include "engine/backup/frame_cache.h"
#include "strata/pipeline.h"
#include "strata/open_image.h"
#include "tests/test_util.h"

namespace strata {
namespace {

FramePtr MakeFrame(uint64_t key, size_t size) {
  auto f = std::make_shared<FrameData>(size);
  for (size_t i = 0; i < size; ++i) f->bytes[i] = static_cast<uint8_t>(key * 31 + i);
  return f;
}

bool FrameIs(const FramePtr& f, uint64_t key, size_t size) {
  if (f->size != size) return false;
  for (size_t i = 0; i < size; ++i) {
    if (f->bytes[i] != static_cast<uint8_t>(key * 31 + i)) return false;
  }
  return true;
}

// Random Gets against a model: an LRU list with the same byte bound. Hits,
// misses, evictions and the resident set agree after every step.
TEST(FrameCache, MatchesAnLruModel) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 20; ++round) {
    const uint64_t capacity = rng() % 5000;
    FrameCache cache(capacity);
    std::list<std::pair<uint64_t, size_t>> model;  // most recent first
    uint64_t model_bytes = 0, hits = 0, misses = 0, evictions = 0;
    std::map<uint64_t, size_t> sizes;  // a key always has the same size
    for (int step = 0; step < 2000; ++step) {
      uint64_t key = rng() % 40;
      if (!sizes.count(key)) sizes[key] = 1 + rng() % 700;
      size_t size = sizes[key];
      int loads = 0;
      auto r = cache.Get(key, [&]() -> Result<FramePtr> {
        ++loads;
        return MakeFrame(key, size);
      });
      ASSERT_TRUE(r.has_value());
      ASSERT_TRUE(FrameIs(*r, key, size)) << "key " << key;
      auto it = std::find_if(model.begin(), model.end(), [&](auto& p) { return p.first == key; });
      if (it != model.end()) {
        ++hits;
        ASSERT_EQ(loads, 0) << "step " << step;
        model.splice(model.begin(), model, it);
      } else {
        ++misses;
        ASSERT_EQ(loads, 1) << "step " << step;
        if (size <= capacity) {
          model.emplace_front(key, size);
          model_bytes += size;
          while (model_bytes > capacity) {
            model_bytes -= model.back().second;
            model.pop_back();
            ++evictions;
          }
        }
      }
      FrameCacheStats s = cache.stats();
      ASSERT_EQ(s.hits, hits);
      ASSERT_EQ(s.misses, misses);
      ASSERT_EQ(s.evictions, evictions);
      ASSERT_EQ(s.resident_bytes, model_bytes);
      ASSERT_LE(s.resident_bytes, capacity);
      ASSERT_EQ(s.resident_frames, model.size());
      if (step % 97 == 0) {
        for (uint64_t k = 0; k < 40; ++k) {
          bool in_model = std::any_of(model.begin(), model.end(), [&](auto& p) { return p.first == k; });
          ASSERT_EQ(cache.Contains(k), in_model) << "key " << k;
        }
      }
    }
  }
}

// Many threads, few keys, slow loads: a key is never loaded by two threads
// at once, every caller gets the right bytes, and every Get is counted once
// as a hit, a wait or a miss.
TEST(FrameCache, ConcurrentGetsShareOneLoad) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  for (uint64_t capacity : {uint64_t{0}, uint64_t{3000}, uint64_t{1} << 20}) {
    FrameCache cache(capacity);
    constexpr int kKeys = 12, kThreads = 8, kGets = 1500;
    std::atomic<int> loading[kKeys] = {};
    std::atomic<bool> overlap{false}, wrong{false};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        std::mt19937_64 rng(seed + static_cast<uint64_t>(t));
        for (int i = 0; i < kGets; ++i) {
          uint64_t key = rng() % kKeys;
          size_t size = 500 + key * 10;
          auto r = cache.Get(key, [&]() -> Result<FramePtr> {
            if (loading[key].fetch_add(1) != 0) overlap = true;
            std::this_thread::sleep_for(std::chrono::microseconds(rng() % 50));
            loading[key].fetch_sub(1);
            return MakeFrame(key, size);
          });
          if (!r.has_value() || !FrameIs(*r, key, size)) wrong = true;
        }
      });
    }
    for (auto& th : threads) th.join();
    EXPECT_FALSE(overlap) << "a frame was loaded by two threads at once (capacity " << capacity << ")";
    EXPECT_FALSE(wrong);
    FrameCacheStats s = cache.stats();
    EXPECT_EQ(s.hits + s.waits + s.misses, uint64_t{kThreads} * kGets);
    EXPECT_LE(s.resident_bytes, capacity);
    if (capacity == 0) {
      EXPECT_EQ(s.hits, 0u);
    }
    if (capacity >= (1u << 20)) {
      EXPECT_EQ(s.misses, uint64_t{kKeys});
    }
  }
}

// A failed load reaches every thread that waited for it, is not cached,
// and the next Get loads again; a load that throws does not strand waiters.
TEST(FrameCache, ErrorsReachWaitersAndAreNotCached) {
  FrameCache cache(1 << 20);
  std::atomic<int> started{0};
  std::atomic<bool> release{false};
  std::vector<Status> seen(6);
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      auto r = cache.Get(7, [&]() -> Result<FramePtr> {
        started = 1;
        while (!release) std::this_thread::yield();
        return Status::Corruption("archive.sar: frame 7 fails its checksum");
      });
      seen[t] = r.status();
    });
  }
  while (!started) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // let the others start waiting
  release = true;
  for (auto& th : threads) th.join();
  for (const Status& s : seen) {
    EXPECT_EQ(s.code(), StatusCode::kCorruption);
    EXPECT_NE(s.message().find("frame 7"), std::string::npos);
  }
  EXPECT_FALSE(cache.Contains(7));
  EXPECT_EQ(cache.stats().load_errors, 1u);
  auto ok = cache.Get(7, [] { return Result<FramePtr>(MakeFrame(7, 10)); });
  ASSERT_TRUE(ok.has_value());
  EXPECT_TRUE(cache.Contains(7));

  EXPECT_THROW((void)cache.Get(8, []() -> Result<FramePtr> { throw std::bad_alloc(); }), std::bad_alloc);
  EXPECT_FALSE(cache.Contains(8));
  auto again = cache.Get(8, [] { return Result<FramePtr>(MakeFrame(8, 10)); });
  EXPECT_TRUE(again.has_value());
}

// ---- ChainImage over real archives ----

constexpr uint64_t kDisk = (8 << 20) + 8192;

void RandomWrites(const std::string& path, std::mt19937_64& rng, ExtentSet* changed, int n) {
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  std::vector<uint8_t> buf;
  for (int i = 0; i < n; ++i) {
    uint64_t len = 4096 * (1 + rng() % 64);
    uint64_t off = (rng() % (kDisk - len)) & ~uint64_t{4095};
    buf.resize(len);
    int kind = static_cast<int>(rng() % 3);
    for (auto& b : buf) b = kind == 0 ? 0 : static_cast<uint8_t>(kind == 1 ? rng() : 'a' + rng() % 4);
    ASSERT_EQ(::pwrite(fd, buf.data(), len, static_cast<off_t>(off)), static_cast<ssize_t>(len));
    ASSERT_TRUE(changed->Add(off, len).ok());
  }
  ::close(fd);
}

// A full backup and incrementals of a disk written at random; the disk's
// bytes at each point.
struct History {
  testing::TempDir dir;
  std::vector<std::unique_ptr<ArchiveReader>> archives;  // oldest first
  std::vector<std::vector<uint8_t>> points;
  std::vector<std::string> paths;

  std::vector<const ArchiveReader*> Chain() const {
    std::vector<const ArchiveReader*> c;
    for (size_t i = archives.size(); i-- > 0;) c.push_back(archives[i].get());
    return c;
  }
};

void MakeHistory(History* h, uint64_t seed, int backups) {
  std::mt19937_64 rng(seed);
  const std::string disk = h->dir.File("disk.raw");
  { int fd = ::open(disk.c_str(), O_CREAT | O_RDWR, 0644); ASSERT_EQ(::ftruncate(fd, kDisk), 0); ::close(fd); }
  Granularity g = *Granularity::FromBytes(4096);
  ExtentSet changed = *ExtentSet::Create(kDisk, g);
  RandomWrites(disk, rng, &changed, 60);
  PipelineOptions opt;
  opt.chunk_size = 256 << 10;  // many frames in a small disk
  opt.workers = 2;
  for (int b = 0; b < backups; ++b) {
    auto img = OpenImage(disk);
    ASSERT_TRUE(img.has_value());
    ArchiveHeader hd;
    hd.id = NewArchiveId();
    hd.created_unix_ns = static_cast<uint64_t>(b + 1);
    Result<ExtentSet> set = changed;
    if (b == 0) {
      set = AllocatedExtents(**img, g, true);
    } else {
      hd.parent_id = h->archives.back()->header().id;
      hd.parent_identity = IdentityCheck(h->archives.back()->header());
      hd.source = SourceKind::kTracker;
    }
    std::string path = h->dir.File(IdToHex(hd.id) + ".sar");
    auto stats = RunBackup(**img, *set, hd, path, opt);
    ASSERT_TRUE(stats.has_value()) << stats.error().ToString();
    auto r = ArchiveReader::Open(path);
    ASSERT_TRUE(r.has_value()) << r.error().ToString();
    h->archives.push_back(std::move(*r));
    h->paths.push_back(path);
    h->points.push_back(testing::ReadFileBytes(disk));
    changed.Clear();
    RandomWrites(disk, rng, &changed, 5 + static_cast<int>(rng() % 20));
  }
}

// Random reads (4 KiB to 300 KiB, any alignment) from 8 threads at once
// equal the disk at the newest point, for caches holding nothing, about one
// frame, and everything; the cache stays within its bound.
TEST(ChainImage, ConcurrentRandomReadsEqualThePoint) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  History h;
  MakeHistory(&h, seed, 4);
  if (::testing::Test::HasFatalFailure()) return;
  const std::vector<uint8_t>& want = h.points.back();
  for (uint64_t cache : {uint64_t{0}, uint64_t{300} << 10, uint64_t{64} << 20}) {
    ChainImageOptions o;
    o.cache_bytes = cache;
    auto img = ChainImage::Open(h.Chain(), o);
    ASSERT_TRUE(img.has_value()) << img.error().ToString();
    ASSERT_EQ((*img)->size(), kDisk);
    std::atomic<int> bad{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&, t] {
        std::mt19937_64 rng(seed * 7 + static_cast<uint64_t>(t));
        std::vector<uint8_t> buf;
        for (int i = 0; i < 300; ++i) {
          uint64_t len = rng() % 2 ? 4096 : 1 + rng() % (300 << 10);
          uint64_t off = rng() % (kDisk - len + 1);
          if (rng() % 2) off &= ~uint64_t{4095};
          buf.assign(len, 0xee);
          Status s = (*img)->Read(off, buf);
          if (!s.ok() || !std::equal(buf.begin(), buf.end(), want.begin() + static_cast<long>(off))) {
            ++bad;
          }
          if (i % 50 == 0) (void)(*img)->Prefetch(off, len);
        }
      });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(bad.load(), 0) << "cache " << cache;
    ChainImageStats s = (*img)->stats();
    EXPECT_LE(s.cache.resident_bytes, cache);
    if (cache == 0) {
      EXPECT_EQ(s.cache.hits, 0u);
    }
    if (cache >= (64u << 20)) {
      // Everything fits: each frame was decompressed once.
      size_t frames = 0;
      for (const auto& a : h.archives) frames += a->index().frames.size();
      EXPECT_LE(s.frames_decompressed, frames);
    }
    // The map: zero runs read as zeros, runs tile the disk.
    uint64_t pos = 0;
    bool ok = true;
    (*img)->Map(0, kDisk, [&](uint64_t off, uint64_t len, bool zero) {
      ok = ok && off == pos;
      if (zero) ok = ok && std::all_of(want.begin() + static_cast<long>(off),
                                       want.begin() + static_cast<long>(off + len), [](uint8_t b) { return b == 0; });
      pos = off + len;
      return true;
    });
    EXPECT_TRUE(ok);
    EXPECT_EQ(pos, kDisk);
  }
  // Every older point too, one thread.
  for (size_t p = 0; p + 1 < h.points.size(); ++p) {
    std::vector<const ArchiveReader*> chain;
    for (size_t i = p + 1; i-- > 0;) chain.push_back(h.archives[i].get());
    auto img = ChainImage::Open(chain);
    ASSERT_TRUE(img.has_value());
    std::vector<uint8_t> all(kDisk);
    ASSERT_TRUE((*img)->Read(0, all).ok());
    EXPECT_TRUE(all == h.points[p]) << "point " << p;
  }
}

// A flipped byte in any frame is found on the first read that needs the
// frame: kCorruption naming the archive; other frames still read, and the
// error is not cached (a repaired file would read again).
TEST(ChainImage, FlippedFrameBytesAreReportedAsCorruption) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  History h;
  MakeHistory(&h, seed, 2);
  if (::testing::Test::HasFatalFailure()) return;
  int detected = 0;
  for (int trial = 0; trial < 8; ++trial) {
    size_t ai = rng() % h.archives.size();
    const ArchiveReader& a = *h.archives[ai];
    ASSERT_FALSE(a.index().frames.empty());
    uint32_t fi = static_cast<uint32_t>(rng() % a.index().frames.size());
    const FrameRecord& f = a.index().frames[fi];
    uint64_t at = f.file_offset + rng() % f.compressed_size;
    std::string path = h.paths[ai];
    const std::vector<uint8_t> original = testing::ReadFileBytes(path);
    std::vector<uint8_t> bytes = original;
    bytes[at] ^= static_cast<uint8_t>(1 + rng() % 255);
    testing::WriteFileBytes(path, bytes);
    // Re-open the archives (the index is intact: only frame bytes changed).
    std::vector<std::unique_ptr<ArchiveReader>> open;
    for (const std::string& p : h.paths) open.push_back(std::move(*ArchiveReader::Open(p)));
    std::vector<const ArchiveReader*> chain;
    for (size_t i = open.size(); i-- > 0;) chain.push_back(open[i].get());
    auto img = ChainImage::Open(chain, {});
    ASSERT_TRUE(img.has_value());
    // Read the guest ranges of every extent stored in the flipped frame
    // that the view still shows: each fails. A whole-disk read fails too
    // unless no visible range comes from the frame.
    std::vector<uint8_t> all(kDisk);
    Status whole = (*img)->Read(0, all);
    bool visible = false;
    for (const ExtentRecord& e : a.index().extents) {
      if (e.frame != fi) continue;
      std::vector<uint8_t> buf(e.length);
      // Visible if the newer archive does not define all of it: try the read.
      Status s = (*img)->Read(e.guest_offset, buf);
      if (!s.ok()) {
        visible = true;
        EXPECT_EQ(s.code(), StatusCode::kCorruption) << s.ToString();
        EXPECT_NE(s.message().find(path), std::string::npos) << s.message();
      }
    }
    if (visible) {
      ++detected;
      EXPECT_EQ(whole.code(), StatusCode::kCorruption);
    } else {
      EXPECT_TRUE(whole.ok()) << whole.ToString();
    }
    testing::WriteFileBytes(path, original);  // the next trial flips one byte again
  }
  EXPECT_GT(detected, 0) << "no flipped frame was visible in the view: the test checked nothing";
}

}  // namespace
}  // namespace strata
