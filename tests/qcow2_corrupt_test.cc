// Hand-corrupted qcow2 images: one test per validation rule of the
// reference's §10 (docs/formats/qcow2-support.md lists them). Each starts
// from an image QEMU made, breaks one field, and expects a one-line error of
// the right code naming the image, the structure and a byte offset, and
// never a crash (these also run under ASan/UBSan).
#include <gtest/gtest.h>

#include <functional>

#include "extents/endian.h"
#include "strata/open_image.h"
#include "formats/qcow2/qcow2_format.h"
#include "strata/qcow2_image.h"
#include "tests/test_util.h"

namespace strata {
namespace {

using testing::RunOk;
using testing::ShellQuote;
using testing::TempDir;

// A QEMU-made image and the offsets of its structures.
struct Img {
  std::vector<uint8_t> b;
  qcow2::Header h;
  uint64_t l2 = 0;         // L2 table of L1 entry 0
  uint64_t data = 0;       // host cluster of guest cluster 0
  uint64_t ext_start = 0;  // first header extension
  std::vector<qcow2::BitmapEntry> bitmaps;
  uint64_t bitmap_dir = 0;

  void Put32(uint64_t off, uint32_t v) { StoreBE32(b.data() + off, v); }
  void Put64(uint64_t off, uint64_t v) { StoreBE64(b.data() + off, v); }
  uint64_t Get64(uint64_t off) const { return LoadBE64(b.data() + off); }
  // Offset of the first header extension of `type` (its type field).
  uint64_t Ext(uint32_t type) const {
    uint64_t off = h.header_length;
    while (off + 8 <= h.cluster_size()) {
      uint32_t t = LoadBE32(b.data() + off);
      if (t == type) return off;
      if (t == 0) break;
      off += 8 + ((LoadBE32(b.data() + off + 4) + 7) & ~7u);
    }
    ADD_FAILURE() << "no extension " << std::hex << type;
    return 0;
  }
};

enum Base { kPlain, kV2, kCompressed, kExtended };

class Qcow2Corrupt : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!testing::HaveCommand("qemu-img")) return;
    dir_ = new TempDir();
    auto f = [](const char* n) { return ShellQuote(dir_->File(n)); };
    RunOk("qemu-img create -q -f qcow2 " + f("plain") + " 4M");
    RunOk("qemu-io -f qcow2 -c 'write -P 1 0 256k' " + f("plain") + " >/dev/null");
    RunOk("qemu-img snapshot -c s1 " + f("plain"));
    RunOk("qemu-img bitmap --add " + f("plain") + " b0");
    RunOk("qemu-io -f qcow2 -c 'write -P 2 0 64k' -c 'write -P 3 1M 64k' " + f("plain") +
          " >/dev/null");
    RunOk("qemu-img create -q -f qcow2 -o compat=0.10 " + f("v2") + " 4M");
    RunOk("qemu-io -f qcow2 -c 'write -P 1 0 256k' " + f("v2") + " >/dev/null");
    RunOk("qemu-img convert -c -O qcow2 " + f("v2") + " " + f("compressed"));
    RunOk("qemu-img create -q -f qcow2 -o extended_l2=on " + f("extended") + " 4M");
    RunOk("qemu-io -f qcow2 -c 'write -P 1 0 2k' " + f("extended") + " >/dev/null");
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (!dir_) GTEST_SKIP() << "qemu-img not installed";
  }

  static Img Load(Base base) {
    const char* names[] = {"plain", "v2", "compressed", "extended"};
    Img img;
    img.b = testing::ReadFileBytes(dir_->File(names[base]));
    auto h = qcow2::ParseHeader(img.b, img.b.size(), "x");
    EXPECT_TRUE(h.has_value());
    img.h = *h;
    img.l2 = img.Get64(img.h.l1_table_offset) & qcow2::kOffsetMask;
    img.data = img.Get64(img.l2) & qcow2::kOffsetMask;
    img.ext_start = img.h.header_length;
    if (img.h.has_bitmaps) {
      img.bitmap_dir = img.h.bitmaps.directory_offset;
      auto d = qcow2::ParseBitmapDirectory(
          std::span<const uint8_t>(img.b).subspan(img.bitmap_dir, img.h.bitmaps.directory_size),
          img.h, img.b.size(), "x");
      EXPECT_TRUE(d.has_value());
      img.bitmaps = *d;
    }
    return img;
  }

  // Everything a reader does with an image; the first error.
  static Status Exercise(const std::string& path) {
    auto q = OpenQcow2Image(path);
    if (!q) return q.error();
    Qcow2Image& img = **q;
    STRATA_RETURN_IF_ERROR(MapImage(img, [](const MapEntry&) { return Status::Ok(); }));
    std::vector<uint8_t> buf(img.size());
    STRATA_RETURN_IF_ERROR(img.Read(0, buf));
    STRATA_ASSIGN_OR_RETURN(auto bitmaps, img.Bitmaps());
    for (const auto& b : bitmaps) STRATA_RETURN_IF_ERROR(img.LoadBitmap(b.name, true).status());
    for (const auto& s : img.Snapshots()) {
      STRATA_ASSIGN_OR_RETURN(auto v, img.OpenSnapshot(s.id));
      std::vector<uint8_t> sb(v->size());
      STRATA_RETURN_IF_ERROR(v->Read(0, sb));
      STRATA_RETURN_IF_ERROR(img.SnapshotDiff(s.id).status());
    }
    return Status::Ok();
  }

  // Applies `patch` to a copy of `base`, then expects `code` and `needle`.
  void Expect(Base base, const std::function<void(Img&)>& patch, StatusCode code,
              const std::string& needle) {
    Img img = Load(base);
    patch(img);
    std::string path = dir_->File("bad.qcow2");
    testing::WriteFileBytes(path, img.b);
    Status s = Exercise(path);
    ASSERT_FALSE(s.ok()) << "corruption not detected";
    EXPECT_EQ(s.code(), code) << s.ToString();
    EXPECT_NE(s.message().find(needle), std::string::npos) << s.ToString();
    EXPECT_NE(s.message().find(path), std::string::npos) << s.ToString();
    EXPECT_EQ(s.message().find('\n'), std::string::npos) << s.ToString();
    if (code == StatusCode::kCorruption) {
      EXPECT_NE(s.message().find(" at 0x"), std::string::npos) << s.ToString();
    }
  }

  static TempDir* dir_;
};
TempDir* Qcow2Corrupt::dir_ = nullptr;

