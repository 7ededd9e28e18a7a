// qcow2 reader against QEMU 7.2 itself: every image is made here with
// qemu-img / qemu-io, then our map must equal `qemu-img map --output=json`
// byte for byte, our guest reads must equal `qemu-img convert -O raw`, our
// bitmaps must equal what `qemu-nbd -B` exports, and snapshot / layer diffs
// must cover every cluster whose data differs.
#include <gtest/gtest.h>

#include <random>
#include <regex>

#include "strata/open_image.h"
#include "strata/qcow2_image.h"
#include "tests/test_util.h"

namespace strata {
namespace {

using testing::RunOk;
using testing::ShellQuote;
using testing::TempDir;

bool HaveQemu() { return testing::HaveCommand("qemu-img") && testing::HaveCommand("qemu-io"); }

#define REQUIRE_QEMU() \
  if (!HaveQemu()) GTEST_SKIP() << "qemu-img/qemu-io not installed (scripts/setup.sh)"

void Qio(const std::string& img, const std::vector<std::string>& cmds,
         const std::string& fmt = "qcow2") {
  std::string c = "qemu-io -f " + fmt;
  for (const auto& x : cmds) c += " -c " + ShellQuote(x);
  RunOk(c + " " + ShellQuote(img) + " >/dev/null");
}

std::string OurMapJson(const std::string& path) {
  auto img = OpenImage(path, "auto");
  EXPECT_TRUE(img.has_value()) << img.error().ToString();
  if (!img) return "";
  std::string s = "[";
  bool first = true;
  Status st = MapImage(**img, [&](const MapEntry& e) {
    s += (first ? "" : ",\n") + MapEntryJson(e);
    first = false;
    return Status::Ok();
  });
  EXPECT_TRUE(st.ok()) << st.ToString();
  return s + "]\n";
}

void ExpectSameMap(const std::string& path) {
  SCOPED_TRACE(path);
  std::string qemu = RunOk("qemu-img map --output=json " + ShellQuote(path));
  EXPECT_EQ(OurMapJson(path), qemu);
}

// Compares our reads of `img` (whole, in odd-sized chunks, plus random
// unaligned reads) with the raw file `raw` QEMU produced.
void ExpectSameBytes(Image& img, const std::string& raw, uint64_t seed) {
  std::vector<uint8_t> want = testing::ReadFileBytes(raw);
  ASSERT_EQ(want.size(), img.size());
  std::vector<uint8_t> got(want.size());
  const uint64_t chunk = 1000 * 1000 + 7;  // deliberately unaligned
  for (uint64_t off = 0; off < got.size(); off += chunk) {
    uint64_t n = std::min<uint64_t>(chunk, got.size() - off);
    Status s = img.Read(off, std::span<uint8_t>(got.data() + off, n));
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  if (got != want) {
    size_t i = 0;
    while (got[i] == want[i]) ++i;
    FAIL() << img.name() << ": first difference at byte " << i;
  }
  std::mt19937_64 rng(seed);
  for (int k = 0; k < 50 && !want.empty(); ++k) {
    uint64_t off = rng() % want.size();
    uint64_t n = std::min<uint64_t>(1 + rng() % 300000, want.size() - off);
    std::vector<uint8_t> buf(n);
    ASSERT_TRUE(img.Read(off, buf).ok());
    ASSERT_TRUE(std::equal(buf.begin(), buf.end(), want.begin() + off)) << "read at " << off;
  }
}

void ExpectSameContent(const std::string& path, const std::string& snapshot = "") {
  SCOPED_TRACE(path + (snapshot.empty() ? "" : " snapshot " + snapshot));
  std::string raw = path + (snapshot.empty() ? "" : "." + snapshot) + ".raw";
  RunOk("qemu-img convert -O raw " + (snapshot.empty() ? "" : "-l " + ShellQuote(snapshot) + " ") +
        ShellQuote(path) + " " + ShellQuote(raw));
  auto q = OpenQcow2Image(path);
  ASSERT_TRUE(q.has_value()) << q.error().ToString();
  if (snapshot.empty()) {
    ExpectSameBytes(**q, raw, testing::TestSeed());
  } else {
    auto v = (*q)->OpenSnapshot(snapshot);
    ASSERT_TRUE(v.has_value()) << v.error().ToString();
    ExpectSameBytes(**v, raw, testing::TestSeed());
  }
  std::remove(raw.c_str());
}

void ExpectSameAsQemu(const std::string& path) {
  ExpectSameMap(path);
  ExpectSameContent(path);
}

// A writable mix for one image: data, zeroes over data, zeroes over
// nothing, discards, unaligned writes.
std::vector<std::string> Mix(uint64_t cs) {
  auto n = [](uint64_t v) { return std::to_string(v); };
  return {"write -P 0x11 0 " + n(3 * cs),
          "write -P 0x22 " + n(5 * cs + 1536) + " 3072",
          "write -z " + n(cs) + " " + n(cs),
          "write -z " + n(10 * cs) + " " + n(2 * cs),
          "write -P 0x33 " + n(12 * cs) + " " + n(4 * cs),
          "discard " + n(13 * cs) + " " + n(cs),
          "write -P 0x44 " + n(100 * cs + 512) + " " + n(cs)};
}

TEST(Qcow2Golden, Version2) {
  REQUIRE_QEMU();
  TempDir d;
  std::string p = d.File("v2.qcow2");
  RunOk("qemu-img create -q -f qcow2 -o compat=0.10 " + ShellQuote(p) + " 16M");
  Qio(p, Mix(65536));
  auto q = OpenQcow2Image(p);
  ASSERT_TRUE(q.has_value()) << q.error().ToString();
  EXPECT_EQ((*q)->info().version, 2u);
  ExpectSameAsQemu(p);
}

TEST(Qcow2Golden, ClusterSizes) {
  REQUIRE_QEMU();
  for (uint64_t cs : {512u, 4096u, 65536u, 2097152u}) {
    TempDir d;
    std::string p = d.File("c.qcow2");
    RunOk("qemu-img create -q -f qcow2 -o cluster_size=" + std::to_string(cs) + " " +
          ShellQuote(p) + " " + std::to_string(std::max<uint64_t>(cs * 128, 32 << 20)));
    Qio(p, Mix(cs));
    auto q = OpenQcow2Image(p);
    ASSERT_TRUE(q.has_value()) << q.error().ToString();
    EXPECT_EQ((*q)->info().cluster_size, cs);
    ExpectSameAsQemu(p);
  }
}

TEST(Qcow2Golden, ZeroClustersAndOddSize) {
  REQUIRE_QEMU();
  TempDir d;
  std::string p = d.File("z.qcow2");
  RunOk("qemu-img create -q -f qcow2 " + ShellQuote(p) + " 10000000");  // rounds to 512
  Qio(p, {"write -P 7 0 1M", "write -z 64k 128k", "write -z -u 256k 64k", "write -z 2M 1M",
          "discard 512k 64k", "write -P 9 9990000 4096"});
  ExpectSameAsQemu(p);
}

TEST(Qcow2Golden, Compressed) {
  REQUIRE_QEMU();
  TempDir d;
  std::string src = d.File("src.raw");
  RunOk("truncate -s 10M " + ShellQuote(src));
  // Compressible text, random (stays uncompressed), zeros, a short tail.
  Qio(src, {"write -P 0x61 0 1M", "write -P 0x5a 3M 200k", "write -P 0x11 6M 64k"}, "raw");
  RunOk("truncate -s 10M " + ShellQuote(src));
  RunOk("head -c 300000 /dev/urandom | dd of=" + ShellQuote(src) +
        " bs=1 seek=1500000 conv=notrunc status=none");
  for (auto [opts, cs] : std::vector<std::pair<std::string, uint64_t>>{
           {"cluster_size=65536", 65536},
           {"cluster_size=4096", 4096},
           {"compression_type=zstd", 65536},
           {"compression_type=zstd,cluster_size=2097152", 2097152},
           {"compression_type=zstd,cluster_size=512", 512}}) {
    SCOPED_TRACE(opts);
    std::string p = d.File("c.qcow2");
    RunOk("qemu-img convert -c -O qcow2 -o " + opts + " " + ShellQuote(src) + " " + ShellQuote(p));
    // Compressed writes on top of an existing image, too.
    Qio(p, {"write -c -P 0x77 8M " + std::to_string(cs)});
    auto q = OpenQcow2Image(p);
    ASSERT_TRUE(q.has_value()) << q.error().ToString();
    EXPECT_EQ((*q)->info().compression,
              opts.find("zstd") != std::string::npos ? "zstd" : "zlib");
    ExpectSameAsQemu(p);
  }
}

TEST(Qcow2Golden, ExtendedL2Subclusters) {
  REQUIRE_QEMU();
  TempDir d;
  std::string p = d.File("x.qcow2");
  RunOk("qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=64k " + ShellQuote(p) +
        " 16M");
  Qio(p, {"write -P 1 0 2k", "write -P 2 8k 4k", "write -P 3 10k 1k", "write -z 64k 16k",
          "write -P 4 128k 64k", "write -z 140k 8k", "discard 160k 2k", "write -P 5 1M 3k"});
  auto q = OpenQcow2Image(p);
  ASSERT_TRUE(q.has_value()) << q.error().ToString();
  EXPECT_TRUE((*q)->info().extended_l2);
  ExpectSameAsQemu(p);
  // With a backing file, unallocated subclusters read through.
  std::string base = d.File("base.qcow2"), top = d.File("top.qcow2");
  RunOk("qemu-img create -q -f qcow2 " + ShellQuote(base) + " 4M");
  Qio(base, {"write -P 0xbb 0 4M"});
  RunOk("qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=32k -b base.qcow2 -F qcow2 " +
        ShellQuote(top));
  Qio(top, {"write -P 0xcc 1k 1k", "write -P 0xdd 40k 3k", "write -z 100k 2k"});
  ExpectSameAsQemu(top);
}

TEST(Qcow2Golden, ThreeLayerChainRelativeNames) {
  REQUIRE_QEMU();
  TempDir d;
  RunOk("mkdir " + ShellQuote(d.File("sub")));
  std::string base = d.File("sub/base.qcow2"), mid = d.File("sub/mid.qcow2"),
              top = d.File("sub/top.qcow2");
  RunOk("qemu-img create -q -f qcow2 " + ShellQuote(base) + " 8M");
  Qio(base, {"write -P 1 0 2M", "write -z 3M 64k", "write -P 2 7M 64k"});
  RunOk("qemu-img create -q -f qcow2 -o cluster_size=4096 -b base.qcow2 -F qcow2 " +
        ShellQuote(mid) + " 12M");
  Qio(mid, {"write -P 3 64k 8k", "write -z 1M 64k", "write -P 4 9M 64k"});
  RunOk("qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 " + ShellQuote(top) + " 16M");
  Qio(top, {"write -P 5 128k 64k", "write -z 512k 64k", "write -P 6 14M 64k"});
  ExpectSameAsQemu(top);
  ExpectSameAsQemu(mid);
  auto q = OpenQcow2Image(top);
  ASSERT_TRUE(q.has_value());
  EXPECT_EQ((*q)->FileAt(2), base);
  // Layer diff: exactly what qemu-img map says is present above depth N.
  for (int layers = 1; layers <= 3; ++layers) {
    auto set = (*q)->LayerDiff(layers);
    ASSERT_TRUE(set.has_value()) << set.error().ToString();
    auto want = ExtentSet::Create((*q)->size(), 65536);
    std::string js = RunOk("qemu-img map --output=json " + ShellQuote(top));
    std::regex re(R"re("start": (\d+), "length": (\d+), "depth": (\d+), "present": (true|false))re");
    for (auto it = std::sregex_iterator(js.begin(), js.end(), re); it != std::sregex_iterator(); ++it) {
      if ((*it)[4] == "true" && std::stoi((*it)[3]) < layers) {
        ASSERT_TRUE(want->Add(std::stoull((*it)[1]), std::stoull((*it)[2])).ok());
      }
    }
    EXPECT_TRUE(*set == *want) << "layers " << layers;
  }
  // A raw base with an explicit format.
  std::string rbase = d.File("sub/base.raw"), rtop = d.File("sub/rtop.qcow2");
  RunOk("truncate -s 1M " + ShellQuote(rbase));
  Qio(rbase, {"write -P 8 0 1M"}, "raw");
  RunOk("truncate -s 3M " + ShellQuote(rbase));
  RunOk("qemu-img create -q -f qcow2 -b base.raw -F raw " + ShellQuote(rtop) + " 4M");
  Qio(rtop, {"write -P 9 64k 64k"});
  ExpectSameAsQemu(rtop);
}

TEST(Qcow2Golden, SparseEightGiBAcrossL2Tables) {
  REQUIRE_QEMU();
  TempDir d;
  std::string p = d.File("big.qcow2");
  RunOk("qemu-img create -q -f qcow2 " + ShellQuote(p) + " 8G");
  // 64 KiB clusters: one L2 table maps 512 MiB, so these touch many tables.
  std::vector<uint64_t> offs = {0, (1ull << 30) - 4096, (3ull << 30) + 123 * 1024,
                                (5ull << 30) + 7, (8ull << 30) - 65536};
  std::vector<std::string> cmds;
  for (size_t i = 0; i < offs.size(); ++i) {
    cmds.push_back("write -P " + std::to_string(i + 1) + " " + std::to_string(offs[i] & ~511ull) +
                   " 65536");
  }
  cmds.push_back("write -z 2G 1G");
  Qio(p, cmds);
  ExpectSameMap(p);
  auto q = OpenQcow2Image(p);
  ASSERT_TRUE(q.has_value());
  for (size_t i = 0; i < offs.size(); ++i) {
    uint64_t o = offs[i] & ~511ull;
    std::vector<uint8_t> buf(65536 + 1024);
    uint64_t start = o >= 512 ? o - 512 : 0;
    uint64_t n = std::min<uint64_t>(buf.size(), (*q)->size() - start);
    ASSERT_TRUE((*q)->Read(start, std::span<uint8_t>(buf.data(), n)).ok());
    for (uint64_t k = 0; k < n; ++k) {
      uint64_t g = start + k;
      uint8_t want = (g >= o && g < o + 65536) ? static_cast<uint8_t>(i + 1) : 0;
      ASSERT_EQ(buf[k], want) << "guest byte " << g;
    }
  }
}

TEST(Qcow2Golden, Preallocation) {
  REQUIRE_QEMU();
  for (std::string mode : {"metadata", "falloc"}) {
    TempDir d;
    std::string p = d.File("p.qcow2");
    RunOk("qemu-img create -q -f qcow2 -o preallocation=" + mode + " " + ShellQuote(p) + " 64M");
    Qio(p, {"write -P 1 1M 128k", "write -z 8M 64k"});
    ExpectSameAsQemu(p);
  }
}

TEST(Qcow2Golden, InternalSnapshots) {
  REQUIRE_QEMU();
  TempDir d;
  std::string p = d.File("s.qcow2");
  RunOk("qemu-img create -q -f qcow2 " + ShellQuote(p) + " 64M");
  Qio(p, {"write -P 1 0 4M", "write -P 2 40M 1M"});
  RunOk("qemu-img snapshot -c first " + ShellQuote(p));
  Qio(p, {"write -P 3 1M 64k", "write -z 2M 128k", "write -P 4 50M 64k"});
  RunOk("qemu-img snapshot -c second " + ShellQuote(p));
  Qio(p, {"write -P 5 100k 4k", "discard 40M 64k", "write -P 1 3M 64k"});  // same data again
  auto q = OpenQcow2Image(p);
  ASSERT_TRUE(q.has_value()) << q.error().ToString();
  const auto& snaps = (*q)->Snapshots();
  ASSERT_EQ(snaps.size(), 2u);
  std::string list = RunOk("qemu-img snapshot -l " + ShellQuote(p));
  for (const auto& s : snaps) {
    EXPECT_NE(list.find(s.id + "         " + s.name), std::string::npos) << list;
    EXPECT_EQ(s.disk_size, 64u << 20);
  }
  ExpectSameMap(p);
  ExpectSameContent(p, "first");
  ExpectSameContent(p, "second");
  ExpectSameContent(p, "1");  // by ID
  EXPECT_EQ((*q)->OpenSnapshot("nope").error().code(), StatusCode::kNotFound);

  // Diffs must cover every cluster whose data differs (checked on the data).
  auto view = [&](const std::string& s) -> std::unique_ptr<Image> {
    if (s.empty()) return nullptr;
    auto v = (*q)->OpenSnapshot(s);
    EXPECT_TRUE(v.has_value());
    return std::move(*v);
  };
  for (auto [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"first", "second"}, {"first", ""}, {"second", ""}, {"second", "first"}}) {
    SCOPED_TRACE(from + " -> " + (to.empty() ? "active" : to));
    auto diff = (*q)->SnapshotDiff(from, to);
    ASSERT_TRUE(diff.has_value()) << diff.error().ToString();
    auto a = view(from);
    auto b = view(to);
    Image& ib = b ? *b : **q;
    const uint64_t cs = 65536;
    std::vector<uint8_t> x(cs), y(cs);
    uint64_t differing = 0;
    for (uint64_t off = 0; off < ib.size(); off += cs) {
      ASSERT_TRUE(a->Read(off, x).ok());
      ASSERT_TRUE(ib.Read(off, y).ok());
      if (x != y) {
        ++differing;
        EXPECT_TRUE(diff->Contains(off)) << "cluster at " << off << " differs but is not listed";
      }
    }
    EXPECT_GT(differing, 0u);
    // Not trivially everything: the untouched tail is not reported.
    EXPECT_FALSE(diff->Intersects(60u << 20, 4u << 20));
    EXPECT_LE(diff->BlockCount(), differing + 4);  // only the rewrites with equal data extra
  }
}

// Dirty ranges QEMU exports for `bitmap`, via qemu-nbd and nbdinfo.
Result<std::vector<ByteExtent>> QemuBitmap(const std::string& img, const std::string& bitmap) {
  auto r = testing::RunCommand("nbdinfo --json --map=qemu:dirty-bitmap:" + bitmap + " -- [ qemu-nbd -r -B " +
                        ShellQuote(bitmap) + " -f qcow2 " + ShellQuote(img) + " ]");
  if (r.exit_code != 0) return Status::Corruption(r.err);
  std::vector<ByteExtent> out;
  std::regex re(R"re("offset": (\d+), "length": (\d+), "type": (\d+))re");
  for (auto it = std::sregex_iterator(r.out.begin(), r.out.end(), re); it != std::sregex_iterator();
       ++it) {
    if (std::stoi((*it)[3]) & 1) {
      ByteExtent e{std::stoull((*it)[1]), std::stoull((*it)[2])};
      if (!out.empty() && out.back().end() == e.offset) out.back().length += e.length;
      else out.push_back(e);
    }
  }
  return out;
}

TEST(Qcow2Golden, PersistentBitmaps) {
  REQUIRE_QEMU();
  if (!testing::HaveCommand("nbdinfo") || !testing::HaveCommand("qemu-nbd")) {
    GTEST_SKIP() << "nbdinfo/qemu-nbd not installed";
  }
  TempDir d;
  std::string p = d.File("b.qcow2");
  RunOk("qemu-img create -q -f qcow2 " + ShellQuote(p) + " 10000000");
  RunOk("qemu-img bitmap --add -g 4096 " + ShellQuote(p) + " fine");
  RunOk("qemu-img bitmap --add " + ShellQuote(p) + " coarse");
  RunOk("qemu-img bitmap --add -g 65536 " + ShellQuote(p) + " frozen");
  Qio(p, {"write -P 1 100k 8k", "write 9990000 4k", "write -z 1M 300k"});
  RunOk("qemu-img bitmap --disable " + ShellQuote(p) + " frozen");
  Qio(p, {"write 3M 64k", "discard 5M 1M", "write 7000k 1k"});
  RunOk("qemu-img bitmap --add -g 2M " + ShellQuote(p) + " late");
  Qio(p, {"write 8M 4k"});
  auto q = OpenQcow2Image(p);
  ASSERT_TRUE(q.has_value()) << q.error().ToString();
  auto list = (*q)->Bitmaps();
  ASSERT_TRUE(list.has_value()) << list.error().ToString();
  ASSERT_EQ(list->size(), 4u);
  for (const Qcow2Bitmap& b : *list) {
    SCOPED_TRACE(b.name);
    EXPECT_FALSE(b.in_use);
    EXPECT_TRUE(b.consistent);
    EXPECT_EQ(b.auto_flag, b.name != "frozen");
    EXPECT_EQ(b.granularity, b.name == "fine" ? 4096u : b.name == "late" ? 2u << 20 : 65536u);
    auto set = (*q)->LoadBitmap(b.name);
    ASSERT_TRUE(set.has_value()) << set.error().ToString();
    auto want = QemuBitmap(p, b.name);
    ASSERT_TRUE(want.has_value()) << want.error().ToString();
    EXPECT_FALSE(want->empty());
    EXPECT_EQ(set->ToExtents(), *want);
  }
  EXPECT_EQ((*q)->LoadBitmap("missing").error().code(), StatusCode::kNotFound);

  // A qemu-io killed while holding the image leaves every bitmap in_use.
  testing::RunCommand("(qemu-io -f qcow2 -c 'write 64k 4k' -c 'sigraise 9' " + ShellQuote(p) +
                      ") >/dev/null 2>&1");
  auto q2 = OpenQcow2Image(p);
  ASSERT_TRUE(q2.has_value()) << q2.error().ToString();
  auto list2 = (*q2)->Bitmaps();
  ASSERT_TRUE(list2.has_value());
  for (const Qcow2Bitmap& b : *list2) {
    EXPECT_TRUE(b.in_use) << b.name;
    EXPECT_FALSE(b.consistent);
    auto r = (*q2)->LoadBitmap(b.name);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code(), StatusCode::kUnknownState);
    EXPECT_NE(r.error().message().find("full backup"), std::string::npos);
    EXPECT_TRUE((*q2)->LoadBitmap(b.name, /*force=*/true).has_value());
    EXPECT_FALSE(QemuBitmap(p, b.name).has_value());  // QEMU refuses it too
  }
}

// Random configurations (cluster size, extended L2, v2, backing file) and
// random writes / zero writes / discards; map and content must match QEMU.
TEST(Qcow2Golden, RandomImagesMatchQemu) {
  REQUIRE_QEMU();
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE("STRATA_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const uint64_t sizes[] = {512, 4096, 16384, 65536, 2097152};
  for (int round = 0; round < 6; ++round) {
    TempDir d;
    const uint64_t cs = sizes[rng() % 5];
    std::string opts = "cluster_size=" + std::to_string(cs);
    if (cs >= 16384 && rng() % 3 == 0) opts += ",extended_l2=on";
    else if (rng() % 4 == 0) opts += ",compat=0.10";
    const uint64_t size = (1 + rng() % 24) * (1u << 20) + (rng() % 2) * 512 * (rng() % 100);
    std::string top = d.File("top.qcow2");
    if (rng() % 2) {
      std::string base = d.File("base.qcow2");
      RunOk("qemu-img create -q -f qcow2 " + ShellQuote(base) + " " + std::to_string(size / 2 / 512 * 512));
      Qio(base, {"write -P 9 0 " + std::to_string(size / 3 / 512 * 512)});
      opts += ",backing_file=base.qcow2,backing_fmt=qcow2";
    }
    RunOk("qemu-img create -q -f qcow2 -o " + opts + " " + ShellQuote(top) + " " + std::to_string(size));
    std::vector<std::string> cmds;
    for (int i = 0, n = 1 + static_cast<int>(rng() % 12); i < n; ++i) {
      uint64_t off = rng() % size / 512 * 512;
      uint64_t len = std::min<uint64_t>((1 + rng() % 300) * 512, size - off);
      std::string range = std::to_string(off) + " " + std::to_string(len);
      switch (rng() % 5) {
        case 0: case 1: cmds.push_back("write -P " + std::to_string(1 + rng() % 250) + " " + range); break;
        case 2: cmds.push_back("write -z " + range); break;
        case 3: cmds.push_back("discard " + range); break;
        default: cmds.push_back("write -z -u " + range); break;
      }
    }
    SCOPED_TRACE(opts + " size " + std::to_string(size));
    std::string c = "qemu-io -f qcow2";
    for (const auto& x : cmds) c += " -c " + ShellQuote(x);
    testing::RunCommand(c + " " + ShellQuote(top) + " >/dev/null 2>&1");  // some ops may be refused
    ExpectSameAsQemu(top);
  }
}

TEST(Qcow2Golden, ExtentDumpCli) {
  REQUIRE_QEMU();
  TempDir d;
  std::string base = d.File("base.qcow2"), p = d.File("cli.qcow2");
  RunOk("qemu-img create -q -f qcow2 " + ShellQuote(base) + " 4M");
  Qio(base, {"write -P 1 0 1M"});
  RunOk("qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 " + ShellQuote(p) + " 4M");
  RunOk("qemu-img bitmap --add " + ShellQuote(p) + " b0");
  Qio(p, {"write -P 2 2M 64k", "write -z 3M 64k"});
  RunOk("qemu-img snapshot -c s1 " + ShellQuote(p));
  Qio(p, {"write -P 3 256k 64k"});
  const std::string ed = testing::Tool("extent-dump") + " ";
  EXPECT_EQ(RunOk(ed + "--output json " + ShellQuote(p)),
            RunOk("qemu-img map --output=json " + ShellQuote(p)));
  const std::string three =
      "[{\"start\": 262144, \"length\": 65536},\n{\"start\": 2097152, \"length\": 65536},\n"
      "{\"start\": 3145728, \"length\": 65536}]\n";
  EXPECT_EQ(RunOk(ed + "--json --bitmap b0 " + ShellQuote(p)), three);
  EXPECT_EQ(RunOk(ed + "--json --list-bitmaps " + ShellQuote(p)),
            "[{\"name\": \"b0\", \"granularity\": 65536, \"in_use\": false, \"auto\": true, "
            "\"consistent\": true}]\n");
  EXPECT_EQ(RunOk(ed + "--json --diff s1 " + ShellQuote(p)),
            "[{\"start\": 262144, \"length\": 65536}]\n");
  EXPECT_EQ(RunOk(ed + "--json --layers 1 " + ShellQuote(p)), three);
  auto bad = testing::RunCommand(ed + "--bitmap nope " + ShellQuote(p));
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("no persistent bitmap 'nope'"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace strata
