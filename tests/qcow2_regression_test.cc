// Named regression tests for the disagreement classes the random
// differential test (qcow2_differential_test.cc) found, for external data
// files, and for the rules on which files opening an image may touch:
// only disks (regular files, block devices), and chain files (backing,
// external data) only inside the allowed directories with a declared format.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

#include <nlohmann/json.hpp>
#include <filesystem>
#include <regex>

#include "extents/endian.h"
#include "strata/file.h"
#include "strata/open_image.h"
#include "formats/qcow2/qcow2_format.h"
#include "strata/qcow2_image.h"
#include "tests/test_util.h"

namespace strata {
namespace {

using testing::RunCommand;
using testing::RunOk;
using testing::ShellQuote;
using testing::TempDir;

bool HaveQemu() { return testing::HaveCommand("qemu-img") && testing::HaveCommand("qemu-io"); }
#define REQUIRE_QEMU() \
  if (!HaveQemu()) GTEST_SKIP() << "qemu-img/qemu-io not installed (scripts/setup.sh)"

std::string In(const TempDir& d) { return "cd " + ShellQuote(d.path()) + " && "; }

std::string OurMap(const std::string& path) {
  auto img = OpenImage(path);
  EXPECT_TRUE(img.has_value()) << img.error().ToString();
  if (!img) return "";
  std::string s = "[";
  bool first = true;
  EXPECT_TRUE(MapImage(**img, [&](const MapEntry& e) {
                s += (first ? "" : ",\n") + MapEntryJson(e);
                first = false;
                return Status::Ok();
              }).ok());
  return s + "]\n";
}

std::vector<uint8_t> ReadAll(Image& img) {
  std::vector<uint8_t> b(img.size());
  Status s = img.Read(0, b);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return b;
}

// ---- class "open": snapshot table at the end of the file ----------------

// QEMU pads snapshot table entries to 8 bytes but does not write the padding
// of the last entry; when `qemu-img snapshot -c` is the last operation the
// table ends the file 1-7 bytes short of its padded length. Such images
// were refused: "snapshot table entry 0 at 0x…: runs past the snapshot table".
TEST(Qcow2Regression, SnapshotTableEndingTheFileOpens) {
  REQUIRE_QEMU();
  for (std::string opts : {"cluster_size=512", "cluster_size=65536,compat=0.10",
                           "cluster_size=2097152", "cluster_size=4096,extended_l2=off"}) {
    SCOPED_TRACE(opts);
    TempDir d;
    const std::string p = d.File("s.qcow2");
    RunOk(In(d) + "qemu-img create -q -f qcow2 -o " + opts + " s.qcow2 8M && "
          "qemu-io -f qcow2 -c 'write -P 5 0 64k' -c 'write -P 6 1M 4k' s.qcow2 >/dev/null && "
          "qemu-img snapshot -c first s.qcow2 && qemu-img snapshot -c second-name s.qcow2");
    // The table ends the file, unpadded (the point of this test).
    const uint64_t file_size = testing::ReadFileBytes(p).size();
    EXPECT_NE(file_size % 8, 0u) << "the last entry is padded: the test no longer covers the bug";
    auto q = OpenQcow2Image(p);
    ASSERT_TRUE(q.has_value()) << q.error().ToString();
    ASSERT_EQ((*q)->Snapshots().size(), 2u);
    EXPECT_EQ((*q)->Snapshots()[1].name, "second-name");
    EXPECT_EQ(OurMap(p), RunOk("qemu-img map --output=json " + ShellQuote(p)));
    auto v = (*q)->OpenSnapshot("first");
    ASSERT_TRUE(v.has_value()) << v.error().ToString();
    RunOk(In(d) + "qemu-img convert -l first -O raw s.qcow2 first.raw");
    EXPECT_TRUE(ReadAll(**v) == testing::ReadFileBytes(d.File("first.raw")));
  }
}

// ---- class "map": when QEMU asks the file system --------------------------

// qcow2_co_block_status() sets BDRV_BLOCK_RECURSE for data clusters when
// qcow2_detect_metadata_preallocation() said yes, and bdrv_co_block_status()
// then asks the host file (SEEK_DATA/SEEK_HOLE) and reports its holes as
// zero. The heuristic says yes when at least max(real * 10 / 9, real + 2)
// clusters have a non-zero refcount, `real` being st_blocks * 512 / cluster
// size. Persistent bitmaps make it fire on ordinary images: their directory,
// tables and data are clusters with a refcount but only a few bytes written,
// so with large clusters a partly written data cluster is reported as data
// only where it was written, the rest as a zero range.
TEST(Qcow2Regression, BitmapClustersMakeQemuAskTheFileSystem) {
  REQUIRE_QEMU();
  int split = 0;
  for (std::string opts : {"cluster_size=1M", "cluster_size=2M", "cluster_size=256k",
                           "cluster_size=64k", "cluster_size=128k,extended_l2=on"}) {
    for (int bitmaps : {0, 1, 3}) {
      SCOPED_TRACE(opts + ", " + std::to_string(bitmaps) + " bitmaps");
      TempDir d;
      std::string cmd = In(d) + "qemu-img create -q -f qcow2 -o " + opts + " b.qcow2 16M";
      for (int i = 0; i < bitmaps; ++i) {
        cmd += " && qemu-img bitmap --add -g " + std::to_string(4096 << (4 * i)) + " b.qcow2 b" +
               std::to_string(i);
      }
      RunOk(cmd + " && qemu-io -f qcow2 -c 'write -P 1 4k 4k' -c 'write -P 2 3M 512' "
            "-c 'write -P 3 9M 200k' b.qcow2 >/dev/null");
      // QEMU before and after strata opened and mapped the image: strata
      // must answer the same, and must not change QEMU's answer (it used to
      // read 2 MiB at open, pulling data clusters' unwritten extents into
      // the page cache, which SEEK_DATA then calls data).
      const std::string qemu = RunOk(In(d) + "qemu-img map --output=json b.qcow2");
      EXPECT_EQ(OurMap(d.File("b.qcow2")), qemu);
      EXPECT_EQ(RunOk(In(d) + "qemu-img map --output=json b.qcow2"), qemu);
      if (qemu.find("\"zero\": true, \"data\": true") != std::string::npos) ++split;
    }
  }
  // The heuristic fired for some of these images (so the test covers it).
  EXPECT_GT(split, 0);
}

// ---- external data files -------------------------------------------------

TEST(Qcow2Regression, ExternalDataFileMatchesQemu) {
  REQUIRE_QEMU();
  const bool nbd = testing::HaveCommand("qemu-nbd") && testing::HaveCommand("nbdinfo");
  for (std::string opts : {"data_file_raw=off", "data_file_raw=on",
                           "data_file_raw=off,preallocation=metadata",
                           "data_file_raw=on,extended_l2=on,cluster_size=32768"}) {
    SCOPED_TRACE(opts);
    TempDir d;
    const std::string p = d.File("d.qcow2");
    RunOk(In(d) + "qemu-img create -q -f qcow2 -o data_file=d.raw," + opts + " d.qcow2 8M && "
          "qemu-img bitmap --add -g 4096 d.qcow2 b0 && "
          "qemu-io -f qcow2 -c 'write -P 1 0 64k' -c 'write -P 2 1M 3k' -c 'write -z 2M 64k' "
          "-c 'write -z 0 4k' -c 'discard 4M 64k' -c 'write -P 3 6M 512' d.qcow2 >/dev/null");
    auto q = OpenQcow2Image(p);
    ASSERT_TRUE(q.has_value()) << q.error().ToString();
    EXPECT_EQ((*q)->info().data_file, "d.raw");
    EXPECT_EQ((*q)->info().data_file_raw, opts.find("raw=on") != std::string::npos);
    // QEMU 7.2 opens a relative data file name against its working directory.
    EXPECT_EQ(OurMap(p), RunOk(In(d) + "qemu-img map --output=json d.qcow2"));
    RunOk(In(d) + "qemu-img convert -O raw d.qcow2 out.raw");
    EXPECT_TRUE(ReadAll(**q) == testing::ReadFileBytes(d.File("out.raw")));
    auto set = (*q)->LoadBitmap("b0");
    ASSERT_TRUE(set.has_value()) << set.error().ToString();
    EXPECT_EQ(set->ToExtents().size(), 5u);
    if (nbd) {
      auto r = RunCommand(In(d) + "nbdinfo --json --map=qemu:dirty-bitmap:b0 -- "
                          "[ qemu-nbd -r -B b0 -f qcow2 d.qcow2 ]");
      ASSERT_EQ(r.exit_code, 0) << r.err;
      std::vector<ByteExtent> want;
      std::regex re(R"re("offset": (\d+), "length": (\d+), "type": (\d+))re");
      for (auto it = std::sregex_iterator(r.out.begin(), r.out.end(), re);
           it != std::sregex_iterator(); ++it) {
        if (!(std::stoi((*it)[3]) & 1)) continue;
        ByteExtent e{std::stoull((*it)[1]), std::stoull((*it)[2])};
        if (!want.empty() && want.back().end() == e.offset) want.back().length += e.length;
        else want.push_back(e);
      }
      EXPECT_EQ(set->ToExtents(), want);
    }
  }
}

TEST(Qcow2Regression, ExternalDataFileEntriesValidated) {
  REQUIRE_QEMU();
  TempDir d;
  RunOk(In(d) + "qemu-img create -q -f qcow2 -o data_file=d.raw d.qcow2 1M && "
        "qemu-io -f qcow2 -c 'write -P 1 64k 64k' d.qcow2 >/dev/null");
  std::vector<uint8_t> b = testing::ReadFileBytes(d.File("d.qcow2"));
  auto h = qcow2::ParseHeader(b, b.size(), "d.qcow2");
  ASSERT_TRUE(h.has_value()) << h.error().ToString();
  ASSERT_TRUE(h->data_file_bit());
  const uint64_t l2 = LoadBE64(b.data() + h->l1_table_offset) & qcow2::kOffsetMask;
  ASSERT_NE(l2, 0u);
  // Entry 1 maps guest 64k to data-file offset 64k; point it elsewhere.
  EXPECT_EQ(LoadBE64(b.data() + l2 + 8) & qcow2::kOffsetMask, 65536u);
  StoreBE64(b.data() + l2 + 8, qcow2::kL2Copied | 0x20000);
  testing::WriteFileBytes(d.File("bad.qcow2"), b);
  auto q = OpenQcow2Image(d.File("bad.qcow2"));
  ASSERT_TRUE(q.has_value()) << q.error().ToString();
  std::vector<uint8_t> buf(4096);
  Status s = (*q)->Read(65536, buf);
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_NE(s.message().find("differs from guest offset"), std::string::npos) << s.ToString();
  // A data file the image does not name is refused clearly (QEMU needs it given by hand).
  std::vector<uint8_t> c = testing::ReadFileBytes(d.File("d.qcow2"));
  for (uint64_t off = h->header_length; off + 8 < 4096; off += 8) {
    if (LoadBE32(c.data() + off) == 0x44415441) StoreBE32(c.data() + off, 0x12345678);
  }
  testing::WriteFileBytes(d.File("noname.qcow2"), c);
  auto r = OpenQcow2Image(d.File("noname.qcow2"));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kUnsupported);
  EXPECT_NE(r.error().message().find("does not name its data file"), std::string::npos);
}

// Issue 13's acceptance: a `strata backup --bitmap` of a qcow2 image with
// an external data file (libvirt's layout for raw disks with bitmaps)
// restores byte-identically.
TEST(Qcow2Regression, DataFileBitmapBackupRestoresIdentically) {
  REQUIRE_QEMU();
  TempDir d;
  const std::string strata = ShellQuote(testing::Tool("strata")) + " ";
  RunOk(In(d) + "qemu-img create -q -f qcow2 -o data_file=vm.raw,data_file_raw=on vm.qcow2 16M && "
        "qemu-io -f qcow2 -c 'write -P 0x11 0 4M' -c 'write -P 0x12 9M 1M' vm.qcow2 >/dev/null && "
        + strata + "init repo >/dev/null && " + strata +
        "backup --repo repo --full --bitmap b0 vm.qcow2 >/dev/null && "
        "qemu-io -f qcow2 -c 'write -P 0x22 1M 64k' -c 'write -z 9M 512k' -c 'write -P 0x23 15M 3k' "
        "vm.qcow2 >/dev/null");
  auto b = RunCommand(In(d) + strata + "backup --json --repo repo --bitmap b0 vm.qcow2");
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(nlohmann::json::parse(b.out)["changed_bytes"], 65536 + (512 << 10) + 65536) << b.out;
  RunOk(In(d) + strata + "restore --repo repo out.raw >/dev/null");
  auto cmp = RunCommand(In(d) + "qemu-img compare -q -f raw -F qcow2 out.raw vm.qcow2");
  EXPECT_EQ(cmp.exit_code, 0) << "restore differs from the image: " << cmp.out << cmp.err;
}

// ---- not a disk ----------------------------------------------------------

void ExpectNotADisk(const std::string& path, const std::string& kind) {
  for (const char* fmt : {"auto", "raw", "qcow2"}) {
    SCOPED_TRACE(path + " as " + fmt);
    auto img = OpenImage(path, fmt);
    ASSERT_FALSE(img.has_value()) << "opened a " << kind << " as a disk";
    EXPECT_EQ(img.error().code(), StatusCode::kInvalidArgument) << img.error().ToString();
    EXPECT_NE(img.error().message().find(path), std::string::npos) << img.error().ToString();
    EXPECT_NE(img.error().message().find("not a disk image: it is a " + kind),
              std::string::npos) << img.error().ToString();
    EXPECT_EQ(img.error().message().find('\n'), std::string::npos);
  }
}

TEST(ImageOpen, RefusesWhatIsNotADisk) {
  ExpectNotADisk("/dev/zero", "character device");
  ExpectNotADisk("/dev/null", "character device");
  TempDir d;
  // A FIFO without a writer: a blocking open would hang here forever.
  const std::string fifo = d.File("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  ExpectNotADisk(fifo, "FIFO");
  ExpectNotADisk(d.path(), "directory");
  const std::string sock = d.File("sock");
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", sock.c_str());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ExpectNotADisk(sock, "socket");
  ::close(fd);
  // A regular file still opens, and its descriptor is blocking again.
  const std::string reg = d.File("disk.raw");
  testing::WriteFileBytes(reg, std::vector<uint8_t>(4096, 7));
  auto f = OpenDiskFile(reg);
  ASSERT_TRUE(f.has_value()) << f.error().ToString();
  EXPECT_EQ(::fcntl((*f)->fd(), F_GETFL) & O_NONBLOCK, 0);
  EXPECT_TRUE(OpenImage(reg).has_value());
}

TEST(ImageOpen, ExtentDumpRefusesFifoWithoutBlocking) {
  TempDir d;
  const std::string fifo = d.File("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto r = RunCommand("timeout 20 " + ShellQuote(testing::Tool("extent-dump")) + " " +
                      ShellQuote(fifo));
  EXPECT_EQ(r.exit_code, 1) << r.err;  // 124 would mean it blocked
  EXPECT_NE(r.err.find("not a disk image: it is a FIFO"), std::string::npos) << r.err;
}

// `strata backup` of something that is not a disk fails at once, without
// blocking on a FIFO while it holds the repository lock, and stores nothing.
TEST(ImageOpen, StrataBackupRefusesNonDisks) {
  TempDir d;
  ASSERT_EQ(::mkfifo(d.File("fifo").c_str(), 0600), 0);
  const std::string strata = "timeout 20 " + ShellQuote(testing::Tool("strata")) + " ";
  RunOk(In(d) + strata + "init repo >/dev/null");
  for (const std::string& src : {std::string("/dev/zero"), std::string("/dev/null"),
                                 d.File("fifo")}) {
    auto r = RunCommand(In(d) + strata + "backup --repo repo --full " + ShellQuote(src));
    EXPECT_EQ(r.exit_code, 1) << src << ": " << r.err;  // 124: it blocked
    EXPECT_NE(r.err.find(src + ": not a disk image"), std::string::npos) << r.err;
  }
  auto list = RunCommand(In(d) + strata + "list --json --repo repo");
  EXPECT_EQ(list.exit_code, 0) << list.err;
  EXPECT_EQ(list.out.find("\"id\""), std::string::npos) << list.out;
}

// ---- chain files: a guest must not make strata read host files -----------

// A raw disk whose first sector a guest filled with a qcow2 header naming a
// host file as its raw backing file: made by qemu-img, then copied into the
// start of an otherwise ordinary raw disk image.
std::string CraftedRawDisk(const TempDir& d, const std::string& name, const std::string& target,
                           const std::string& opts = "-F raw") {
  RunOk(In(d) + "qemu-img create -q -f qcow2 -u -b " + ShellQuote(target) + " " + opts +
        " hdr.qcow2 1M");
  std::vector<uint8_t> disk = testing::ReadFileBytes(d.File("hdr.qcow2"));
  disk.resize(4u << 20, 0);
  testing::WriteFileBytes(d.File(name), disk);
  return d.File(name);
}

void ExpectRefused(const Result<std::unique_ptr<Image>>& r, const std::string& image,
                   const std::string& needle) {
  ASSERT_FALSE(r.has_value()) << "a guest-written header made strata follow a host file";
  EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument) << r.error().ToString();
  EXPECT_NE(r.error().message().find(image), std::string::npos) << r.error().ToString();
  EXPECT_NE(r.error().message().find(needle), std::string::npos) << r.error().ToString();
}

TEST(ChainFiles, GuestWrittenHeaderCannotReadHostFiles) {
  REQUIRE_QEMU();
  TempDir d;
  // /etc/passwd as a raw backing file: outside the image's directory.
  std::string disk = CraftedRawDisk(d, "guest.raw", "/etc/passwd");
  ExpectRefused(OpenImage(disk, "auto"), disk, "outside the directories a chain may use");
  // The same through a relative name and through a symlink inside the directory.
  disk = CraftedRawDisk(d, "guest2.raw", "../../../../../../etc/passwd");
  ExpectRefused(OpenImage(disk, "auto"), disk, "resolves to /etc/passwd");
  ASSERT_EQ(::symlink("/etc/passwd", d.File("innocent").c_str()), 0);
  disk = CraftedRawDisk(d, "guest3.raw", "innocent");
  ExpectRefused(OpenImage(disk, "auto"), disk, "resolves to /etc/passwd");
  // Devices are never followed, even where allowed.
  ImageOpenOptions dev;
  dev.allowed_dirs = {"/dev"};
  disk = CraftedRawDisk(d, "guest4.raw", "/dev/zero");
  ExpectRefused(OpenImage(disk, "auto", dev), disk, "is a character device");
  disk = CraftedRawDisk(d, "guest5.raw", "/dev/sda");
  auto r = OpenImage(disk, "auto", dev);
  ASSERT_FALSE(r.has_value());  // absent here (ENOENT) or a block device: refused either way
  // Read as raw (what a repository that remembers the format does), the disk
  // is its own bytes and never the host file's.
  auto raw = OpenImage(disk, "raw");
  ASSERT_TRUE(raw.has_value()) << raw.error().ToString();
  std::vector<uint8_t> bytes = ReadAll(**raw);
  std::vector<uint8_t> passwd = testing::ReadFileBytes("/etc/passwd");
  ASSERT_FALSE(passwd.empty());
  EXPECT_TRUE(std::search(bytes.begin(), bytes.end(), passwd.begin(),
                          passwd.begin() + std::min<size_t>(64, passwd.size())) == bytes.end());
}

// The same disk through `strata backup`: with format auto the backup is
// refused; as raw it stores the disk's own bytes, none of the host file's.
TEST(ChainFiles, BackupOfCraftedDiskStoresNoHostBytes) {
  REQUIRE_QEMU();
  TempDir d;
  const std::string disk = CraftedRawDisk(d, "guest.raw", "/etc/passwd");
  const std::string strata = ShellQuote(testing::Tool("strata")) + " ";
  RunOk(In(d) + strata + "init repo >/dev/null");
  auto r = RunCommand(In(d) + strata + "backup --repo repo --full guest.raw");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.err.find("outside the directories a chain may use"), std::string::npos) << r.err;
  RunOk(In(d) + strata + "backup --repo repo --full --format raw guest.raw >/dev/null");
  RunOk(In(d) + strata + "restore --repo repo out.raw >/dev/null");
  EXPECT_TRUE(testing::ReadFileBytes(d.File("out.raw")) == testing::ReadFileBytes(disk));
  std::vector<uint8_t> passwd = testing::ReadFileBytes("/etc/passwd");
  std::vector<uint8_t> repo_bytes;
  for (const auto& e : std::filesystem::recursive_directory_iterator(d.File("repo"))) {
    if (!e.is_regular_file()) continue;
    auto b = testing::ReadFileBytes(e.path().string());
    repo_bytes.insert(repo_bytes.end(), b.begin(), b.end());
  }
  ASSERT_GE(passwd.size(), 32u);
  EXPECT_TRUE(std::search(repo_bytes.begin(), repo_bytes.end(), passwd.begin(),
                          passwd.begin() + 32) == repo_bytes.end());
}