constexpr StatusCode kCorrupt = StatusCode::kCorruption;
constexpr StatusCode kUnsup = StatusCode::kUnsupported;

TEST_F(Qcow2Corrupt, BaselinesAreClean) {
  for (const char* n : {"plain", "v2", "compressed", "extended"}) {
    EXPECT_TRUE(Exercise(dir_->File(n)).ok()) << n << ": " << Exercise(dir_->File(n)).ToString();
  }
}

// --- header (§10 rules 1-6) ---
TEST_F(Qcow2Corrupt, ShortFile) { Expect(kPlain, [](Img& i) { i.b.resize(50); }, kCorrupt, "too short"); }
TEST_F(Qcow2Corrupt, ShortV3Header) { Expect(kPlain, [](Img& i) { i.b.resize(90); }, kCorrupt, "v3 header"); }
TEST_F(Qcow2Corrupt, BadMagic) { Expect(kPlain, [](Img& i) { i.b[0] = 'X'; }, kCorrupt, "bad magic"); }
TEST_F(Qcow2Corrupt, UnknownVersion) { Expect(kPlain, [](Img& i) { i.Put32(4, 4); }, kUnsup, "version 4"); }
TEST_F(Qcow2Corrupt, ClusterBitsTooSmall) { Expect(kPlain, [](Img& i) { i.Put32(20, 8); }, kCorrupt, "cluster_bits"); }
TEST_F(Qcow2Corrupt, ClusterBitsTooLarge) { Expect(kPlain, [](Img& i) { i.Put32(20, 22); }, kCorrupt, "cluster_bits"); }
TEST_F(Qcow2Corrupt, HeaderLengthTooShort) { Expect(kPlain, [](Img& i) { i.Put32(100, 96); }, kCorrupt, "header_length"); }
TEST_F(Qcow2Corrupt, HeaderLengthUnaligned) { Expect(kPlain, [](Img& i) { i.Put32(100, 108); }, kCorrupt, "header_length"); }
TEST_F(Qcow2Corrupt, UnknownIncompatibleBit) {
  Expect(kPlain, [](Img& i) { i.Put64(72, i.Get64(72) | (1ull << 5)); }, kUnsup, "bit 5");
}
TEST_F(Qcow2Corrupt, ExternalDataFileRefused) {
  Expect(kPlain, [](Img& i) { i.Put64(72, i.Get64(72) | 4); }, kUnsup, "external data file");
}
TEST_F(Qcow2Corrupt, RefcountOrderTooLarge) { Expect(kPlain, [](Img& i) { i.Put32(96, 7); }, kCorrupt, "refcount_order"); }
TEST_F(Qcow2Corrupt, EncryptionRefused) { Expect(kPlain, [](Img& i) { i.Put32(32, 1); }, kUnsup, "crypt_method"); }
TEST_F(Qcow2Corrupt, CompressionTypeWithoutBit) { Expect(kPlain, [](Img& i) { i.b[104] = 1; }, kCorrupt, "compression_type"); }
TEST_F(Qcow2Corrupt, UnknownCompressionType) {
  Expect(kPlain, [](Img& i) { i.b[104] = 2; i.Put64(72, i.Get64(72) | 8); }, kUnsup, "compression type 2");
}
TEST_F(Qcow2Corrupt, ExtendedL2NeedsLargeClusters) {
  Expect(kExtended, [](Img& i) { i.Put32(20, 13); }, kCorrupt, "extended L2");
}
TEST_F(Qcow2Corrupt, DirtyAndCorruptBitsStillRead) {
  Img img = Load(kPlain);
  img.Put64(72, img.Get64(72) | 3);
  std::string path = dir_->File("flags.qcow2");
  testing::WriteFileBytes(path, img.b);
  EXPECT_TRUE(Exercise(path).ok());
  auto q = OpenQcow2Image(path);
  ASSERT_TRUE(q.has_value());
  EXPECT_TRUE((*q)->info().dirty);
  EXPECT_TRUE((*q)->info().corrupt);
}

