// Tracker core: generations, checkpoint/remove/resize against a history
// model, persistence round trips, recovery from a copied (crashed) state
// directory, corruption of every state file, and the DenseBitmap and
// state codecs.
#include "strata/tracker.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "engine/tracker/dense_bitmap.h"
#include "engine/tracker/state_format.h"
#include "strata/tracked_device.h"
#include "tests/test_util.h"

namespace strata {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

std::unique_ptr<Tracker> MustCreate(const std::string& dir, uint64_t size, uint64_t gran = 4096,
                                    bool intent = true) {
  TrackerOptions o;
  o.disk_size = size;
  o.granularity_bytes = gran;
  o.intent_log = intent;
  o.intent_region_shift = 16;  // 64 KiB regions: small disks get several
  auto t = Tracker::Create(dir, o);
  EXPECT_TRUE(t.has_value()) << (t ? "" : t.error().ToString());
  return t ? std::move(t).value() : nullptr;
}

std::unique_ptr<Tracker> MustOpen(const std::string& dir, OpenOptions o = {}) {
  auto t = Tracker::Open(dir, o);
  EXPECT_TRUE(t.has_value()) << (t ? "" : t.error().ToString());
  return t ? std::move(t).value() : nullptr;
}

std::set<uint64_t> Blocks(const ExtentSet& s) {
  std::set<uint64_t> out;
  for (const BlockRange& r : s.ToBlockRanges()) {
    for (uint64_t b = r.first; b < r.end(); ++b) out.insert(b);
  }
  return out;
}

// Copies a state directory as a crash would leave it (every write made so
// far is on disk; the tracker did not close).
void CopyDir(const std::string& from, const std::string& to) {
  fs::copy(from, to, fs::copy_options::recursive);
}

std::map<std::string, std::vector<uint8_t>> DirContents(const std::string& dir) {
  std::map<std::string, std::vector<uint8_t>> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    out[e.path().filename()] = testing::ReadFileBytes(e.path());
  }
  return out;
}

TEST(TrackerTest, BasicGenerations) {
  TempDir tmp;
  auto t = MustCreate(tmp.File("st"), 1 << 20);
  ASSERT_TRUE(t);
  ASSERT_TRUE(t->Mark(0, 1).ok());
  auto c1 = t->Checkpoint("c1");
  ASSERT_TRUE(c1.has_value());
  EXPECT_EQ(c1->changed_bytes, 4096u);
  ASSERT_TRUE(t->Mark(8192, 4096).ok());
  ASSERT_TRUE(t->Mark(8192 + 4095, 2).ok());  // straddles blocks 2 and 3
  auto since = t->ChangedSince("c1");
  ASSERT_TRUE(since.has_value());
  EXPECT_EQ(since->ToExtents(), (std::vector<ByteExtent>{{8192, 8192}}));
  ASSERT_TRUE(t->Checkpoint("c2").has_value());
  ASSERT_TRUE(t->Mark((1 << 20) - 1, 1).ok());
  auto between = t->ChangedBetween("c1", "c2");
  ASSERT_TRUE(between.has_value());
  EXPECT_EQ(between->ToExtents(), (std::vector<ByteExtent>{{8192, 8192}}));
  auto since2 = t->ChangedSince("c2");
  ASSERT_TRUE(since2.has_value());
  EXPECT_EQ(since2->ToExtents(), (std::vector<ByteExtent>{{(1 << 20) - 4096, 4096}}));
  auto list = t->List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].name, "c1");
  EXPECT_EQ(list[1].changed_bytes, 8192u);
  EXPECT_LT(list[0].id, list[1].id);
  EXPECT_GT(list[0].created_unix_ns, 0);
}

