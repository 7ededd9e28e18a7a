// formats/nbd against a real qemu-nbd (label "unit", so it also runs under
// ASan+UBSan): random images made with qemu-img/qemu-io, served read-only
// with a dirty bitmap (-B) and several connections (-e, multi-conn); the
// driver's block status, dirty extents and random synchronous and queued
// reads are compared with QEMU's own answers (qemu-img map, the bitmap's
// writes, qemu-img convert). Failures print the seed.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <random>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "formats/nbd/nbd_image.h"
#include "tests/test_util.h"

namespace strata::testing {
namespace {

class QemuNbd {
 public:
  QemuNbd(const std::vector<std::string>& args) {
    pid_ = ::fork();
    if (pid_ == 0) {
      std::vector<char*> a;
      for (const auto& s : args) a.push_back(const_cast<char*>(s.c_str()));
      a.push_back(nullptr);
      ::execvp(a[0], a.data());
      ::_exit(127);
    }
  }
  ~QemuNbd() {
    ::kill(pid_, SIGTERM);
    int st;
    ::waitpid(pid_, &st, 0);
  }

 private:
  pid_t pid_;
};

TEST(NbdImage, MatchesQemuOnRandomImages) {
  if (!HaveCommand("qemu-nbd") || !HaveCommand("qemu-img")) GTEST_SKIP() << "qemu-nbd/qemu-img missing";
  const uint64_t seed = TestSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 4; ++round) {
    TempDir dir;
    const uint64_t size = (rng() % 48 + 16) << 20;
    const std::string img = dir.File("d.qcow2"), sock = dir.File("nbd.sock");
    RunOk("qemu-img create -q -f qcow2 " + img + " " + std::to_string(size));
    std::string pre, post;
    std::vector<std::pair<uint64_t, uint64_t>> dirty;
    for (int i = 0; i < 30; ++i) {
      uint64_t len = (rng() % 512 + 1) * 512, off = rng() % ((size - len) / 512) * 512;
      std::string op = rng() % 4 == 0 ? "write -z " : "write -P " + std::to_string(rng() % 255 + 1) + " ";
      pre += " -c '" + op + std::to_string(off) + " " + std::to_string(len) + "'";
    }
    RunOk("qemu-io -f qcow2" + pre + " " + img + " >/dev/null");
    RunOk("qemu-img bitmap --add -g 65536 " + img + " b0");
    for (int i = 0; i < 10; ++i) {
      uint64_t len = (rng() % 256 + 1) * 512, off = rng() % ((size - len) / 512) * 512;
      post += " -c 'write -P 7 " + std::to_string(off) + " " + std::to_string(len) + "'";
      dirty.push_back({off, len});
    }
    RunOk("qemu-io -f qcow2" + post + " " + img + " >/dev/null");
    RunOk("qemu-img convert -f qcow2 -O raw " + img + " " + dir.File("ref.raw"));
    const std::vector<uint8_t> ref = ReadFileBytes(dir.File("ref.raw"));
    QemuNbd server({"qemu-nbd", "-r", "-e", "4", "-f", "qcow2", "-B", "b0", "-k", sock, img});
    Result<std::unique_ptr<NbdImage>> img_r = Status::NotFound("");
    NbdOptions o;
    o.bitmap = "b0";
    for (int i = 0; i < 200 && !img_r; ++i) {
      img_r = NbdImage::Open("nbd+unix:///?socket=" + sock, o);
      if (!img_r) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ASSERT_TRUE(img_r.has_value()) << img_r.error().message();
    NbdImage& nbd = **img_r;
    ASSERT_EQ(nbd.size(), size);
    EXPECT_TRUE(nbd.multi_conn());
    EXPECT_GT(nbd.connections(), 1u);
    // Block status: data ranges equal qemu-img map's data ranges.
    auto map = nlohmann::json::parse(RunOk("qemu-img map --output=json -f qcow2 " + img));
    auto want = ExtentSet::Create(size, Granularity::Default());
    ASSERT_TRUE(want.has_value());
    for (const auto& e : map) {
      if (e.value("data", false) && !e.value("zero", false)) {
        ASSERT_TRUE(want->Add(e["start"].get<uint64_t>(), e["length"].get<uint64_t>()).ok());
      }
    }
    auto got = AllocatedExtents(nbd, Granularity::Default(), true);
    ASSERT_TRUE(got.has_value()) << got.error().message();
    EXPECT_EQ(got->ByteCount(), want->ByteCount());
    EXPECT_TRUE(ExtentSet::SymmetricDifference(*got, *want).value().empty()) << "NBD and QEMU disagree on data";
    // Dirty extents: every write after the bitmap, nothing else.
    auto d = nbd.DirtyExtents(Granularity::Default());
    ASSERT_TRUE(d.has_value()) << d.error().message();
    auto dw = ExtentSet::Create(size, Granularity::Default());
    for (auto [off, len] : dirty) ASSERT_TRUE(dw->Add(off, len).ok());
    EXPECT_EQ(d->ByteCount(), dw->ByteCount());
    EXPECT_TRUE(ExtentSet::SymmetricDifference(*d, *dw).value().empty());
    // Random reads, synchronous and through the queue (many in flight).
    auto q = nbd.OpenReadQueue(16);
    ASSERT_TRUE(q);
    std::vector<std::vector<uint8_t>> bufs(64);
    std::vector<uint64_t> offs(64);
    for (size_t i = 0; i < bufs.size(); ++i) {
      uint64_t len = rng() % (3 << 20) + 1;
      offs[i] = rng() % (size - len);
      bufs[i].assign(len, 0xEE);
      if (i % 8 == 0) {
        ASSERT_TRUE(nbd.Read(offs[i], bufs[i]).ok());
      } else {
        while (q->outstanding() >= q->depth()) {
          std::vector<ImageReadQueue::Completion> done;
          ASSERT_TRUE(q->Reap(&done).ok());
          for (auto& c : done) ASSERT_TRUE(c.status.ok()) << c.status.message();
        }
        ASSERT_TRUE(q->Submit(offs[i], bufs[i], i).ok());
      }
    }
    while (q->outstanding() > 0) {
      std::vector<ImageReadQueue::Completion> done;
      ASSERT_TRUE(q->Reap(&done).ok());
      for (auto& c : done) ASSERT_TRUE(c.status.ok()) << c.status.message();
    }
    for (size_t i = 0; i < bufs.size(); ++i) {
      ASSERT_TRUE(std::equal(bufs[i].begin(), bufs[i].end(), ref.begin() + offs[i])) << "read " << i << " at " << offs[i];
    }
    // KnownZero never claims a range that holds data.
    for (int i = 0; i < 200; ++i) {
      uint64_t len = rng() % (1 << 20) + 1, off = rng() % (size - len);
      if (q->KnownZero(off, len)) {
        ASSERT_TRUE(std::all_of(ref.begin() + off, ref.begin() + off + len, [](uint8_t c) { return c == 0; }));
      }
    }
    // A read past the end is refused.
    std::vector<uint8_t> b(10);
    EXPECT_FALSE(nbd.Read(size - 5, b).ok());
  }
}

TEST(NbdImage, MissingBitmapIsNotFound) {
  if (!HaveCommand("qemu-nbd")) GTEST_SKIP() << "qemu-nbd missing";
  TempDir dir;
  RunOk("qemu-img create -q -f qcow2 " + dir.File("d.qcow2") + " 1M");
  QemuNbd server({"qemu-nbd", "-r", "-f", "qcow2", "-k", dir.File("s"), dir.File("d.qcow2")});
  NbdOptions o;
  o.bitmap = "nope";
  Result<std::unique_ptr<NbdImage>> r = Status::Busy("not tried");
  for (int i = 0; i < 200; ++i) {
    r = NbdImage::Open("nbd+unix:///?socket=" + dir.File("s"), o);
    if (r || r.error().code() == StatusCode::kNotFound) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kNotFound) << r.error().message();
  EXPECT_NE(r.error().message().find("qemu:dirty-bitmap:nope"), std::string::npos);
}

}  // namespace
}  // namespace strata::testing