// --- header extensions and backing name (rules 10-12) ---
TEST_F(Qcow2Corrupt, ExtensionLengthPastArea) {
  Expect(kPlain, [](Img& i) { i.Put32(i.ext_start + 4, 0xffff); }, kCorrupt, "header extension");
}
TEST_F(Qcow2Corrupt, DuplicateExtension) {
  Expect(kPlain, [](Img& i) { i.Put32(i.Ext(0x23852875), 0x6803F857); }, kCorrupt, "appears twice");
}
TEST_F(Qcow2Corrupt, BitmapsExtensionWrongLength) {
  Expect(kPlain, [](Img& i) { i.Put32(i.Ext(0x23852875) + 4, 16); }, kCorrupt, "bitmaps extension");
}
TEST_F(Qcow2Corrupt, BackingOffsetPastCluster) {
  Expect(kPlain, [](Img& i) { i.Put64(8, 0x20000); i.Put32(16, 4); }, kCorrupt, "backing_file_offset");
}
TEST_F(Qcow2Corrupt, BackingNameTooLong) {
  Expect(kPlain, [](Img& i) { i.Put64(8, 0x400); i.Put32(16, 2000); }, kCorrupt, "backing file name");
}

// --- tables (rules 7-9) ---
TEST_F(Qcow2Corrupt, L1TooLarge) { Expect(kPlain, [](Img& i) { i.Put32(36, 5000000); }, kCorrupt, "exceeds 32 MiB"); }
TEST_F(Qcow2Corrupt, L1TooSmall) { Expect(kPlain, [](Img& i) { i.Put32(36, 0); }, kCorrupt, "too small"); }
TEST_F(Qcow2Corrupt, L1Unaligned) {
  Expect(kPlain, [](Img& i) { i.Put64(40, i.h.l1_table_offset + 512); }, kCorrupt, "not cluster aligned");
}
TEST_F(Qcow2Corrupt, L1PastEndOfFile) { Expect(kPlain, [](Img& i) { i.Put64(40, 0x7fff0000); }, kCorrupt, "past end of file"); }
TEST_F(Qcow2Corrupt, NoRefcountTable) { Expect(kPlain, [](Img& i) { i.Put32(56, 0); }, kCorrupt, "refcount table"); }
TEST_F(Qcow2Corrupt, RefcountTableTooLarge) { Expect(kPlain, [](Img& i) { i.Put32(56, 1000); }, kCorrupt, "exceed 8 MiB"); }
TEST_F(Qcow2Corrupt, HugeVirtualSize) { Expect(kPlain, [](Img& i) { i.Put64(24, ~0ull); }, kUnsup, "larger than 2^63"); }