TEST(TrackerTest, Errors) {
  TempDir tmp;
  auto t = MustCreate(tmp.File("st"), 1 << 20);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->Mark(1 << 20, 1).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(t->Mark(~uint64_t{0}, 2).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(t->Mark(1 << 20, 0).ok());
  ASSERT_TRUE(t->Checkpoint("a").has_value());
  ASSERT_TRUE(t->Checkpoint("b").has_value());
  auto dup = t->Checkpoint("a");
  ASSERT_FALSE(dup.has_value());
  EXPECT_EQ(dup.error().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(dup.error().message().find("'a'"), std::string::npos);
  EXPECT_EQ(t->Checkpoint("").error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(t->Checkpoint("x\ny").error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(t->Checkpoint(std::string(256, 'x')).error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(t->ChangedSince("nope").error().code(), StatusCode::kNotFound);
  EXPECT_EQ(t->ChangedBetween("b", "a").error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(t->Remove("nope").code(), StatusCode::kNotFound);
  // A second read-write open of the same directory is refused.
  auto second = Tracker::Open(tmp.File("st"));
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code(), StatusCode::kBusy);
  auto again = Tracker::Create(tmp.File("st"), TrackerOptions{.disk_size = 1});
  EXPECT_FALSE(again.has_value());
  ASSERT_TRUE(t->Close().ok());
  EXPECT_EQ(t->Mark(0, 1).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Tracker::Create(tmp.File("st"), TrackerOptions{.disk_size = 1}).error().code(),
            StatusCode::kAlreadyExists);
  EXPECT_EQ(Tracker::Open(tmp.File("missing")).error().code(), StatusCode::kNotFound);
  TrackerOptions bad;
  bad.disk_size = 1 << 20;
  bad.granularity_bytes = 3000;
  EXPECT_EQ(Tracker::Create(tmp.File("bad"), bad).error().code(), StatusCode::kInvalidArgument);
  // A disk has at least one byte: refused before anything is created.
  EXPECT_EQ(Tracker::Create(tmp.File("zero"), TrackerOptions{.disk_size = 0}).error().code(),
            StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(tmp.File("zero")));
  auto r = MustCreate(tmp.File("r"), 1 << 20);
  EXPECT_EQ(r->Resize(0).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r->disk_size(), 1u << 20);
}

// The history model: every write with the logical time it happened; a
// checkpoint is a time. ChangedSince(X) = blocks written after X; between
// (X, Y] likewise. Removal must not change any remaining answer.
struct HistoryModel {
  uint64_t blocks = 0;
  std::map<uint64_t, std::vector<uint64_t>> writes;  // block -> times
  std::map<std::string, uint64_t> checkpoints;        // name -> time
  uint64_t now = 0;

  void Write(uint64_t first, uint64_t count) {
    ++now;
    for (uint64_t b = first; b < first + count; ++b) writes[b].push_back(now);
  }
  // Shrinking clips; growing marks the blocks covering [old, new) bytes
  // (including a partial old last block).
  void Resize(uint64_t old_size, uint64_t new_size, uint64_t gran) {
    ++now;
    uint64_t new_blocks = (new_size + gran - 1) / gran;
    if (new_size < old_size) {
      writes.erase(writes.lower_bound(new_blocks), writes.end());
    } else if (new_size > old_size) {
      for (uint64_t b = old_size / gran; b < new_blocks; ++b) writes[b].push_back(now);
    }
    blocks = new_blocks;
  }
  std::set<uint64_t> Between(uint64_t lo, uint64_t hi) const {
    std::set<uint64_t> out;
    for (const auto& [b, ts] : writes) {
      for (uint64_t t : ts) {
        if (t > lo && t <= hi) {
          out.insert(b);
          break;
        }
      }
    }
    return out;
  }
};

std::string Diff(const std::set<uint64_t>& got, const std::set<uint64_t>& want) {
  std::string out = "extra:";
  for (uint64_t b : got) {
    if (!want.count(b)) out += " " + std::to_string(b);
  }
  out += " missing:";
  for (uint64_t b : want) {
    if (!got.count(b)) out += " " + std::to_string(b);
  }
  return out;
}

void CheckAgainstModel(Tracker& t, const HistoryModel& m) {
  std::vector<std::pair<uint64_t, std::string>> cps;
  for (const auto& [n, time] : m.checkpoints) cps.emplace_back(time, n);
  std::sort(cps.begin(), cps.end());
  auto list = t.List();
  ASSERT_EQ(list.size(), cps.size());
  for (size_t i = 0; i < cps.size(); ++i) {
    ASSERT_EQ(list[i].name, cps[i].second);
    auto since = t.ChangedSince(cps[i].second);
    ASSERT_TRUE(since.has_value()) << since.error().ToString();
    auto want = m.Between(cps[i].first, ~uint64_t{0});
    ASSERT_EQ(Blocks(*since), want) << "since " << cps[i].second << " "
                                    << Diff(Blocks(*since), want);
    if (i + 1 < cps.size()) {
      size_t j = i + 1 + (cps[i].first % (cps.size() - i - 1));
      auto between = t.ChangedBetween(cps[i].second, cps[j].second);
      ASSERT_TRUE(between.has_value());
      auto want_b = m.Between(cps[i].first, cps[j].first);
      ASSERT_EQ(Blocks(*between), want_b)
          << cps[i].second << ".." << cps[j].second << " " << Diff(Blocks(*between), want_b);
    }
  }
}

TEST(TrackerTest, RandomOperationsMatchHistoryModel) {
  uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  TempDir tmp;
  const uint64_t gran = 512;
  uint64_t size = 300 * 512 + 100;  // not block-aligned
  auto t = MustCreate(tmp.File("st"), size, gran);
  ASSERT_TRUE(t);
  HistoryModel m;
  m.blocks = (size + gran - 1) / gran;
  int next_name = 0;
  std::vector<std::string> ops;
  for (int step = 0; step < 1500; ++step) {
    int op = static_cast<int>(rng() % 100);
    if (op < 70) {
      uint64_t off = rng() % size;
      uint64_t len = 1 + rng() % std::min<uint64_t>(size - off, 5000);
      ASSERT_TRUE(t->Mark(off, len).ok());
      ops.push_back("mark " + std::to_string(off / gran) + ".." + std::to_string((off + len - 1) / gran));
      m.Write(off / gran, (off + len - 1) / gran - off / gran + 1);
    } else if (op < 82) {
      std::string name = "cp" + std::to_string(next_name++);
      ASSERT_TRUE(t->Checkpoint(name).has_value());
      ops.push_back("checkpoint " + name);
      m.checkpoints[name] = ++m.now;
    } else if (op < 90 && !m.checkpoints.empty()) {
      auto it = m.checkpoints.begin();
      std::advance(it, static_cast<long>(rng() % m.checkpoints.size()));
      ASSERT_TRUE(t->Remove(it->first).ok());
      ops.push_back("remove " + it->first);
      m.checkpoints.erase(it);
    } else if (op < 94) {
      uint64_t new_size = 100 * 512 + rng() % (400 * 512);
      ASSERT_TRUE(t->Resize(new_size).ok());
      ops.push_back("resize " + std::to_string(new_size));
      m.Resize(size, new_size, gran);
      size = new_size;
    } else if (op < 97) {
      ASSERT_TRUE(t->Close().ok());
      ops.push_back("reopen");
      t = MustOpen(tmp.File("st"));
      ASSERT_TRUE(t);
      EXPECT_TRUE(t->recovery().clean_shutdown);
      EXPECT_EQ(t->disk_size(), size);
    } else {
      ASSERT_TRUE(t->Flush().ok());
      ops.push_back("flush");
    }
    if (step % 20 == 0) CheckAgainstModel(*t, m);
    if (::testing::Test::HasFatalFailure()) {
      std::string tail;
      for (size_t i = ops.size() > 60 ? ops.size() - 60 : 0; i < ops.size(); ++i) tail += ops[i] + "; ";
      ADD_FAILURE() << "last operations: " << tail;
      return;
    }
  }
  CheckAgainstModel(*t, m);
}

TEST(TrackerTest, RemoveMergesIntoNextAndActive) {
  TempDir tmp;
  auto t = MustCreate(tmp.File("st"), 1 << 20);
  ASSERT_TRUE(t);
  ASSERT_TRUE(t->Checkpoint("a").has_value());
  ASSERT_TRUE(t->Mark(0, 4096).ok());
  ASSERT_TRUE(t->Checkpoint("b").has_value());
  ASSERT_TRUE(t->Mark(4096 * 5, 4096).ok());
  ASSERT_TRUE(t->Checkpoint("c").has_value());
  ASSERT_TRUE(t->Mark(4096 * 9, 4096).ok());
  auto before = t->ChangedSince("a");
  ASSERT_TRUE(before.has_value());
  ASSERT_TRUE(t->Remove("b").ok());  // b's generation merges into c's
  auto after = t->ChangedSince("a");
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(*before, *after);
  auto ac = t->ChangedBetween("a", "c");
  ASSERT_TRUE(ac.has_value());
  EXPECT_EQ(ac->ToExtents(), (std::vector<ByteExtent>{{0, 4096}, {4096 * 5, 4096}}));
  EXPECT_EQ(t->List()[1].changed_bytes, 8192u);
  ASSERT_TRUE(t->Remove("c").ok());  // the newest: merges into the active generation
  auto after2 = t->ChangedSince("a");
  ASSERT_TRUE(after2.has_value());
  EXPECT_EQ(*before, *after2);
  ASSERT_TRUE(t->Close().ok());
  t = MustOpen(tmp.File("st"));
  ASSERT_TRUE(t);
  auto reopened = t->ChangedSince("a");
  ASSERT_TRUE(reopened.has_value());
  EXPECT_EQ(*before, *reopened);
  // The next checkpoint seals the merged blocks too.
  auto d = t->Checkpoint("d");
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->changed_bytes, 3u * 4096);
}

TEST(TrackerTest, ResizeGrowMarksNewAreaShrinkClips) {
  TempDir tmp;
  auto t = MustCreate(tmp.File("st"), 10 * 4096 + 100);
  ASSERT_TRUE(t);
  ASSERT_TRUE(t->Checkpoint("a").has_value());
  ASSERT_TRUE(t->Mark(9 * 4096, 4096).ok());
  ASSERT_TRUE(t->Checkpoint("b").has_value());
  ASSERT_TRUE(t->Resize(20 * 4096).ok());
  EXPECT_EQ(t->disk_size(), 20u * 4096);
  auto since_b = t->ChangedSince("b");
  ASSERT_TRUE(since_b.has_value());
  // The old partial last block (10) and everything after it is new.
  EXPECT_EQ(since_b->ToExtents(), (std::vector<ByteExtent>{{10 * 4096, 10 * 4096}}));
  ASSERT_TRUE(t->Mark(19 * 4096, 10).ok());
  ASSERT_TRUE(t->Resize(5 * 4096).ok());
  auto since_a = t->ChangedSince("a");
  ASSERT_TRUE(since_a.has_value());
  EXPECT_TRUE(since_a->empty());  // block 9 and the grown area are clipped
  EXPECT_EQ(since_a->disk_size(), 5u * 4096);
  EXPECT_EQ(t->Mark(5 * 4096, 1).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(t->Close().ok());
  t = MustOpen(tmp.File("st"));
  ASSERT_TRUE(t);
  EXPECT_EQ(t->disk_size(), 5u * 4096);
  auto between = t->ChangedBetween("a", "b");
  ASSERT_TRUE(between.has_value());
  EXPECT_TRUE(between->empty());
}

TEST(TrackerTest, UncleanShutdownRecoversFromIntentLog) {
  TempDir tmp;
  const uint64_t size = 64 << 20;  // 1024 regions of 64 KiB
  auto t = MustCreate(tmp.File("st"), size);
  ASSERT_TRUE(t);
  ASSERT_TRUE(t->Mark(0, 4096).ok());
  ASSERT_TRUE(t->Checkpoint("a").has_value());
  std::mt19937_64 rng(testing::TestSeed());
  std::set<uint64_t> written;
  for (int i = 0; i < 200; ++i) {
    uint64_t off = (rng() % (size / 4096)) * 4096;
    ASSERT_TRUE(t->Mark(off, 4096).ok());
    written.insert(off / 4096);
    if (i == 100) {
      ASSERT_TRUE(t->Flush().ok());
    }
  }
  CopyDir(tmp.File("st"), tmp.File("crashed"));
  auto r = MustOpen(tmp.File("crashed"));
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->recovery().clean_shutdown);
  EXPECT_FALSE(r->recovery().active_unknown);
  EXPECT_GT(r->recovery().intent_regions, 0u);
  auto since = r->ChangedSince("a");
  ASSERT_TRUE(since.has_value());
  std::set<uint64_t> got = Blocks(*since);
  for (uint64_t b : written) ASSERT_TRUE(got.count(b)) << "block " << b << " lost";
  // Regions are 64 KiB = 16 blocks: the over-approximation is bounded by
  // the regions touched after the flush.
  EXPECT_LE(got.size(), written.size() * 16);
  EXPECT_EQ(r->recovery().added_bytes + 101 * 4096 >= since->ByteCount(), true);
  // The recovered state is committed: a clean close and reopen keeps it.
  ASSERT_TRUE(r->Close().ok());
  r = MustOpen(tmp.File("crashed"));
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->recovery().clean_shutdown);
  auto again = r->ChangedSince("a");
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*since, *again);
}

TEST(TrackerTest, UncleanShutdownWithoutIntentLogIsUnknown) {
  TempDir tmp;
  auto t = MustCreate(tmp.File("st"), 1 << 20, 4096, /*intent=*/false);
  ASSERT_TRUE(t);
  ASSERT_TRUE(t->Checkpoint("a").has_value());
  ASSERT_TRUE(t->Mark(0, 4096).ok());
  ASSERT_TRUE(t->Checkpoint("b").has_value());
  ASSERT_TRUE(t->Mark(4096, 4096).ok());
  CopyDir(tmp.File("st"), tmp.File("crashed"));
  auto r = MustOpen(tmp.File("crashed"));
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->recovery().active_unknown);
  auto since = r->ChangedSince("a");
  ASSERT_FALSE(since.has_value());
  EXPECT_EQ(since.error().code(), StatusCode::kUnknownState);
  EXPECT_NE(since.error().message().find("full backup"), std::string::npos);
  // Sealed history is intact.
  auto between = r->ChangedBetween("a", "b");
  ASSERT_TRUE(between.has_value());
  EXPECT_EQ(between->ToExtents(), (std::vector<ByteExtent>{{0, 4096}}));
  // The unknown generation is sealed by the next checkpoint: changes since
  // it are known again, anything spanning it stays unknown (also on disk).
  ASSERT_TRUE(r->Checkpoint("c").has_value());
  ASSERT_TRUE(r->Mark(8192, 1).ok());
  ASSERT_TRUE(r->Close().ok());
  r = MustOpen(tmp.File("crashed"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->ChangedSince("b").error().code(), StatusCode::kUnknownState);
  EXPECT_EQ(r->ChangedBetween("a", "c").error().code(), StatusCode::kUnknownState);
  auto since_c = r->ChangedSince("c");
  ASSERT_TRUE(since_c.has_value());
  EXPECT_EQ(since_c->ToExtents(), (std::vector<ByteExtent>{{8192, 4096}}));
  EXPECT_TRUE(r->List()[2].generation_unknown);
}

TEST(TrackerTest, PeriodicFlushPersistsActiveGeneration) {
  TempDir tmp;
  {
    auto t = MustCreate(tmp.File("st"), 1 << 20);
    ASSERT_TRUE(t);
    ASSERT_TRUE(t->Checkpoint("a").has_value());
    ASSERT_TRUE(t->Close().ok());
  }
  OpenOptions o;
  o.flush_interval = std::chrono::milliseconds(20);
  auto t = MustOpen(tmp.File("st"), o);
  ASSERT_TRUE(t);
  ASSERT_TRUE(t->Mark(4096 * 3, 4096).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CopyDir(tmp.File("st"), tmp.File("crashed"));
  // Flushed: no intent region needs replaying for the mark above.
  auto r = MustOpen(tmp.File("crashed"));
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->recovery().clean_shutdown);
  EXPECT_EQ(r->recovery().intent_regions, 0u);
  auto since = r->ChangedSince("a");
  ASSERT_TRUE(since.has_value());
  EXPECT_EQ(since->ToExtents(), (std::vector<ByteExtent>{{4096 * 3, 4096}}));
}

TEST(TrackerTest, ReadOnlyOpenWritesNothing) {
  TempDir tmp;
  auto t = MustCreate(tmp.File("st"), 1 << 20);
  ASSERT_TRUE(t);
  ASSERT_TRUE(t->Checkpoint("a").has_value());
  ASSERT_TRUE(t->Mark(0, 1).ok());
  ASSERT_TRUE(t->Close().ok());
  auto before = DirContents(tmp.File("st"));
  OpenOptions ro;
  ro.read_only = true;
  auto r = MustOpen(tmp.File("st"), ro);
  ASSERT_TRUE(r);
  auto r2 = MustOpen(tmp.File("st"), ro);  // shared lock: two readers are fine
  ASSERT_TRUE(r2);
  EXPECT_EQ(Tracker::Open(tmp.File("st")).error().code(), StatusCode::kBusy);
  auto since = r->ChangedSince("a");
  ASSERT_TRUE(since.has_value());
  EXPECT_EQ(since->ByteCount(), 4096u);
  EXPECT_EQ(r->Mark(0, 1).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r->Checkpoint("b").error().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(r->Close().ok());
  EXPECT_TRUE(r2->Close().ok());
  EXPECT_EQ(before, DirContents(tmp.File("st")));
}

// Issue 17: whether a checkpoint was quiesced is recorded after the fact
// (the freeze window's verdict is known after the thaw), persisted as entry
// flag bit 1, and kept by every later rewrite of the manifest.
TEST(TrackerTest, QuiescedFlagIsPersisted) {
  TempDir tmp;
  const std::string d = tmp.File("st");
  auto t = MustCreate(d, 1 << 20);
  ASSERT_TRUE(t);
  ASSERT_TRUE(t->Checkpoint("a").has_value());
  ASSERT_TRUE(t->Mark(0, 4096).ok());
  auto b = t->Checkpoint("b");
  ASSERT_TRUE(b.has_value());
  EXPECT_FALSE(b->quiesced);
  ASSERT_TRUE(t->Checkpoint("c").has_value());
  ASSERT_TRUE(t->SetQuiesced("b", true).ok());
  ASSERT_TRUE(t->SetQuiesced("c", true).ok());
  ASSERT_TRUE(t->SetQuiesced("c", false).ok());
  EXPECT_EQ(t->SetQuiesced("nope", true).code(), StatusCode::kNotFound);
  auto list = t->List();
  EXPECT_FALSE(list[0].quiesced);
  EXPECT_TRUE(list[1].quiesced);
  EXPECT_FALSE(list[2].quiesced);
  // On disk: entry flag bit 1 of "b" only.
  auto m = tracker_internal::DecodeManifest(testing::ReadFileBytes(d + "/MANIFEST"), "M");
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->checkpoints[1].flags, tracker_internal::kEntryQuiesced);
  EXPECT_EQ(m->checkpoints[2].flags, 0u);
  // Kept by a removal that merges into it, a resize, a crash and a reopen.
  ASSERT_TRUE(t->Remove("a").ok());
  ASSERT_TRUE(t->Resize(2 << 20).ok());
  CopyDir(d, tmp.File("crashed"));
  ASSERT_TRUE(t->Close().ok());
  for (const std::string& dir : {d, tmp.File("crashed")}) {
    auto r = MustOpen(dir);
    ASSERT_TRUE(r);
    list = r->List();
    ASSERT_EQ(list.size(), 2u);
    EXPECT_EQ(list[0].name, "b");
    EXPECT_TRUE(list[0].quiesced) << dir;
    EXPECT_FALSE(list[1].quiesced) << dir;
    auto since = r->ChangedSince("b");
    ASSERT_TRUE(since.has_value()) << since.error().ToString();
  }
  OpenOptions ro;
  ro.read_only = true;
  EXPECT_EQ(MustOpen(d, ro)->SetQuiesced("b", false).code(), StatusCode::kInvalidArgument);
}

// Killed operations leave WriteFileAtomic temporaries; the next read-write
// opener (holding the exclusive lock) removes those that are provably its
// own kind and nothing else. A read-only open removes nothing.
TEST(TrackerTest, ReadWriteOpenRemovesOwnLeftoverTemporaries) {
  TempDir tmp;
  const std::string d = tmp.File("st");
  auto t = MustCreate(d, 1 << 20);
  ASSERT_TRUE(t);
  ASSERT_TRUE(t->Checkpoint("a").has_value());
  ASSERT_TRUE(t->Close().ok());
  const std::vector<std::string> ours = {
      "MANIFEST.tmp.0123456789ab", "gen-0000000000000002.xset.tmp.a1b2c3d4e5f6",
      "active-0000000000000007.xset.tmp.12345.987654321", "intent-0000000000000009.log.tmp.ffffffffffff"};
  const std::vector<std::string> foreign = {
      "MANIFEST.tmp.0123456789AB", "MANIFEST.tmp.short", "notes.tmp.0123456789ab",
      "gen-2.xset.tmp.0123456789ab", "MANIFEST.bak", "active-0000000000000007.xset.tmp.1x.2"};
  for (const auto& n : ours) testing::WriteFileBytes(d + "/" + n, {1, 2, 3});
  for (const auto& n : foreign) testing::WriteFileBytes(d + "/" + n, {4});
  for (const auto& n : ours) EXPECT_TRUE(tracker_internal::IsOwnTemporaryName(n)) << n;
  for (const auto& n : foreign) EXPECT_FALSE(tracker_internal::IsOwnTemporaryName(n)) << n;
  OpenOptions ro;
  ro.read_only = true;
  ASSERT_TRUE(MustOpen(d, ro));
  for (const auto& n : ours) EXPECT_TRUE(fs::exists(d + "/" + n)) << n;
  auto rw = MustOpen(d);
  ASSERT_TRUE(rw);
  for (const auto& n : ours) EXPECT_FALSE(fs::exists(d + "/" + n)) << n;
  for (const auto& n : foreign) EXPECT_TRUE(fs::exists(d + "/" + n)) << n;
  EXPECT_TRUE(rw->ChangedSince("a").has_value());
}

// Builds a state with two sealed generations, an active file and (in the
// copy) intent logs, then corrupts each file in turn.
class CorruptionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = MustCreate(tmp_.File("st"), 1 << 20);
    ASSERT_TRUE(t);
    ASSERT_TRUE(t->Checkpoint("a").has_value());
    ASSERT_TRUE(t->Mark(0, 4096).ok());
    ASSERT_TRUE(t->Checkpoint("b").has_value());
    ASSERT_TRUE(t->Mark(4096, 4096).ok());
    ASSERT_TRUE(t->Checkpoint("c").has_value());
    ASSERT_TRUE(t->Mark(8192, 4096).ok());
    ASSERT_TRUE(t->Close().ok());
  }
  std::string FileMatching(const std::string& dir, const std::string& prefix, int nth = 0) {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir)) {
      std::string n = e.path().filename();
      if (n.rfind(prefix, 0) == 0) names.push_back(n);
    }
    std::sort(names.begin(), names.end());
    return nth < static_cast<int>(names.size()) ? names[static_cast<size_t>(nth)] : "";
  }
  TempDir tmp_;
};

