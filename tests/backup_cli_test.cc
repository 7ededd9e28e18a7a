// The repository CLI as users run it: backup, restore, verify, merge; kill -9
// in the middle of a backup; refusals and corruption reports.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <random>
#include <regex>

#include <nlohmann/json.hpp>

#include "tests/test_util.h"

namespace strata {
namespace {

using testing::RunCommand;
using testing::RunOk;
using testing::ShellQuote;

std::string S(const std::string& args) { return testing::Tool("strata") + " " + args; }

void Scribble(const std::string& path, std::mt19937_64& rng, int n) {
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  off_t size = ::lseek(fd, 0, SEEK_END);
  std::vector<uint8_t> buf;
  for (int i = 0; i < n; ++i) {
    size_t len = 4096 * (1 + rng() % 32);
    off_t off = static_cast<off_t>((rng() % (static_cast<uint64_t>(size) - len)) & ~uint64_t{4095});
    buf.assign(len, static_cast<uint8_t>(rng() % 3 == 0 ? 0 : rng()));
    ASSERT_EQ(::pwrite(fd, buf.data(), len, off), static_cast<ssize_t>(len));
  }
  ::close(fd);
}

using Json = nlohmann::json;

Json ParseJson(const std::string& text) {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(j.is_discarded()) << "not JSON: " << text;
  return j;
}

// Backup ids in catalog order.
std::vector<std::string> Ids(const std::string& repo) {
  Json list = ParseJson(RunOk(S("list --json --repo " + ShellQuote(repo))));
  std::vector<std::string> ids;
  for (const Json& e : list) ids.push_back(e["id"].get<std::string>());
  return ids;
}

// Runs a backup with --json and returns its result (exit status checked).
Json BackupJson(const std::string& args) {
  auto r = RunCommand(S("backup --json " + args));
  EXPECT_EQ(r.exit_code, 0) << args << ": " << r.err;
  return r.exit_code == 0 ? ParseJson(r.out) : Json();
}

TEST(BackupCli, FullScanRestoreVerifyMerge) {
  testing::TempDir dir;
  std::mt19937_64 rng(testing::TestSeed());
  std::string disk = dir.File("disk.raw"), repo = dir.File("repo");
  RunOk(S("generate --size 64M --fill 0.3 --seed 5 " + ShellQuote(disk)));
  RunOk(S("init " + ShellQuote(repo)));
  std::vector<std::vector<uint8_t>> points;
  RunOk(S("backup --repo " + ShellQuote(repo) + " --full " + ShellQuote(disk)));
  points.push_back(testing::ReadFileBytes(disk));
  for (int i = 0; i < 3; ++i) {
    Scribble(disk, rng, 10);
    Json r = BackupJson("--repo " + ShellQuote(repo) + " --scan " + ShellQuote(disk));
    EXPECT_EQ(r["source"], "scan") << r;
    points.push_back(testing::ReadFileBytes(disk));
  }
  auto ids = Ids(repo);
  ASSERT_EQ(ids.size(), 4u);
  for (size_t i = 0; i < ids.size(); ++i) {
    std::string out = dir.File("out" + std::to_string(i) + ".raw");
    RunOk(S("restore --repo " + ShellQuote(repo) + " --backup " + ids[i].substr(0, 8) + " " +
            ShellQuote(out)));
    EXPECT_TRUE(testing::ReadFileBytes(out) == points[i]) << "backup " << i;
  }
  auto v = RunCommand(S("verify --repo " + ShellQuote(repo) + " --against " + ShellQuote(disk)));
  EXPECT_EQ(v.exit_code, 0) << v.err;
  // A restore never overwrites an existing file without --force.
  auto again = RunCommand(S("restore --repo " + ShellQuote(repo) + " " + ShellQuote(dir.File("out0.raw"))));
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.err.find("--force"), std::string::npos);
  // Remove a middle backup: the later ones still restore to their points.
  RunOk(S("merge --repo " + ShellQuote(repo) + " --remove " + ids[1]));
  RunOk(S("merge --repo " + ShellQuote(repo) + " --fold " + ids[3]));  // drops ids[2]
  auto left = Ids(repo);
  ASSERT_EQ(left.size(), 2u);
  EXPECT_EQ(left[0], ids[0]);
  EXPECT_EQ(left[1], ids[3]);
  std::string out = dir.File("after-merge.raw");
  RunOk(S("restore --repo " + ShellQuote(repo) + " " + ShellQuote(out)));
  EXPECT_TRUE(testing::ReadFileBytes(out) == points[3]);
  RunOk(S("merge --repo " + ShellQuote(repo) + " --synthetic-full latest"));
  std::filesystem::remove(out);
  RunOk(S("restore --repo " + ShellQuote(repo) + " " + ShellQuote(out)));
  EXPECT_TRUE(testing::ReadFileBytes(out) == points[3]);
  RunOk(S("verify --repo " + ShellQuote(repo)));
}

// A restore that cannot fit fails before writing data, with one line naming
// the output; O_DIRECT and page-cache restores agree byte for byte.
TEST(BackupCli, RestoreToAFullDiskFailsClearly) {
  testing::TempDir dir;
  std::string disk = dir.File("disk.raw"), repo = dir.File("repo");
  RunOk(S("generate --size 32M --fill 0.5 --seed 9 " + ShellQuote(disk)));
  RunOk(S("init " + ShellQuote(repo)));
  RunOk(S("backup --repo " + ShellQuote(repo) + " --full " + ShellQuote(disk)));
  for (const char* flag : {"", "--no-direct "}) {
    std::string out = dir.File(std::string("out") + (*flag ? "-buffered" : "") + ".raw");
    auto r = RunCommand(S("restore --json " + std::string(flag) + "--repo " + ShellQuote(repo) + " " +
                          ShellQuote(out)));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find(*flag ? "\"direct_io\": false" : "\"direct_io\": true"), std::string::npos)
        << r.out;
    EXPECT_TRUE(testing::ReadFileBytes(out) == testing::ReadFileBytes(disk)) << flag;
  }
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (mount)";
  std::string mnt = dir.File("small");
  std::filesystem::create_directories(mnt);
  ASSERT_EQ(RunCommand("mount -t tmpfs -o size=4M tmpfs " + ShellQuote(mnt)).exit_code, 0);
  std::string out = mnt + "/out.raw";
  auto r = RunCommand(S("restore --repo " + ShellQuote(repo) + " " + ShellQuote(out)));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(out + ": allocating"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("No space left"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  (void)RunCommand("umount " + ShellQuote(mnt));
}

TEST(BackupCli, CorruptionIsReportedWithTheFile) {
  testing::TempDir dir;
  std::string disk = dir.File("disk.raw"), repo = dir.File("repo");
  RunOk(S("generate --size 16M --fill 0.5 --seed 2 " + ShellQuote(disk)));
  RunOk(S("init " + ShellQuote(repo)));
  RunOk(S("backup --repo " + ShellQuote(repo) + " --full " + ShellQuote(disk)));
  std::string archive = repo + "/archives/" + Ids(repo)[0] + ".sar";
  // extent-dump ARCHIVE lists its extents; they add up to what info reports.
  std::string dump = RunOk(testing::Tool("extent-dump") + " --json " + ShellQuote(archive));
  uint64_t sum = 0;
  std::regex len_re("\"length\": ([0-9]+)");
  for (std::sregex_iterator it(dump.begin(), dump.end(), len_re), end; it != end; ++it) {
    sum += std::stoull((*it)[1]);
  }
  Json info = ParseJson(RunOk(S("info --json " + ShellQuote(archive))));
  EXPECT_EQ(info["logical_bytes"], sum) << info;
  EXPECT_GT(sum, 0u);
  auto bytes = testing::ReadFileBytes(archive);
  std::mt19937_64 rng(testing::TestSeed());
  for (int i = 0; i < 20; ++i) {
    auto bad = bytes;
    size_t at = rng() % bad.size();
    bad[at] ^= 0x40;
    testing::WriteFileBytes(archive, bad);
    auto r = RunCommand(S("verify --repo " + ShellQuote(repo)));
    EXPECT_EQ(r.exit_code, 1) << "flip at " << at << " not detected";
    EXPECT_NE(r.err.find(archive), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  testing::WriteFileBytes(archive, bytes);
  RunOk(S("verify --repo " + ShellQuote(repo)));
  // A damaged catalog is named too, and nothing is changed.
  std::string catalog = repo + "/catalog";
  auto cat = testing::ReadFileBytes(catalog);
  auto bad = cat;
  bad[20] ^= 1;
  testing::WriteFileBytes(catalog, bad);
  auto r = RunCommand(S("list --repo " + ShellQuote(repo)));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("catalog"), std::string::npos) << r.err;
  EXPECT_TRUE(testing::ReadFileBytes(catalog) == bad);
}

TEST(BackupCli, RefusalsAndUsage) {
  testing::TempDir dir;
  std::string disk = dir.File("disk.raw"), other = dir.File("other.raw"), repo = dir.File("repo");
  RunOk(S("generate --size 8M --seed 1 " + ShellQuote(disk)));
  RunOk(S("generate --size 4M --seed 1 " + ShellQuote(other)));
  auto norepo = RunCommand(S("backup --repo " + ShellQuote(repo) + " --full " + ShellQuote(disk)));
  EXPECT_EQ(norepo.exit_code, 1);
  EXPECT_NE(norepo.err.find("not a strata repository"), std::string::npos) << norepo.err;
  RunOk(S("init " + ShellQuote(repo)));
  EXPECT_EQ(RunCommand(S("init " + ShellQuote(repo))).exit_code, 1);  // already one
  auto noparent = RunCommand(S("backup --repo " + ShellQuote(repo) + " --scan " + ShellQuote(disk)));
  EXPECT_EQ(noparent.exit_code, 1);
  EXPECT_NE(noparent.err.find("--full"), std::string::npos) << noparent.err;
  RunOk(S("backup --repo " + ShellQuote(repo) + " --full " + ShellQuote(disk)));
  // Another disk is never compared with (or built on) this disk's backups.
  auto mismatch = RunCommand(S("backup --repo " + ShellQuote(repo) + " --scan " + ShellQuote(other)));
  EXPECT_EQ(mismatch.exit_code, 1);
  EXPECT_NE(mismatch.err.find("no backup of " + other), std::string::npos) << mismatch.err;
  EXPECT_NE(mismatch.err.find("--full"), std::string::npos) << mismatch.err;
  auto explicit_parent = RunCommand(S("backup --repo " + ShellQuote(repo) + " --scan --parent " + Ids(repo)[0] +
                                      " " + ShellQuote(other)));
  EXPECT_EQ(explicit_parent.exit_code, 1);
  EXPECT_NE(explicit_parent.err.find("is of disk " + disk), std::string::npos) << explicit_parent.err;
  EXPECT_EQ(Ids(repo).size(), 1u);
  EXPECT_EQ(RunCommand(S("backup --repo " + ShellQuote(repo) + " " + ShellQuote(disk))).exit_code, 2);
  EXPECT_EQ(RunCommand(S("backup --repo " + ShellQuote(repo) + " --full --scan " + ShellQuote(disk))).exit_code, 2);
  EXPECT_EQ(RunCommand(S("backup --repo " + ShellQuote(repo) + " --full --level 99 " + ShellQuote(disk))).exit_code, 2);
  EXPECT_EQ(RunCommand(S("restore --repo " + ShellQuote(repo) + " --backup zz " + dir.File("o"))).exit_code, 2);
  // Usage errors exit 2 (issue 11), before anything is opened.
  for (const char* bad : {"--full --granularity 3000", "--scan --parent zz", "--full --format vmdk",
                          "--scan --granularity 64K", "--full --lock-wait x", "--scan --quiesce /"}) {
    auto r = RunCommand(S("backup --repo " + ShellQuote(repo) + " " + bad + " " + ShellQuote(disk)));
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
  }
  for (const char* bad : {"--level 3", "--chunk-size 1M"}) {
    auto r = RunCommand(S("restore --repo " + ShellQuote(repo) + " " + bad + " " + ShellQuote(dir.File("o"))));
    EXPECT_EQ(r.exit_code, 2) << "restore " << bad << " does nothing: " << r.err;
  }
  EXPECT_EQ(RunCommand(S("merge --repo " + ShellQuote(repo) + " --remove latest --level 3")).exit_code, 2);

  EXPECT_EQ(RunCommand(S("nosuchcommand")).exit_code, 2);
  auto help = RunCommand(S("backup --help"));
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("--since-snapshot"), std::string::npos);
}

TEST(BackupCli, KillDuringBackupLeavesRepositoryIntact) {
  testing::TempDir dir;
  std::mt19937_64 rng(testing::TestSeed());
  std::string disk = dir.File("disk.raw"), repo = dir.File("repo");
  RunOk(S("generate --size 256M --fill 0.6 --seed 9 " + ShellQuote(disk)));
  RunOk(S("init " + ShellQuote(repo)));
  RunOk(S("backup --repo " + ShellQuote(repo) + " --full --level 3 " + ShellQuote(disk)));
  int killed = 0;
  for (int i = 0; i < 12; ++i) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      ::dup2(null, 2);
      std::string tool = testing::Tool("strata");
      ::execl(tool.c_str(), "strata", "backup", "--repo", repo.c_str(), "--full", "--level", "3",
              disk.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::usleep(static_cast<useconds_t>(rng() % 400000));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    // The repository holds the backups it held, or has gained one whole
    // backup (a killed backup may leave a pending record in the catalog,
    // which the next writer rolls back; on a fast machine the backup may
    // also have finished before the kill, and then it must be whole).
    if (WIFSIGNALED(status)) {
      ++killed;
    } else {
      ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "backup " << i << " failed on its own";
    }
    auto ids = Ids(repo);
    EXPECT_TRUE(ids.size() == 1 || ids.size() == 2) << ids.size();
    if (ids.size() == 2) RunOk(S("merge --repo " + ShellQuote(repo) + " --remove " + ids[1]));
    auto v = RunCommand(S("verify --repo " + ShellQuote(repo)));
    ASSERT_EQ(v.exit_code, 0) << "after kill " << i << ": " << v.err;
    EXPECT_EQ(Ids(repo).size(), 1u);
    // No partial archive is left once a writer has opened the repository
    // again (readers leave everything as it is).
    RunOk(S("merge --resume --repo " + ShellQuote(repo)));
    for (auto& e : std::filesystem::directory_iterator(repo + "/archives")) {
      EXPECT_EQ(e.path().string().find(".partial."), std::string::npos) << e.path();
    }
  }
  EXPECT_GT(killed, 0);
}

// Issue 11: kill -9 of `merge --remove` at random moments. The next writer
// finishes the journaled removal (never folding a child twice), and every
// other backup restores exactly as before.
TEST(BackupCli, KillDuringMergeIsFinishedByTheNextWriter) {
  testing::TempDir dir;
  std::mt19937_64 rng(testing::TestSeed());
  std::string disk = dir.File("disk.raw"), repo = dir.File("repo");
  std::string R = " --repo " + ShellQuote(repo) + " ";
  RunOk(S("generate --size 48M --fill 0.6 --seed 3 " + ShellQuote(disk)));
  RunOk(S("init " + ShellQuote(repo)));
  std::map<std::string, std::vector<uint8_t>> content;
  auto take = [&](const std::string& how) {
    Json j = BackupJson(R + how + " " + ShellQuote(disk));
    content[j["id"].get<std::string>()] = testing::ReadFileBytes(disk);
  };
  take("--full --level 3");
  int killed = 0, finished_by_next = 0;
  for (int round = 0; round < 6; ++round) {
    Scribble(disk, rng, 40);
    take("--scan --level 3");
    Scribble(disk, rng, 40);
    take("--scan --level 3");
    auto ids = Ids(repo);
    const std::string victim = ids[ids.size() - 2];  // a middle backup with a child
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      ::dup2(null, 2);
      std::string tool = testing::Tool("strata");
      ::execl(tool.c_str(), "strata", "merge", "--repo", repo.c_str(), "--remove", victim.c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::usleep(static_cast<useconds_t>(rng() % 150000));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (WIFSIGNALED(status)) ++killed;
    auto resume = RunCommand(S("merge --resume" + R));
    ASSERT_EQ(resume.exit_code, 0) << resume.err;
    if (resume.out.find("completed") != std::string::npos) ++finished_by_next;
    auto v = RunCommand(S("verify" + R));
    ASSERT_EQ(v.exit_code, 0) << "round " << round << ": " << v.err;
    // The victim is gone or still whole; every backup restores as it was.
    for (const std::string& id : Ids(repo)) {
      std::string out = dir.File("o.raw");
      std::filesystem::remove(out);
      RunOk(S("restore" + R + "--backup " + id + " " + ShellQuote(out)));
      ASSERT_TRUE(testing::ReadFileBytes(out) == content[id]) << "round " << round << ": backup " << id;
    }
    // Keep the repository small.
    if (Ids(repo).size() > 4) RunOk(S("merge" + R + "--remove " + Ids(repo)[1]));
  }
  EXPECT_GT(killed, 0);
  std::printf("merges killed: %d, finished by the next writer: %d\n", killed, finished_by_next);
}

// Issue 11: one flipped catalog byte makes the repository unusable though
// every archive is intact; `strata repair` rebuilds the catalog from the
// archives' headers (dry run first, then --apply), and adopts an archive the
// catalog lost.
TEST(BackupCli, RepairRebuildsTheCatalogFromTheArchives) {
  testing::TempDir dir;
  std::mt19937_64 rng(testing::TestSeed());
  std::string disk = dir.File("disk.raw"), repo = dir.File("repo"), trk = dir.File("trk");
  std::string R = " --repo " + ShellQuote(repo) + " ", T = " --tracker " + ShellQuote(trk) + " ";
  RunOk(S("generate --size 16M --fill 0.5 --seed 8 " + ShellQuote(disk)));
  RunOk(S("init " + ShellQuote(repo)));
  RunOk(S("tracker init" + T + "--size 16M"));
  std::map<std::string, std::vector<uint8_t>> content;
  Json full = BackupJson(R + "--full" + T + ShellQuote(disk));
  content[full["id"]] = testing::ReadFileBytes(disk);
  for (int i = 0; i < 3; ++i) {
    RunOk(S("scribble" + T + "--bytes 256K --seed " + std::to_string(i + 1) + " " + ShellQuote(disk)));
    Json inc = BackupJson(R + T + ShellQuote(disk));
    content[inc["id"]] = testing::ReadFileBytes(disk);
  }
  auto clean = RunCommand(S("repair" + R));
  EXPECT_EQ(clean.exit_code, 0) << clean.out << clean.err;
  EXPECT_NE(clean.out.find("agree: 4 backups"), std::string::npos) << clean.out;
  // A flipped byte: nothing works, nothing is changed.
  std::string catalog = repo + "/catalog";
  auto cat = testing::ReadFileBytes(catalog);
  cat[cat.size() / 2] ^= 0x20;
  testing::WriteFileBytes(catalog, cat);
  EXPECT_EQ(RunCommand(S("list" + R)).exit_code, 1);
  auto dry = RunCommand(S("repair --json" + R));
  EXPECT_EQ(dry.exit_code, 1) << dry.err;
  Json plan = ParseJson(dry.out);
  EXPECT_FALSE(plan["catalog_ok"].get<bool>());
  EXPECT_EQ(plan["added"].size(), 4u) << plan;
  EXPECT_FALSE(plan["applied"].get<bool>());
  EXPECT_TRUE(testing::ReadFileBytes(catalog) == cat);  // a dry run changes nothing
  RunOk(S("repair --apply" + R));
  RunOk(S("verify" + R));
  for (const auto& [id, bytes] : content) {
    std::string out = dir.File("o.raw");
    std::filesystem::remove(out);
    RunOk(S("restore" + R + "--backup " + id + " " + ShellQuote(out)));
    EXPECT_TRUE(testing::ReadFileBytes(out) == bytes) << id;
  }
  // The chain continues from where it ended.
  RunOk(S("scribble" + T + "--bytes 256K --seed 9 " + ShellQuote(disk)));
  Json next = BackupJson(R + T + ShellQuote(disk));
  EXPECT_FALSE(next["parent"].is_null());
  // An archive the catalog does not name: verify reports it, repair adopts it.
  auto ids = Ids(repo);
  std::string keep = repo + "/catalog.keep";
  std::filesystem::copy_file(catalog, keep);
  RunOk(S("scribble" + T + "--bytes 256K --seed 10 " + ShellQuote(disk)));
  Json lost = BackupJson(R + T + ShellQuote(disk));
  std::filesystem::copy_file(keep, catalog, std::filesystem::copy_options::overwrite_existing);
  auto v = RunCommand(S("verify" + R));
  EXPECT_EQ(v.exit_code, 1);
  EXPECT_NE(v.err.find("no catalog entry names"), std::string::npos) << v.err;
  RunOk(S("repair --apply" + R));
  EXPECT_EQ(Ids(repo).size(), ids.size() + 1);
  RunOk(S("verify" + R));
  (void)rng;
}

// Found by bench/hostile_campaign.py (kill -9 of 'repair --apply'): the
// temporaries of its atomic catalog writes (catalog.tmp.*, and
// catalog.replaced-<time>.tmp.* of the copy of the old catalog it keeps)
// stayed for good: the rerun of repair did not remove them and no writer knew
// the second name. Repair (with --apply) and every writer remove both.
TEST(BackupCli, TemporariesOfKilledCatalogWritesAreRemoved) {
  testing::TempDir dir;
  std::string disk = dir.File("disk.raw"), repo = dir.File("repo");
  std::string R = " --repo " + ShellQuote(repo) + " ";
  RunOk(S("generate --size 4M --fill 0.5 --seed 4 " + ShellQuote(disk)));
  RunOk(S("init " + ShellQuote(repo)));
  RunOk(S("backup --full" + R + ShellQuote(disk)));
  const std::vector<std::string> temporaries = {"catalog.tmp.0123456789ab",
                                                "catalog.replaced-1795967393.tmp.bb17e0d48c24"};
  const std::vector<std::string> kept = {"catalog.replaced-1795967393", "catalog.notes",
                                         "catalog.replaced-x.tmp.0123456789ab"};
  auto plant = [&](const std::vector<std::string>& names) {
    for (const std::string& n : names) testing::WriteFileBytes(repo + "/" + n, {'x', '\n'});
  };
  auto exists = [&](const std::string& n) { return std::filesystem::exists(repo + "/" + n); };
  // A damaged catalog: the dry run lists the temporaries, --apply removes them.
  plant(temporaries);
  plant(kept);
  std::string catalog = repo + "/catalog";
  auto cat = testing::ReadFileBytes(catalog);
  cat[cat.size() / 2] ^= 0x20;
  testing::WriteFileBytes(catalog, cat);
  auto dry = RunCommand(S("repair --json" + R));
  EXPECT_EQ(dry.exit_code, 1) << dry.err;
  std::string removed = ParseJson(dry.out)["removed"].dump();
  for (const std::string& n : temporaries) {
    EXPECT_NE(removed.find(n), std::string::npos) << removed;
    EXPECT_TRUE(exists(n)) << "a dry run removed " << n;
  }
  RunOk(S("repair --apply" + R));
  for (const std::string& n : temporaries) EXPECT_FALSE(exists(n)) << n << " left after repair --apply";
  for (const std::string& n : kept) EXPECT_TRUE(exists(n)) << n << " is not a temporary";
  RunOk(S("verify" + R));
  // An intact catalog: the next writer removes them.
  plant(temporaries);
  RunOk(S("backup --scan" + R + ShellQuote(disk)));
  for (const std::string& n : temporaries) EXPECT_FALSE(exists(n)) << n << " left after a backup";
  for (const std::string& n : kept) EXPECT_TRUE(exists(n)) << n << " is not a temporary";
}

// Issue 11: restore outputs are private, never reached through a link, and
// a failed restore leaves nothing that looks like a restored disk.
TEST(BackupCli, RestoreOutputIsSafe) {
  testing::TempDir dir;
  std::string disk = dir.File("disk.raw"), repo = dir.File("repo");
  std::string R = " --repo " + ShellQuote(repo) + " ";
  RunOk(S("generate --size 8M --fill 0.5 --seed 6 " + ShellQuote(disk)));
  RunOk(S("init " + ShellQuote(repo)));
  Json full = BackupJson(R + "--full " + ShellQuote(disk));
  std::string out = dir.File("out.raw");
  RunOk(S("restore" + R + ShellQuote(out)));
  struct stat st;
  ASSERT_EQ(::stat(out.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat((repo + "/catalog").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat((repo + "/archives").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  // A symbolic link is refused even with --force; its target is untouched.
  std::string target = dir.File("target"), link = dir.File("link.raw");
  testing::WriteFileBytes(target, {1, 2, 3});
  std::filesystem::create_symlink(target, link);
  auto l = RunCommand(S("restore --force" + R + ShellQuote(link)));
  EXPECT_EQ(l.exit_code, 1) << l.err;
  EXPECT_NE(l.err.find("symbolic link"), std::string::npos) << l.err;
  EXPECT_EQ(testing::ReadFileBytes(target), (std::vector<uint8_t>{1, 2, 3}));
  // A restore that fails (a damaged archive) removes the file it created.
  std::string archive = repo + "/archives/" + full["id"].get<std::string>() + ".sar";
  auto bytes = testing::ReadFileBytes(archive);
  auto bad = bytes;
  bad[bad.size() / 2] ^= 1;  // inside a frame: found while restoring
  testing::WriteFileBytes(archive, bad);
  std::string failed = dir.File("failed.raw");
  auto f = RunCommand(S("restore" + R + ShellQuote(failed)));
  EXPECT_EQ(f.exit_code, 1);
  EXPECT_FALSE(std::filesystem::exists(failed)) << "a failed restore left its output";
  testing::WriteFileBytes(archive, bytes);
}

// Issue 11 (hostile campaign): names and paths are bytes, JSON strings are
// UTF-8. Every --json output stays valid JSON when a disk's name is not UTF-8
// (the default name is the image's path), and the name still selects the
// disk. Before, nlohmann's dump threw and the process aborted after the
// backup was committed, and JsonString printed the raw bytes.
TEST(BackupCli, JsonOutputOfNamesThatAreNotUtf8) {
  testing::TempDir dir;
  std::string disk = dir.File("disk\xff\xfe.raw"), repo = dir.File("repo\xff");
  std::string R = " --repo " + ShellQuote(repo) + " ";
  auto strict = [](const std::string& what, const std::string& text) {
    Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
    EXPECT_FALSE(j.is_discarded()) << what << " printed invalid JSON: " << text;
    return j;
  };
  RunOk(S("generate --size 4M --fill 0.5 --seed 3 " + ShellQuote(disk)));
  auto init = RunCommand(S("init --json " + ShellQuote(repo)));
  ASSERT_EQ(init.exit_code, 0) << init.err;
  strict("init", init.out);
  const std::string kReplacement = "\xef\xbf\xbd";
  const std::string named = "vm\xc3\x28\nname";  // an invalid sequence and a newline
  std::vector<std::string> ids;
  for (const std::string& name : {std::string(), named}) {
    std::string D = name.empty() ? "" : "--disk " + ShellQuote(name) + " ";
    auto b = RunCommand(S("backup --json --full" + R + D + ShellQuote(disk)));
    ASSERT_EQ(b.exit_code, 0) << b.err;
    Json j = strict("backup", b.out);
    std::string shown = j["disk"]["name"].get<std::string>();
    EXPECT_NE(shown.find(kReplacement), std::string::npos) << shown;
    ids.push_back(j["id"].get<std::string>());
  }
  auto list = RunCommand(S("list --json" + R));
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_EQ(strict("list", list.out).size(), 2u);
  for (const std::string& id : ids) {
    auto info = RunCommand(S("info --json" + R + "--backup " + id));
    EXPECT_EQ(info.exit_code, 0) << info.err;
    strict("info", info.out);
  }
  // The raw name selects the disk; the output's name is not UTF-8 either.
  std::string out = dir.File("out\xfe.raw");
  auto restore = RunCommand(S("restore --json" + R + "--disk " + ShellQuote(named) + " " + ShellQuote(out)));
  ASSERT_EQ(restore.exit_code, 0) << restore.err;
  EXPECT_EQ(strict("restore", restore.out)["id"], ids[1]);
  EXPECT_TRUE(testing::ReadFileBytes(out) == testing::ReadFileBytes(disk));
}

// Issue 11: readers share the repository; a writer waits for them (or fails
// at once without --lock-wait).
TEST(BackupCli, ReadersShareWritersWait) {
  testing::TempDir dir;
  std::string disk = dir.File("disk.raw"), repo = dir.File("repo");
  std::string R = " --repo " + ShellQuote(repo) + " ";
  RunOk(S("generate --size 64M --fill 0.9 --seed 6 " + ShellQuote(disk)));
  RunOk(S("init " + ShellQuote(repo)));
  BackupJson(R + "--full --level 9 " + ShellQuote(disk));
  // A slow reader (verify) holds the shared lock.
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::dup2(null, 2);
    std::string tool = testing::Tool("strata");
    ::execl(tool.c_str(), "strata", "verify", "--repo", repo.c_str(), "--against", disk.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::usleep(100000);
  auto list = RunCommand(S("list" + R));  // another reader: fine
  EXPECT_EQ(list.exit_code, 0) << list.err;
  auto busy = RunCommand(S("backup" + R + "--scan " + ShellQuote(disk)));
  int status = 0;
  if (::waitpid(pid, &status, WNOHANG) == 0) {  // the reader was still running
    EXPECT_EQ(busy.exit_code, 1);
    EXPECT_NE(busy.err.find("in use"), std::string::npos) << busy.err;
    EXPECT_NE(busy.err.find("--lock-wait"), std::string::npos) << busy.err;
  }
  auto waited = RunCommand(S("backup --lock-wait 60" + R + "--scan " + ShellQuote(disk)));
  EXPECT_EQ(waited.exit_code, 0) << waited.err;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(BackupCli, DemoRunsTheWholeJob) {
  auto r = RunCommand(S("demo --size 64M"));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("all points restored byte-identically"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("MISMATCH"), std::string::npos) << r.out;
}

TEST(BackupCli, TrackerSource) {
  testing::TempDir dir;
  std::string disk = dir.File("disk.raw"), repo = dir.File("repo"), trk = dir.File("trk");
  std::string R = " --repo " + ShellQuote(repo) + " ", T = " --tracker " + ShellQuote(trk) + " ";
  RunOk(S("generate --size 64M --fill 0.3 --seed 4 " + ShellQuote(disk)));
  RunOk(S("init " + ShellQuote(repo)));
  RunOk(S("tracker init" + T + "--size 64M"));
  // A full backup that ends at a new checkpoint of the tracker.
  Json full = BackupJson(R + "--full" + T + ShellQuote(disk));
  ASSERT_TRUE(full["end"].is_object()) << full;
  EXPECT_EQ(full["end"]["kind"], "tracker");
  auto base_image = testing::ReadFileBytes(disk);
  RunOk(S("scribble" + T + "--fraction 0.05 --seed 3 " + ShellQuote(disk)));
  // One step: a new checkpoint, and exactly what changed since the full's.
  Json inc = BackupJson(R + T + ShellQuote(disk));
  // 5% of the 1024 blocks of 64 KiB were rewritten: exactly those are read.
  EXPECT_EQ(inc["changed_bytes"], 51 * 65536) << inc;
  EXPECT_EQ(inc["parent"], full["id"]);
  EXPECT_EQ(inc["start"], full["end"]);
  std::string out = dir.File("out.raw");
  RunOk(S("restore" + R + ShellQuote(out)));
  EXPECT_TRUE(testing::ReadFileBytes(out) == testing::ReadFileBytes(disk));
  std::string first = dir.File("first.raw");
  RunOk(S("restore" + R + "--backup " + Ids(repo)[0] + " " + ShellQuote(first)));
  EXPECT_TRUE(testing::ReadFileBytes(first) == base_image);
  // --since names the start checkpoint; it must be where some backup ends.
  RunOk(S("scribble" + T + "--fraction 0.01 --seed 5 " + ShellQuote(disk)));
  Json since = BackupJson(R + T + "--since " + inc["end"]["name"].get<std::string>() + " " + ShellQuote(disk));
  EXPECT_EQ(since["parent"], inc["id"]);
  RunOk(S("checkpoint" + T + "manual"));
  auto stray = RunCommand(S("backup" + R + T + "--since manual " + ShellQuote(disk)));
  EXPECT_EQ(stray.exit_code, 1);
  EXPECT_NE(stray.err.find("no backup of " + disk + " ends at checkpoint 'manual'"), std::string::npos) << stray.err;
  EXPECT_NE(stray.err.find("--scan"), std::string::npos) << stray.err;
  // A tracker of another disk size is refused.
  std::string other = dir.File("other");
  RunOk(S("tracker init --tracker " + ShellQuote(other) + " --size 32M"));
  auto bad = RunCommand(S("backup" + R + "--tracker " + ShellQuote(other) + " " + ShellQuote(disk)));
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_EQ(Ids(repo).size(), 3u);
}

TEST(BackupCli, Qcow2BitmapAndSnapshotSources) {
  if (!testing::HaveCommand("qemu-img") || !testing::HaveCommand("qemu-io")) {
    GTEST_SKIP() << "qemu-utils not installed";
  }
  testing::TempDir dir;
  std::string img = dir.File("vm.qcow2"), repo = dir.File("repo"), q = ShellQuote(img);
  std::string R = " --repo " + ShellQuote(repo) + " ";
  RunOk("qemu-img create -q -f qcow2 " + q + " 64M");
  RunOk("qemu-io -c 'write -P 0x11 0 8M' -c 'write -P 0x12 40M 3M' " + q + " >/dev/null");
  RunOk(S("init " + ShellQuote(repo)));
  Json full = BackupJson(R + "--full --bitmap nightly " + q);
  EXPECT_EQ(full["end"]["kind"], "qcow2-bitmap") << full;
  auto check = [&](const std::string& what) {
    std::string out = dir.File("out.raw");
    std::filesystem::remove(out);
    RunOk(S("restore" + R + ShellQuote(out)));
    auto r = RunCommand("qemu-img compare -q -f raw -F qcow2 " + ShellQuote(out) + " " + q);
    EXPECT_EQ(r.exit_code, 0) << what << ": restored view differs from the qcow2 image " << r.out;
  };
  check("full");
  RunOk("qemu-io -c 'write -P 0x22 4M 1M' -c 'write -z 40M 512k' -c 'write -P 0x23 60M 64k' " + q +
        " >/dev/null");
  Json b1 = BackupJson(R + "--bitmap nightly " + q);
  EXPECT_EQ(b1["changed_bytes"], (1 << 20) + (512 << 10) + 65536) << b1;
  EXPECT_EQ(b1["start"], full["end"]);
  check("bitmap 1");
  // The bitmap advances: the second backup stores only what was written
  // after the first, and the first's bitmap is gone from the image.
  RunOk("qemu-io -c 'write -P 0x24 20M 128k' " + q + " >/dev/null");
  Json b2 = BackupJson(R + "--bitmap nightly " + q);
  EXPECT_EQ(b2["changed_bytes"], 128 << 10) << b2;
  EXPECT_EQ(b2["parent"], b1["id"]);
  check("bitmap 2");
  std::string info = RunOk("qemu-img info --output=json " + q);
  EXPECT_EQ(info.find(b1["end"]["name"].get<std::string>()), std::string::npos) << info;
  EXPECT_NE(info.find(b2["end"]["name"].get<std::string>()), std::string::npos) << info;
  // Internal snapshots: a full backup of snapshot s1, then what changed since.
  RunOk("qemu-img snapshot -c s1 " + q);
  Json s1 = BackupJson(R + "--full --snapshot s1 --disk vm-s " + q);
  EXPECT_EQ(s1["end"]["kind"], "qcow2-snapshot") << s1;
  RunOk("qemu-io -c 'write -P 0x33 10M 2M' -c 'discard 0 64k' " + q + " >/dev/null");
  Json sn = BackupJson(R + "--since-snapshot s1 --disk vm-s " + q);
  EXPECT_EQ(sn["parent"], s1["id"]);
  {
    std::string out = dir.File("snap.raw");
    RunOk(S("restore" + R + "--backup " + sn["id"].get<std::string>() + " " + ShellQuote(out)));
    EXPECT_EQ(RunCommand("qemu-img compare -q -f raw -F qcow2 " + ShellQuote(out) + " " + q).exit_code, 0);
  }
  // Nothing ends at s1 for the other disk name: refused, with advice.
  auto nos = RunCommand(S("backup" + R + "--since-snapshot s1 " + q));
  EXPECT_EQ(nos.exit_code, 1);
  EXPECT_NE(nos.err.find("internal snapshot 's1'"), std::string::npos) << nos.err;
  RunOk(S("verify" + R));
  // A bitmap left in use by a killed writer cannot prove what changed.
  RunOk("qemu-io -c 'write -P 0x44 0 64k' -c 'sigraise 9' " + q + " >/dev/null 2>&1 || true");
  auto inuse = RunCommand(S("backup" + R + "--bitmap nightly " + q));
  EXPECT_EQ(inuse.exit_code, 1) << inuse.out;
  EXPECT_NE(inuse.err.find("in use"), std::string::npos) << inuse.err;
  EXPECT_NE(inuse.err.find("--scan --bitmap nightly"), std::string::npos) << inuse.err;
  // ... and --scan re-establishes the series.
  BackupJson(R + "--scan --bitmap nightly " + q);
  check("scan after in_use");
}

// Issue 10, scenario 1: a synthetic full appended after an incremental is
// not the parent of the next tracker incremental (its content is older), and
// an incremental that starts at a checkpoint no backup ends at is refused.
TEST(ChainScenario, SyntheticFullNeverBecomesTheParent) {
  testing::TempDir dir;
  std::string disk = dir.File("disk.raw"), repo = dir.File("repo"), trk = dir.File("trk");
  std::string R = " --repo " + ShellQuote(repo) + " ", T = " --tracker " + ShellQuote(trk) + " ";
  std::string D = " " + ShellQuote(disk);
  RunOk(S("generate --size 16M --fill 0.4 --seed 11" + D));
  RunOk(S("init " + ShellQuote(repo)));
  RunOk(S("tracker init" + T + "--size 16M"));
  // As the issue tried it: checkpoint c0, a full backup that records no point.
  RunOk(S("checkpoint" + T + "c0"));
  Json full0 = BackupJson(R + "--full" + D);
  RunOk(S("scribble" + T + "--bytes 1M --seed 1" + D));  // write A, marked
  RunOk(S("checkpoint" + T + "c1"));
  auto refused = RunCommand(S("backup" + R + T + "--since c0" + D));
  EXPECT_EQ(refused.exit_code, 1) << refused.out;
  EXPECT_NE(refused.err.find("ends at checkpoint 'c0'"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("--scan"), std::string::npos) << refused.err;
  EXPECT_EQ(Ids(repo).size(), 1u);
  // The same history with backups that record their end points.
  Json full = BackupJson(R + "--full" + T + D);
  RunOk(S("scribble" + T + "--bytes 1M --seed 2" + D));  // write A
  Json inc1 = BackupJson(R + T + "--since " + full["end"]["name"].get<std::string>() + D);
  auto after_a = testing::ReadFileBytes(disk);
  Json synth = ParseJson(RunOk(S("merge --json" + R + "--synthetic-full " + full["id"].get<std::string>())));
  RunOk(S("scribble" + T + "--bytes 1M --seed 3" + D));  // write B
  Json inc2 = BackupJson(R + T + D);
  EXPECT_EQ(inc2["parent"], inc1["id"]) << "the synthetic full " << synth << " must not be the parent";
  RunOk(S("verify" + R));
  std::string out = dir.File("out.raw");
  RunOk(S("restore" + R + "--backup latest " + ShellQuote(out)));
  EXPECT_TRUE(testing::ReadFileBytes(out) == testing::ReadFileBytes(disk)) << "latest lacks a write";
  std::string mid = dir.File("mid.raw");
  RunOk(S("restore" + R + "--backup " + inc1["id"].get<std::string>() + " " + ShellQuote(mid)));
  EXPECT_TRUE(testing::ReadFileBytes(mid) == after_a);
  // Removing the full keeps every other backup's content.
  RunOk(S("merge" + R + "--remove " + full["id"].get<std::string>()));
  std::filesystem::remove(out);
  RunOk(S("restore" + R + "--backup " + inc2["id"].get<std::string>() + " " + ShellQuote(out)));
  EXPECT_TRUE(testing::ReadFileBytes(out) == testing::ReadFileBytes(disk));
  RunOk(S("verify" + R));
  (void)full0;
}

// Issue 10, scenario 2: two disks in one repository never share a chain.
TEST(ChainScenario, TwoDisksNeverShareAChain) {
  testing::TempDir dir;
  std::string d1 = dir.File("d1.raw"), d2 = dir.File("d2.raw"), repo = dir.File("repo");
  std::string t1 = dir.File("t1"), t2 = dir.File("t2");
  std::string R = " --repo " + ShellQuote(repo) + " ";
  RunOk(S("generate --size 8M --fill 0.5 --seed 1 " + ShellQuote(d1)));
  RunOk(S("generate --size 8M --fill 0.5 --seed 2 " + ShellQuote(d2)));
  RunOk(S("init " + ShellQuote(repo)));
  RunOk(S("tracker init --tracker " + ShellQuote(t1) + " --size 8M"));
  RunOk(S("tracker init --tracker " + ShellQuote(t2) + " --size 8M"));
  // As the issue tried it: fulls without points, d2's last, then --since c0.
  RunOk(S("checkpoint --tracker " + ShellQuote(t1) + " c0"));
  BackupJson(R + "--full " + ShellQuote(d1));
  Json d2full0 = BackupJson(R + "--full " + ShellQuote(d2));
  RunOk(S("scribble --tracker " + ShellQuote(t1) + " --bytes 512K --seed 4 " + ShellQuote(d1)));
  auto r = RunCommand(S("backup" + R + "--tracker " + ShellQuote(t1) + " --since c0 " + ShellQuote(d1)));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no backup of " + d1), std::string::npos) << r.err;
  // With end points: each disk's incrementals build on its own backups.
  Json f1 = BackupJson(R + "--full --tracker " + ShellQuote(t1) + " " + ShellQuote(d1));
  Json f2 = BackupJson(R + "--full --tracker " + ShellQuote(t2) + " " + ShellQuote(d2));
  EXPECT_NE(f1["disk"]["id"], f2["disk"]["id"]);
  RunOk(S("scribble --tracker " + ShellQuote(t1) + " --bytes 512K --seed 5 " + ShellQuote(d1)));
  Json i1 = BackupJson(R + "--tracker " + ShellQuote(t1) + " " + ShellQuote(d1));
  EXPECT_EQ(i1["parent"], f1["id"]);
  std::string out = dir.File("out.raw");
  RunOk(S("restore" + R + "--backup " + i1["id"].get<std::string>() + " " + ShellQuote(out)));
  EXPECT_TRUE(testing::ReadFileBytes(out) == testing::ReadFileBytes(d1));
  // The wrong tracker, or another disk's backup as parent: refused.
  auto wrong = RunCommand(S("backup" + R + "--tracker " + ShellQuote(t1) + " " + ShellQuote(d2)));
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_NE(wrong.err.find("no backup of " + d2), std::string::npos) << wrong.err;
  auto cross = RunCommand(S("backup" + R + "--scan --parent " + f2["id"].get<std::string>() + " " + ShellQuote(d1)));
  EXPECT_EQ(cross.exit_code, 1);
  // "latest" of a disk is that disk's newest backup.
  std::filesystem::remove(out);
  RunOk(S("restore" + R + "--disk " + ShellQuote(d2) + " " + ShellQuote(out)));
  EXPECT_TRUE(testing::ReadFileBytes(out) == testing::ReadFileBytes(d2));
  (void)d2full0;
}

// A re-created tracker that reuses checkpoint names is another tracker.
TEST(ChainScenario, ReinitialisedTrackerIsRefused) {
  testing::TempDir dir;
  std::string disk = dir.File("disk.raw"), repo = dir.File("repo"), trk = dir.File("trk");
  std::string R = " --repo " + ShellQuote(repo) + " ", T = " --tracker " + ShellQuote(trk) + " ";
  RunOk(S("generate --size 8M --fill 0.5 --seed 1 " + ShellQuote(disk)));
  RunOk(S("init " + ShellQuote(repo)));
  RunOk(S("tracker init" + T + "--size 8M"));
  BackupJson(R + "--full" + T + "--checkpoint mon " + ShellQuote(disk));
  std::filesystem::remove_all(trk);
  RunOk(S("tracker init" + T + "--size 8M"));
  RunOk(S("checkpoint" + T + "mon"));
  RunOk(S("scribble" + T + "--bytes 256K --seed 2 " + ShellQuote(disk)));
  auto r = RunCommand(S("backup" + R + T + "--since mon " + ShellQuote(disk)));
  EXPECT_EQ(r.exit_code, 1);
  auto r2 = RunCommand(S("backup" + R + T + ShellQuote(disk)));
  EXPECT_EQ(r2.exit_code, 1);
  EXPECT_NE(r2.err.find("--scan"), std::string::npos) << r2.err;
  // --scan with the new tracker re-establishes the chain.
  BackupJson(R + "--scan" + T + ShellQuote(disk));
  RunOk(S("scribble" + T + "--bytes 256K --seed 3 " + ShellQuote(disk)));
  Json inc = BackupJson(R + T + ShellQuote(disk));
  std::string out = dir.File("out.raw");
  RunOk(S("restore" + R + ShellQuote(out)));
  EXPECT_TRUE(testing::ReadFileBytes(out) == testing::ReadFileBytes(disk));
}

}  // namespace
}  // namespace strata