// --- mapping (rules 13-18) ---
TEST_F(Qcow2Corrupt, L2OffsetUnaligned) {
  Expect(kPlain, [](Img& i) { i.Put64(i.h.l1_table_offset, i.Get64(i.h.l1_table_offset) + 512); },
         kCorrupt, "L1 table entry 0");
}
TEST_F(Qcow2Corrupt, L2PastEndOfFile) {
  Expect(kPlain, [](Img& i) { i.Put64(i.h.l1_table_offset, 0x7fff0000); }, kCorrupt, "past end of file");
}
TEST_F(Qcow2Corrupt, DataClusterUnaligned) {
  Expect(kPlain, [](Img& i) { i.Put64(i.l2, i.Get64(i.l2) + 512); }, kCorrupt, "not cluster aligned");
}
TEST_F(Qcow2Corrupt, ZeroBitInVersion2) {
  Expect(kV2, [](Img& i) { i.Put64(i.l2, i.Get64(i.l2) | 1); }, kCorrupt, "version 2");
}
TEST_F(Qcow2Corrupt, CompressedDataGarbage) {
  Expect(kCompressed, [](Img& i) {
    uint64_t e = i.Get64(i.l2);
    uint64_t off = e & ((1ull << 54) - 1);
    for (int k = 0; k < 64; ++k) i.b[off + k] = 0xff;
  }, kCorrupt, "compressed cluster");
}
TEST_F(Qcow2Corrupt, CompressedPastEndOfFile) {
  Expect(kCompressed, [](Img& i) { i.Put64(i.l2, (1ull << 62) | 0x7fff0000); }, kCorrupt, "compressed cluster");
}
TEST_F(Qcow2Corrupt, SubclusterAllocatedAndZero) {
  Expect(kExtended, [](Img& i) { i.Put64(i.l2 + 8, 0x0000000100000001ull); }, kCorrupt, "allocated and zero");
}
TEST_F(Qcow2Corrupt, SubclusterAllocatedWithoutCluster) {
  Expect(kExtended, [](Img& i) { i.Put64(i.l2 + 16 * 10 + 8, 1); }, kCorrupt, "without a host cluster");
}
TEST_F(Qcow2Corrupt, DataPastEndOfFileReadsZerosLikeQemu) {
  // Lenient by design (docs/formats/qcow2-support.md): QEMU reads zeros.
  Img img = Load(kPlain);
  img.Put64(img.l2, 0x8000000000000000ull | 0x7fff0000);
  std::string path = dir_->File("eof.qcow2"), raw = dir_->File("eof.raw");
  testing::WriteFileBytes(path, img.b);
  RunOk("qemu-img convert -O raw " + ShellQuote(path) + " " + ShellQuote(raw));
  auto q = OpenQcow2Image(path);
  ASSERT_TRUE(q.has_value());
  std::vector<uint8_t> got((*q)->size());
  ASSERT_TRUE((*q)->Read(0, got).ok());
  EXPECT_TRUE(got == testing::ReadFileBytes(raw));
  EXPECT_EQ(got[0], 0);
}