TEST_F(CorruptionTest, ManifestEveryByteFlipDetected) {
  std::string path = tmp_.File("st") + "/MANIFEST";
  auto orig = testing::ReadFileBytes(path);
  for (size_t i = 0; i < orig.size(); ++i) {
    auto bad = orig;
    bad[i] ^= 0x20;
    testing::WriteFileBytes(path, bad);
    auto t = Tracker::Open(tmp_.File("st"));
    ASSERT_FALSE(t.has_value()) << "flip at " << i << " not detected";
    EXPECT_NE(t.error().message().find("MANIFEST"), std::string::npos) << t.error().ToString();
  }
  for (size_t n : {size_t{0}, size_t{10}, orig.size() - 1}) {
    testing::WriteFileBytes(path, std::vector<uint8_t>(orig.begin(), orig.begin() + static_cast<long>(n)));
    auto t = Tracker::Open(tmp_.File("st"));
    ASSERT_FALSE(t.has_value());
    EXPECT_EQ(t.error().code(), StatusCode::kCorruption);
  }
  testing::WriteFileBytes(path, orig);
  EXPECT_TRUE(Tracker::Open(tmp_.File("st")).has_value());
}

TEST_F(CorruptionTest, GenerationFileMakesSpanningQueriesUnknown) {
  // gen files sorted by id: b's generation first, then c's.
  std::string dir = tmp_.File("st");
  std::string gen_b = FileMatching(dir, "gen-", 1);
  ASSERT_FALSE(gen_b.empty());
  auto orig = testing::ReadFileBytes(dir + "/" + gen_b);
  std::mt19937_64 rng(testing::TestSeed());
  for (int trial = 0; trial < 40; ++trial) {
    auto bad = orig;
    if (trial < 30) {
      bad[rng() % bad.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
    } else {
      bad.resize(rng() % bad.size());
    }
    testing::WriteFileBytes(dir + "/" + gen_b, bad);
    auto before = DirContents(dir);
    {
      OpenOptions ro;
      ro.read_only = true;
      auto t = MustOpen(dir, ro);
      ASSERT_TRUE(t);
      ASSERT_EQ(t->recovery().problems.size(), 1u);
      EXPECT_NE(t->recovery().problems[0].find(gen_b), std::string::npos);
      auto since_a = t->ChangedSince("a");
      ASSERT_FALSE(since_a.has_value());
      EXPECT_EQ(since_a.error().code(), StatusCode::kUnknownState);
      EXPECT_NE(since_a.error().message().find(gen_b), std::string::npos);
      EXPECT_EQ(t->ChangedBetween("a", "c").error().code(), StatusCode::kUnknownState);
      auto since_b = t->ChangedSince("b");  // does not need b's generation
      ASSERT_TRUE(since_b.has_value());
      EXPECT_EQ(since_b->ToExtents(), (std::vector<ByteExtent>{{4096, 8192}}));
      EXPECT_TRUE(t->List()[1].generation_unknown);
    }
    EXPECT_EQ(before, DirContents(dir)) << "read-only open touched the directory";
    {
      auto t = MustOpen(dir);  // read-write: the corrupt file is kept as is
      ASSERT_TRUE(t);
      EXPECT_EQ(t->ChangedSince("a").error().code(), StatusCode::kUnknownState);
    }
    auto after = DirContents(dir);
    EXPECT_EQ(after[gen_b], bad);
    for (const auto& [name, bytes] : before) {
      if (name.rfind("gen-", 0) == 0) {
        EXPECT_EQ(after[name], bytes) << name;
      }
    }
  }
}

TEST_F(CorruptionTest, ActiveFileMakesActiveUnknown) {
  std::string dir = tmp_.File("st");
  std::string active = FileMatching(dir, "active-");
  ASSERT_FALSE(active.empty());
  auto orig = testing::ReadFileBytes(dir + "/" + active);
  for (size_t i = 0; i < orig.size(); i += 7) {
    auto bad = orig;
    bad[i] ^= 0x01;
    testing::WriteFileBytes(dir + "/" + active, bad);
    OpenOptions ro;
    ro.read_only = true;
    auto t = MustOpen(dir, ro);
    ASSERT_TRUE(t);
    EXPECT_TRUE(t->recovery().active_unknown) << "flip at " << i;
    auto since = t->ChangedSince("c");
    ASSERT_FALSE(since.has_value());
    EXPECT_EQ(since.error().code(), StatusCode::kUnknownState);
    EXPECT_NE(since.error().message().find(active), std::string::npos);
    EXPECT_TRUE(t->ChangedBetween("a", "c").has_value());
  }
  fs::remove(dir + "/" + active);
  OpenOptions ro;
  ro.read_only = true;
  auto t = MustOpen(dir, ro);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->ChangedSince("c").error().code(), StatusCode::kUnknownState);
}