TEST(ChainFiles, AllowedDirectoriesAndDeclaredFormats) {
  REQUIRE_QEMU();
  TempDir d;
  RunOk(In(d) + "mkdir -p vm/sub other && "
        "qemu-img create -q -f qcow2 other/base.qcow2 1M && "
        "qemu-io -f qcow2 -c 'write -P 9 0 64k' other/base.qcow2 >/dev/null && "
        "cp other/base.qcow2 vm/sub/base.qcow2 && "
        "qemu-img create -q -f qcow2 -b ../other/base.qcow2 -F qcow2 vm/out.qcow2 && "
        "qemu-img create -q -f qcow2 -b sub/base.qcow2 -F qcow2 vm/in.qcow2");
  // An image without the backing format extension (older qemu-img wrote
  // them): rename the extension to an unknown type, which readers skip.
  std::vector<uint8_t> nofmt = testing::ReadFileBytes(d.File("vm/in.qcow2"));
  bool renamed = false;
  for (uint64_t off = 104; off + 8 < 4096 && !renamed; off += 8) {
    if (LoadBE32(nofmt.data() + off) == 0xE2792ACA) {
      StoreBE32(nofmt.data() + off, 0x12345678);
      renamed = true;
    }
  }
  ASSERT_TRUE(renamed);
  testing::WriteFileBytes(d.File("vm/nofmt.qcow2"), nofmt);
  // Inside the image's directory (a subdirectory too): followed.
  EXPECT_TRUE(OpenImage(d.File("vm/in.qcow2")).has_value());
  // Outside: refused by default, followed once the directory is allowed.
  ExpectRefused(OpenImage(d.File("vm/out.qcow2")), d.File("vm/out.qcow2"),
                "backing file '../other/base.qcow2'");
  ImageOpenOptions wide;
  wide.allowed_dirs = {d.File("vm"), d.File("other")};
  auto ok = OpenImage(d.File("vm/out.qcow2"), "auto", wide);
  ASSERT_TRUE(ok.has_value()) << ok.error().ToString();
  uint8_t b[4];
  ASSERT_TRUE((*ok)->Read(0, b).ok());
  EXPECT_EQ(b[0], 9);
  // Allowing only another directory takes the default away.
  ImageOpenOptions only_other;
  only_other.allowed_dirs = {d.File("other")};
  ExpectRefused(OpenImage(d.File("vm/in.qcow2"), "auto", only_other), d.File("vm/in.qcow2"),
                "outside");
  // No declared backing format: refused unless probing is asked for.
  ExpectRefused(OpenImage(d.File("vm/nofmt.qcow2")), d.File("vm/nofmt.qcow2"),
                "no declared format");
  ImageOpenOptions probe;
  probe.probe_backing_format = true;
  EXPECT_TRUE(OpenImage(d.File("vm/nofmt.qcow2"), "auto", probe).has_value());
  // External data files follow the same rule.
  RunOk(In(d) + "qemu-img create -q -f qcow2 -o data_file=" + ShellQuote(d.File("other/data.raw")) +
        " vm/ext.qcow2 1M");
  ExpectRefused(OpenImage(d.File("vm/ext.qcow2")), d.File("vm/ext.qcow2"),
                "data file '" + d.File("other/data.raw") + "'");
  EXPECT_TRUE(OpenImage(d.File("vm/ext.qcow2"), "auto", wide).has_value());
}

TEST(ChainFiles, ExtentDumpAllowBacking) {
  REQUIRE_QEMU();
  TempDir d;
  RunOk(In(d) + "mkdir vm other && qemu-img create -q -f qcow2 other/base.qcow2 1M && "
        "qemu-img create -q -f qcow2 -b ../other/base.qcow2 -F qcow2 vm/top.qcow2");
  const std::string ed = ShellQuote(testing::Tool("extent-dump")) + " ";
  auto r = RunCommand(ed + ShellQuote(d.File("vm/top.qcow2")));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--allow-backing"), std::string::npos) << r.err;
  r = RunCommand(ed + "--allow-backing " + ShellQuote(d.File("other")) + " --allow-backing " +
                 ShellQuote(d.File("vm")) + " --output json " + ShellQuote(d.File("vm/top.qcow2")));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, RunOk("qemu-img map --output=json " + ShellQuote(d.File("vm/top.qcow2"))));
}

}  // namespace
}  // namespace strata