TEST_F(Qcow2Corrupt, SizeNotAMultipleOf512ReadsLikeQemu) {
  // Found by bench/hostile_campaign.py: a header size of 4 MiB + 300 bytes
  // was read as 4 MiB + 300 (a restore 300 bytes longer than `qemu-img
  // convert -O raw`); QEMU keeps whole sectors: 4 MiB.
  Img img = Load(kV2);
  img.Put64(24, (4u << 20) + 300);
  std::string path = dir_->File("size.qcow2"), raw = dir_->File("size.raw");
  testing::WriteFileBytes(path, img.b);
  RunOk("qemu-img convert -O raw " + ShellQuote(path) + " " + ShellQuote(raw));
  auto want = testing::ReadFileBytes(raw);
  ASSERT_EQ(want.size(), 4u << 20);
  auto q = OpenQcow2Image(path);
  ASSERT_TRUE(q.has_value()) << q.error().ToString();
  EXPECT_EQ((*q)->size(), want.size());
  std::vector<uint8_t> got((*q)->size());
  ASSERT_TRUE((*q)->Read(0, got).ok());
  EXPECT_TRUE(got == want);
}

// --- snapshots (rule 20) ---
TEST_F(Qcow2Corrupt, TooManySnapshots) { Expect(kPlain, [](Img& i) { i.Put32(60, 70000); }, kCorrupt, "exceed 65536"); }
TEST_F(Qcow2Corrupt, SnapshotTablePastEndOfFile) {
  Expect(kPlain, [](Img& i) { i.Put64(64, i.b.size()); }, kCorrupt, "snapshot table");
}
TEST_F(Qcow2Corrupt, SnapshotExtraDataTooLarge) {
  Expect(kPlain, [](Img& i) { i.Put32(i.h.snapshots_offset + 36, 2000); }, kCorrupt, "extra data size");
}
TEST_F(Qcow2Corrupt, SnapshotMissingEntries) {
  Expect(kPlain, [](Img& i) { i.Put32(60, 3); }, kCorrupt, "snapshot table entry 1");
}
TEST_F(Qcow2Corrupt, SnapshotL1Unaligned) {
  Expect(kPlain, [](Img& i) { i.Put64(i.h.snapshots_offset, i.Get64(i.h.snapshots_offset) + 8); },
         kCorrupt, "L1 table of snapshot");
}
TEST_F(Qcow2Corrupt, SnapshotL1TooLarge) {
  Expect(kPlain, [](Img& i) { i.Put32(i.h.snapshots_offset + 8, 5000000); }, kCorrupt, "exceeds 32 MiB");
}

TEST_F(Qcow2Corrupt, SnapshotDiffDistrustsCopiedOnSharedClusters) {
  // Guest cluster 1 (64 KiB) is shared with snapshot s1 (not rewritten since).
  // Claiming sole ownership (COPIED) in the active L2 entry means it may
  // have been written in place: the diff must then report it.
  Img img = Load(kPlain);
  std::string clean = dir_->File("plain");
  auto before = OpenQcow2Image(clean);
  ASSERT_TRUE(before.has_value());
  auto d0 = (*before)->SnapshotDiff("s1");
  ASSERT_TRUE(d0.has_value());
  EXPECT_FALSE(d0->Contains(65536));
  EXPECT_TRUE(d0->Contains(0));
  img.Put64(img.l2 + 8, img.Get64(img.l2 + 8) | qcow2::kL2Copied);
  std::string path = dir_->File("copied.qcow2");
  testing::WriteFileBytes(path, img.b);
  auto q = OpenQcow2Image(path);
  ASSERT_TRUE(q.has_value());
  auto d = (*q)->SnapshotDiff("s1");
  ASSERT_TRUE(d.has_value());
  EXPECT_TRUE(d->Contains(65536));
  EXPECT_FALSE(d->Contains(131072));
}