TEST_F(CorruptionTest, IntentLogCorruptionMakesActiveUnknown) {
  namespace ti = tracker_internal;
  std::string dir = tmp_.File("st");
  {
    auto t = MustOpen(dir);
    ASSERT_TRUE(t);
    ASSERT_TRUE(t->Mark(0, 4096).ok());
    ASSERT_TRUE(t->Mark(900 * 1024, 4096).ok());
    CopyDir(dir, tmp_.File("crashed"));
  }
  std::string cdir = tmp_.File("crashed");
  std::string log = FileMatching(cdir, "intent-");
  ASSERT_FALSE(log.empty());
  auto orig = testing::ReadFileBytes(cdir + "/" + log);
  // 1 MiB at 64 KiB regions: 16 regions, so the log is preallocated to 16
  // sectors; the two marks are two commits (sectors 1 and 2).
  ASSERT_EQ(orig.size(), 16u * ti::kIntentSectorSize);
  OpenOptions ro;
  ro.read_only = true;
  {
    auto t = MustOpen(cdir, ro);  // intact: both regions recovered
    ASSERT_TRUE(t);
    EXPECT_FALSE(t->recovery().active_unknown);
    EXPECT_EQ(t->recovery().intent_regions, 2u);
  }
  auto expect_unknown = [&](const std::vector<uint8_t>& bytes, const std::string& what) {
    testing::WriteFileBytes(cdir + "/" + log, bytes);
    auto t = MustOpen(cdir, ro);
    ASSERT_TRUE(t);
    EXPECT_TRUE(t->recovery().active_unknown) << what;
    auto since = t->ChangedSince("c");
    ASSERT_FALSE(since.has_value()) << what;
    EXPECT_EQ(since.error().code(), StatusCode::kUnknownState);
    EXPECT_NE(since.error().message().find(log), std::string::npos) << since.error().message();
  };
  // Header flips, flips in a commit and in the never-written area.
  for (size_t i : {size_t{0}, size_t{9}, size_t{30}, size_t{47}, size_t{511}, size_t{512}, size_t{1100},
                   size_t{1535}, size_t{1536}, orig.size() - 1}) {
    auto bad = orig;
    bad[i] ^= 0x10;
    expect_unknown(bad, "flip at " + std::to_string(i));
  }
  // Truncation below the recorded capacity, however short: the log was
  // published whole, so a short file is damage, not "never in use".
  for (size_t n : {size_t{0}, size_t{20}, size_t{511}, size_t{512}, size_t{1024}, orig.size() - 1}) {
    expect_unknown(std::vector<uint8_t>(orig.begin(), orig.begin() + static_cast<long>(n)),
                   "truncated to " + std::to_string(n));
  }
  // The first commit zeroed while the second is intact: damage.
  auto hole = orig;
  std::fill(hole.begin() + 512, hole.begin() + 1024, 0);
  expect_unknown(hole, "zeroed first commit");
  // The last commit never written (all zero): a torn commit, whose marks
  // were never acknowledged. The rest is recovered.
  auto torn = orig;
  std::fill(torn.begin() + 1024, torn.begin() + 1536, 0);
  testing::WriteFileBytes(cdir + "/" + log, torn);
  {
    auto t = MustOpen(cdir, ro);
    ASSERT_TRUE(t);
    EXPECT_FALSE(t->recovery().active_unknown);
    EXPECT_EQ(t->recovery().intent_regions, 1u);
  }
  // Zeros past the capacity (an extension whose header update was cut off)
  // are fine; anything else there is damage.
  auto longer = orig;
  longer.resize(orig.size() + 4096, 0);
  testing::WriteFileBytes(cdir + "/" + log, longer);
  EXPECT_FALSE(MustOpen(cdir, ro)->recovery().active_unknown);
  longer[orig.size() + 100] = 1;
  expect_unknown(longer, "non-zero past capacity");
  // A version-1 log (before issue 11) after an unclean shutdown cannot be
  // read safely: unknown, saying why.
  std::vector<uint8_t> v1(48, 0);
  std::memcpy(v1.data(), ti::kIntentMagic, 8);
  v1[8] = 1;
  expect_unknown(v1, "version 1");
  auto t = MustOpen(cdir, ro);
  EXPECT_NE(t->recovery().problems[0].find("version 1 cannot tell a torn record"), std::string::npos)
      << t->recovery().problems[0];
}