// --- bitmaps (rules 21-24) ---
TEST_F(Qcow2Corrupt, BitmapsZeroCount) {
  Expect(kPlain, [](Img& i) { i.Put32(i.Ext(0x23852875) + 8, 0); }, kCorrupt, "nb_bitmaps");
}
TEST_F(Qcow2Corrupt, BitmapsReservedField) {
  Expect(kPlain, [](Img& i) { i.Put32(i.Ext(0x23852875) + 12, 1); }, kCorrupt, "reserved32");
}
TEST_F(Qcow2Corrupt, BitmapDirectoryUnaligned) {
  Expect(kPlain, [](Img& i) { i.Put64(i.Ext(0x23852875) + 24, i.bitmap_dir + 8); }, kCorrupt, "not cluster aligned");
}
TEST_F(Qcow2Corrupt, BitmapDirectoryTooLarge) {
  Expect(kPlain, [](Img& i) { i.Put64(i.Ext(0x23852875) + 16, 1024ull * 65535 + 8); }, kCorrupt, "directory size");
}
TEST_F(Qcow2Corrupt, BitmapDirectorySizeMismatch) {
  Expect(kPlain, [](Img& i) { i.Put64(i.Ext(0x23852875) + 16, i.h.bitmaps.directory_size + 8); },
         kCorrupt, "bitmap directory");
}
TEST_F(Qcow2Corrupt, BitmapCountMismatch) {
  Expect(kPlain, [](Img& i) { i.Put32(i.Ext(0x23852875) + 8, 2); }, kCorrupt, "nb_bitmaps says 2");
}
TEST_F(Qcow2Corrupt, BitmapType) { Expect(kPlain, [](Img& i) { i.b[i.bitmap_dir + 16] = 2; }, kCorrupt, "type 2"); }
TEST_F(Qcow2Corrupt, BitmapGranularityTooSmall) {
  Expect(kPlain, [](Img& i) { i.b[i.bitmap_dir + 17] = 8; }, kCorrupt, "granularity bits 8");
}
TEST_F(Qcow2Corrupt, BitmapGranularityTooLarge) {
  Expect(kPlain, [](Img& i) { i.b[i.bitmap_dir + 17] = 40; }, kCorrupt, "granularity bits 40");
}
TEST_F(Qcow2Corrupt, BitmapReservedFlags) {
  Expect(kPlain, [](Img& i) { i.Put32(i.bitmap_dir + 12, 8); }, kCorrupt, "reserved flags");
}
TEST_F(Qcow2Corrupt, BitmapNameSizeZero) {
  Expect(kPlain, [](Img& i) { i.b[i.bitmap_dir + 18] = 0; i.b[i.bitmap_dir + 19] = 0; }, kCorrupt, "name size");
}
TEST_F(Qcow2Corrupt, BitmapTableSizeMismatch) {
  Expect(kPlain, [](Img& i) { i.Put32(i.bitmap_dir + 8, 2); }, kCorrupt, "does not match");
}
TEST_F(Qcow2Corrupt, BitmapTableUnaligned) {
  Expect(kPlain, [](Img& i) { i.Put64(i.bitmap_dir, i.bitmaps[0].table_offset + 512); }, kCorrupt, "not cluster aligned");
}
TEST_F(Qcow2Corrupt, BitmapTableEntryReservedBits) {
  Expect(kPlain, [](Img& i) { uint64_t t = i.bitmaps[0].table_offset; i.Put64(t, i.Get64(t) | 2); },
         kCorrupt, "reserved bits");
}
TEST_F(Qcow2Corrupt, BitmapDataPastEndOfFile) {
  Expect(kPlain, [](Img& i) { i.Put64(i.bitmaps[0].table_offset, 0x7fff0000); }, kCorrupt, "past end of file");
}
TEST_F(Qcow2Corrupt, BitmapAllOnesWithOffset) {
  Expect(kPlain, [](Img& i) { uint64_t t = i.bitmaps[0].table_offset; i.Put64(t, i.Get64(t) | 1); },
         kCorrupt, "all-ones");
}
TEST_F(Qcow2Corrupt, BitmapsStaleAutoclearNeedsFullBackup) {
  Img img = Load(kPlain);
  img.Put64(88, 0);  // autoclear bit 0 clear: every bitmap is stale
  std::string path = dir_->File("stale.qcow2");
  testing::WriteFileBytes(path, img.b);
  auto q = OpenQcow2Image(path);
  ASSERT_TRUE(q.has_value());
  auto r = (*q)->LoadBitmap("b0");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kUnknownState);
  EXPECT_NE(r.error().message().find("full backup"), std::string::npos);
  EXPECT_TRUE((*q)->LoadBitmap("b0", true).has_value());
}