// Issue 11: a damaged intent log must never make acknowledged marks vanish.
// A tracker marks random ranges (each acknowledged), the power is cut, and
// then every byte of its intent log is flipped (two patterns) and the log is
// truncated at every length. For each variant the reopened tracker must
// either cover every acknowledged mark or answer kUnknownState; never a
// silently smaller set. The untouched log must recover without "unknown".
class IntentLogDamageTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kSize = 4 << 20;  // 64 regions of 64 KiB

  void SetUp() override {
    seed_ = testing::TestSeed();
    std::mt19937_64 rng(seed_);
    TrackerOptions o;
    o.disk_size = kSize;
    o.granularity_bytes = 4096;
    o.intent_region_shift = 16;
    o.env = &env_;
    auto t = Tracker::Create("/st", o);
    ASSERT_TRUE(t.has_value()) << t.error().ToString();
    ASSERT_TRUE((*t)->Checkpoint("a").has_value());
    for (int i = 0; i < 24; ++i) {
      uint64_t off = rng() % kSize;
      uint64_t len = 1 + rng() % std::min<uint64_t>(kSize - off, i % 6 == 0 ? 300000 : 8192);
      ASSERT_TRUE((*t)->Mark(off, len).ok());
      marks_.emplace_back(off, len);
    }
    env_.CutAfter(1);  // the power goes: nothing after this point is written
    t->reset();
    env_.PowerCut();
    auto names = env_.ListDir("/st");
    ASSERT_TRUE(names.has_value());
    for (const auto& n : *names) {
      if (n.rfind("intent-", 0) == 0) log_ = "/st/" + n;
    }
    ASSERT_FALSE(log_.empty());
    orig_ = *env_.Contents(log_);
  }

  void Put(const std::vector<uint8_t>& bytes) {
    auto f = env_.Open(log_, OpenMode::kCreate);
    ASSERT_TRUE(f.has_value());
    ASSERT_TRUE((*f)->Truncate(0).ok());
    ASSERT_TRUE((*f)->Write(0, bytes).ok());
    ASSERT_TRUE((*f)->Sync().ok());
  }

  // "covered", "unknown", or a failure naming the lost mark.
  std::string Check(const std::string& what) {
    OpenOptions ro;
    ro.read_only = true;
    ro.env = &env_;
    auto t = Tracker::Open("/st", ro);
    if (!t) return what + ": open failed: " + t.error().ToString();
    auto since = (*t)->ChangedSince("a");
    if (!since) {
      if (since.error().code() == StatusCode::kUnknownState && (*t)->recovery().active_unknown) return "unknown";
      return what + ": " + since.error().ToString();
    }
    for (const auto& [off, len] : marks_) {
      if (!since->ContainsRange(off, len)) {
        return what + ": acknowledged mark [" + std::to_string(off) + ", +" + std::to_string(len) +
               ") lost, reported " + std::to_string(since->ByteCount()) + " bytes";
      }
    }
    return "covered";
  }

  uint64_t seed_ = 0;
  FaultEnv env_;
  std::string log_;
  std::vector<uint8_t> orig_;
  std::vector<std::pair<uint64_t, uint64_t>> marks_;
};

TEST_F(IntentLogDamageTest, EveryByteFlipIsCoveredOrUnknown) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  ASSERT_EQ(Check("intact"), "covered");
  int unknown = 0, covered = 0;
  for (uint8_t pattern : {uint8_t{0x01}, uint8_t{0xff}}) {
    for (size_t i = 0; i < orig_.size(); ++i) {
      auto bad = orig_;
      bad[i] ^= pattern;
      Put(bad);
      std::string r = Check("flip " + std::to_string(pattern) + " at byte " + std::to_string(i) + " of " +
                            std::to_string(orig_.size()));
      ASSERT_TRUE(r == "covered" || r == "unknown") << r;
      (r == "unknown" ? unknown : covered)++;
    }
  }
  std::printf("%zu-byte intent log, %zu marks: %d flips answered unknown, %d covered\n", orig_.size(),
              marks_.size(), unknown, covered);
}

TEST_F(IntentLogDamageTest, EveryTruncationIsCoveredOrUnknown) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  int unknown = 0, covered = 0;
  for (size_t n = 0; n < orig_.size(); ++n) {
    Put(std::vector<uint8_t>(orig_.begin(), orig_.begin() + static_cast<long>(n)));
    std::string r = Check("truncated to " + std::to_string(n) + " of " + std::to_string(orig_.size()));
    ASSERT_TRUE(r == "covered" || r == "unknown") << r;
    (r == "unknown" ? unknown : covered)++;
  }
  std::printf("%zu-byte intent log: %d truncations answered unknown, %d covered\n", orig_.size(), unknown,
              covered);
}