// --- backing chains (rules 26-27) ---
TEST_F(Qcow2Corrupt, BackingLoopTwoImages) {
  TempDir d;
  RunOk("cd " + ShellQuote(d.path()) + " && qemu-img create -q -f qcow2 a.qcow2 1M && "
        "qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 b.qcow2 && "
        "qemu-img rebase -u -b b.qcow2 -F qcow2 a.qcow2");
  auto q = OpenQcow2Image(d.File("b.qcow2"));
  ASSERT_FALSE(q.has_value());
  EXPECT_EQ(q.error().code(), kCorrupt);
  EXPECT_NE(q.error().message().find("loop"), std::string::npos) << q.error().ToString();
}
TEST_F(Qcow2Corrupt, BackingLoopSelf) {
  TempDir d;
  RunOk("cd " + ShellQuote(d.path()) + " && qemu-img create -q -f qcow2 a.qcow2 1M && "
        "qemu-img rebase -u -b a.qcow2 -F qcow2 a.qcow2");
  auto q = OpenQcow2Image(d.File("a.qcow2"));
  ASSERT_FALSE(q.has_value());
  EXPECT_NE(q.error().message().find("loop"), std::string::npos) << q.error().ToString();
}
TEST_F(Qcow2Corrupt, BackingChainTooDeep) {
  TempDir d;
  RunOk("cd " + ShellQuote(d.path()) + " && qemu-img create -q -f qcow2 l0.qcow2 1M && "
        "for i in $(seq 1 " + std::to_string(kMaxQcow2ChainDepth + 2) + "); do "
        "qemu-img create -q -f qcow2 -u -b l$((i-1)).qcow2 -F qcow2 l$i.qcow2 1M || exit 1; done");
  auto q = OpenQcow2Image(d.File("l" + std::to_string(kMaxQcow2ChainDepth + 2) + ".qcow2"));
  ASSERT_FALSE(q.has_value());
  EXPECT_NE(q.error().message().find("deeper than"), std::string::npos) << q.error().ToString();
  // One less than the limit opens.
  EXPECT_TRUE(OpenQcow2Image(d.File("l" + std::to_string(kMaxQcow2ChainDepth - 1) + ".qcow2")).has_value());
}
TEST_F(Qcow2Corrupt, BackingFormatNeverProbedWhenDeclared) {
  TempDir d;
  // The base is a qcow2 file, declared raw: it must be read as raw bytes.
  RunOk("cd " + ShellQuote(d.path()) + " && qemu-img create -q -f qcow2 base.qcow2 1M && "
        "qemu-img create -q -f qcow2 -u -b base.qcow2 -F raw top.qcow2 1M");
  auto q = OpenQcow2Image(d.File("top.qcow2"));
  ASSERT_TRUE(q.has_value()) << q.error().ToString();
  uint8_t magic[4];
  ASSERT_TRUE((*q)->Read(0, magic).ok());
  EXPECT_EQ(LoadBE32(magic), qcow2::kMagic);  // the raw bytes of the qcow2 header
  // An unknown backing format is refused.
  RunOk("cd " + ShellQuote(d.path()) + " && qemu-img rebase -u -b base.qcow2 -F vmdk top.qcow2");
  auto r = OpenQcow2Image(d.File("top.qcow2"));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), kUnsup);
}

}  // namespace
}  // namespace strata