TEST(StateFormatTest, ManifestRoundTrip) {
  tracker_internal::Manifest m;
  m.granularity_shift = 12;
  m.intent_region_shift = 26;
  m.flags = tracker_internal::kFlagIntentLog;
  m.disk_size = 1 << 30;
  m.next_id = 10;
  m.intent_floor = 7;
  m.active_file_id = 5;
  m.checkpoints.push_back({1, 2, 1234, 4096, 0, "first"});
  m.checkpoints.push_back({3, 0, 5678, 0, tracker_internal::kEntryGenerationUnknown, "second"});
  std::string bytes = tracker_internal::EncodeManifest(m);
  auto d = tracker_internal::DecodeManifest(
      {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, "M");
  ASSERT_TRUE(d.has_value()) << d.error().ToString();
  EXPECT_EQ(*d, m);
  // Byte-exact header prefix (docs/formats/tracker-state.md §3.5 example).
  EXPECT_EQ(bytes.substr(0, 12), std::string("STRATATM\x01\x00\x40\x00", 12));
  EXPECT_EQ(bytes.size(), 64u + 40 + 5 + 40 + 6 + 8);
  // With a UUID the header grows to 80 bytes (compatible bit 0); readers
  // that know only 64 bytes skip the rest.
  m.uuid[3] = 7;
  std::string with = tracker_internal::EncodeManifest(m);
  EXPECT_EQ(with.size(), bytes.size() + 16);
  EXPECT_EQ(with.substr(10, 2), std::string("\x50\x00", 2));
  auto d2 = tracker_internal::DecodeManifest(
      {reinterpret_cast<const uint8_t*>(with.data()), with.size()}, "M");
  ASSERT_TRUE(d2.has_value()) << d2.error().ToString();
  EXPECT_EQ(*d2, m);
}

// Chain identity (docs/design/chains.md): a tracker's UUID is made at
// creation, survives reopening, differs for a re-created tracker, and a
// manifest written before UUIDs existed gets one at its first read-write open.
TEST(TrackerTest, UuidIdentifiesTheTracker) {
  TempDir dir;
  std::string d = dir.File("t");
  auto t = MustCreate(d, 1 << 20);
  std::array<uint8_t, 16> zero{}, first = t->uuid();
  EXPECT_NE(first, zero);
  ASSERT_TRUE(t->Close().ok());
  EXPECT_EQ(MustOpen(d)->uuid(), first);
  OpenOptions ro;
  ro.read_only = true;
  EXPECT_EQ(MustOpen(d, ro)->uuid(), first);
  fs::remove_all(d);
  auto again = MustCreate(d, 1 << 20);
  EXPECT_NE(again->uuid(), first);
  ASSERT_TRUE(again->Close().ok());
  // An old manifest (header size 64, no compatible bit): rewrite without it.
  auto bytes = testing::ReadFileBytes(d + "/MANIFEST");
  auto m = tracker_internal::DecodeManifest(bytes, "M");
  ASSERT_TRUE(m.has_value());
  m->uuid = {};
  std::string old = tracker_internal::EncodeManifest(*m);
  EXPECT_EQ(old.substr(10, 2), std::string("\x40\x00", 2));
  testing::WriteFileBytes(d + "/MANIFEST", std::vector<uint8_t>(old.begin(), old.end()));
  EXPECT_EQ(MustOpen(d, ro)->uuid(), zero);
  std::array<uint8_t, 16> upgraded;
  {
    auto rw = MustOpen(d);
    upgraded = rw->uuid();
    ASSERT_TRUE(rw->Close().ok());
  }
  EXPECT_NE(upgraded, zero);
  EXPECT_EQ(MustOpen(d, ro)->uuid(), upgraded);
}

// The intent log codec (docs/formats/tracker-state.md §4): a valid prefix
// of commits then never-written zeros decodes; every other shape is damage.
TEST(StateFormatTest, IntentLogSectors) {
  namespace ti = tracker_internal;
  constexpr size_t kS = ti::kIntentSectorSize;
  ti::IntentHeader h{7, 1 << 30, 26, 8};  // 16 regions, capacity 8 sectors
  std::vector<uint8_t> log = ti::EncodeIntentHeader(h);
  ASSERT_EQ(log.size(), kS);
  // Byte-exact header prefix (§4.5 example).
  EXPECT_EQ(std::string(log.begin(), log.begin() + 12), std::string("STRATAIL\x02\x00\x00\x02", 12));
  log.resize(8 * kS, 0);
  const std::vector<std::vector<ti::IntentRange>> commits = {{{3, 1}}, {{5, 2}, {15, 1}}, {{0, 16}}};
  for (size_t i = 0; i < commits.size(); ++i) {
    ti::EncodeIntentSector(7, i + 1, commits[i], log.data() + (i + 1) * kS);
  }
  auto c = ti::DecodeIntentLog(log, "L");
  ASSERT_TRUE(c.has_value()) << c.error().ToString();
  EXPECT_EQ(c->commits, 3u);
  EXPECT_EQ(c->ranges, (std::vector<ti::IntentRange>{{3, 1}, {5, 2}, {15, 1}, {0, 16}}));
  auto corrupt_at = [](const std::vector<uint8_t>& b, const std::string& hex) {
    auto r = ti::DecodeIntentLog(b, "L");
    if (r) return std::string("decoded");
    if (r.error().code() != StatusCode::kCorruption) return r.error().ToString();
    if (r.error().message().find("L: ") != 0 || r.error().message().find(hex) == std::string::npos) {
      return r.error().message();
    }
    return std::string("ok");
  };
  // A commit moved to another position (sequence number) or from another
  // epoch does not validate.
  auto moved = log;
  std::copy(log.begin() + 2 * kS, log.begin() + 3 * kS, moved.begin() + 4 * kS);
  EXPECT_EQ(corrupt_at(moved, "0x800"), "ok");
  auto other = log;
  ti::EncodeIntentSector(8, 4, commits[0], other.data() + 4 * kS);
  EXPECT_EQ(corrupt_at(other, "0x800"), "ok");
  // A hole before a valid commit; a range past the disk; short files.
  auto hole = log;
  std::fill(hole.begin() + kS, hole.begin() + 2 * kS, 0);
  EXPECT_EQ(corrupt_at(hole, "0x200"), "ok");
  auto past = log;
  ti::EncodeIntentSector(7, 4, std::vector<ti::IntentRange>{{15, 2}}, past.data() + 4 * kS);
  EXPECT_EQ(corrupt_at(past, "0x800"), "ok");
  EXPECT_EQ(corrupt_at(std::vector<uint8_t>(log.begin(), log.end() - 1), "0xfff"), "ok");
  EXPECT_EQ(corrupt_at(std::vector<uint8_t>(log.begin(), log.begin() + 100), "0x64"), "ok");
  EXPECT_EQ(corrupt_at({}, "0x0"), "ok");
  // Capacity beyond what the disk can ever need.
  ti::IntentHeader big = h;
  big.capacity = 18;
  EXPECT_EQ(corrupt_at(ti::EncodeIntentHeader(big), "0x28"), "ok");
  // A reader of this version refuses other versions instead of guessing.
  auto v3 = log;
  v3[8] = 3;
  auto r = ti::DecodeIntentLog(v3, "L");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kUnsupported);
}

TEST(DenseBitmapTest, MatchesVectorModel) {
  uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const uint64_t nbits = 3 * tracker_internal::DenseBitmap::kChunkBits + 777;
  auto bm = tracker_internal::DenseBitmap::Create(nbits);
  ASSERT_TRUE(bm.has_value());
  for (int round = 0; round < 3; ++round) {
    std::vector<bool> model(nbits);
    int n = 1 + static_cast<int>(rng() % 300);
    for (int i = 0; i < n; ++i) {
      uint64_t first = rng() % nbits;
      uint64_t max_len = std::min<uint64_t>(nbits - first, i % 10 == 0 ? 600000 : 200);
      uint64_t count = 1 + rng() % max_len;
      (*bm)->Set(first, count);
      for (uint64_t b = first; b < first + count; ++b) model[b] = true;
    }
    auto snap = ExtentSet::Create(nbits * 512, 512);
    ASSERT_TRUE(snap.has_value());
    ASSERT_TRUE((*bm)->Snapshot(&*snap).ok());
    auto drained = ExtentSet::Create(nbits * 512, 512);
    ASSERT_TRUE((*bm)->Drain(&*drained).ok());
    EXPECT_EQ(*snap, *drained);
    EXPECT_TRUE((*bm)->Empty());
    uint64_t count = 0;
    for (uint64_t b = 0; b < nbits; ++b) {
      if (model[b]) {
        ++count;
        ASSERT_TRUE(drained->Contains(b * 512)) << b;
      }
    }
    EXPECT_EQ(drained->BlockCount(), count);
  }
  // Lazily allocated: a fresh bitmap of 2^40 bits holds only its chunk table.
  auto huge = tracker_internal::DenseBitmap::Create(uint64_t{1} << 40);
  ASSERT_TRUE(huge.has_value());
  EXPECT_EQ((*huge)->MemoryBytes(), ((uint64_t{1} << 40) >> 18) * 8);
  (*huge)->Set((uint64_t{1} << 40) - 1, 1);
  EXPECT_LT((*huge)->MemoryBytes(), ((uint64_t{1} << 40) >> 18) * 8 + 40000);
}

TEST(TrackedDeviceTest, WritesAreMarkedAndStored) {
  TempDir tmp;
  std::string img = tmp.File("disk.raw");
  testing::WriteFileBytes(img, std::vector<uint8_t>(1 << 20));
  auto t = MustCreate(tmp.File("st"), 1 << 20);
  ASSERT_TRUE(t);
  ASSERT_TRUE(t->Checkpoint("a").has_value());
  auto dev = TrackedDevice::Open(img, t.get());
  ASSERT_TRUE(dev.has_value());
  std::vector<uint8_t> data(5000, 0xab);
  ASSERT_TRUE((*dev)->Write(10000, data).ok());
  EXPECT_EQ((*dev)->Write((1 << 20) - 10, data).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE((*dev)->Sync().ok());
  auto bytes = testing::ReadFileBytes(img);
  EXPECT_EQ(bytes[10000], 0xab);
  EXPECT_EQ(bytes[14999], 0xab);
  EXPECT_EQ(bytes[15000], 0);
  EXPECT_EQ(bytes[(1 << 20) - 1], 0);  // the refused write wrote nothing
  auto since = t->ChangedSince("a");
  ASSERT_TRUE(since.has_value());
  EXPECT_EQ(since->ToExtents(), (std::vector<ByteExtent>{{8192, 8192}}));
}

}  // namespace
}  // namespace strata
